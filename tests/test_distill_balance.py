"""Training features: source balancing, knowledge distillation, native-pixel multi-crop scoring."""
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import FAST, TINY_ARCH, make_image_folder
from PIL import Image

from modeling import build_detector, save_detector
from modeling.formats import TrainingRecord, read_training_record, write_training_record
from train import run
from train.data import EpochSampler, source_balance_weights
from train.distill import Teacher, distillation_loss


def test_source_balance_flattens_sources_within_each_class():
    sources = ["big"] * 90 + ["small"] * 10 + ["reals"] * 50
    labels = [1] * 100 + [0] * 50
    natural = source_balance_weights(sources, labels, 0.0)
    assert natural == pytest.approx(np.full(150, 1 / 150))
    flat = source_balance_weights(sources, labels, 1.0)
    share = {s: flat[np.asarray(sources) == s].sum() for s in ("big", "small", "reals")}
    assert share["big"] == pytest.approx(share["small"]) == pytest.approx(1 / 3)  # fakes: 2/3 of the data
    assert share["reals"] == pytest.approx(1 / 3)  # the class keeps its share
    sqrt = source_balance_weights(sources, labels, 0.5)
    assert sqrt[:90].sum() / sqrt[90:100].sum() == pytest.approx(3.0)  # sqrt(90) / sqrt(10)


def test_epoch_sampler_draws_by_weights_and_repeats_per_epoch():
    weights = source_balance_weights(["a"] * 900 + ["b"] * 100, [1] * 1000, 1.0)
    sampler = EpochSampler(range(1000), new_weights=weights, seed=3)
    keys = sampler.epoch_keys(0)
    assert len(keys) == len(sampler) == 1000
    drawn_b = sum(row >= 900 for row, _ in keys)
    assert 400 < drawn_b < 600  # half of the draws, although b is a tenth of the rows
    assert keys == sampler.epoch_keys(0) and keys != sampler.epoch_keys(1)


def test_distillation_loss_is_zero_when_student_matches_teacher():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    assert distillation_loss(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_loss(logits, logits.flip(1), 2.0).item() > 0.1
    assert distillation_loss(logits[:0], logits[:0], 2.0).item() == 0.0


def test_teacher_of_another_architecture_size_and_label_order_scores_student_batches(tmp_path):
    student = build_detector(TINY_ARCH, pretrained=False, image_size=32)
    teacher_model = build_detector("resnet10t", pretrained=False, image_size=48)
    teacher_model.config.pretrained_cfg.update(mean=[0.5] * 3, std=[0.5] * 3)
    # the teacher lists its classes the other way round: fake first
    teacher_model.config.id2label, teacher_model.config.label2id = {0: "fake", 1: "real"}, {"fake": 0, "real": 1}
    save_detector(teacher_model, tmp_path / "teacher")
    teacher = Teacher.load(str(tmp_path / "teacher"), student.config, resize=True)

    pixels = torch.rand(2, 3, 32, 32)  # in [0, 1]
    mean, std = (torch.tensor(student.config.pretrained_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    logits = teacher((pixels - mean) / std)
    direct = teacher.model(pixel_values=torch.nn.functional.interpolate(
        (pixels - 0.5) / 0.5, size=(48, 48), mode="bicubic", align_corners=False)).logits
    assert torch.allclose(logits, direct.flip(1), atol=1e-5)  # the student's order: real, fake
    assert not any(p.requires_grad for p in teacher.parameters())


def test_run_with_teacher_and_source_balance(tmp_path, tiny_detector_dir):
    data = make_image_folder(tmp_path / "data", n_per_class=8)
    out = tmp_path / "out"
    trainer = run.main([
        "--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "32",
        "--train_dirs", str(data), "--validation_dirs", str(data), "--output_dir", str(out),
        "--per_device_train_batch_size", "8", "--max_steps", "2", "--source_balance", "0.5",
        "--teacher_model", str(tiny_detector_dir), "--distill_alpha", "0.7", "--distill_temperature", "3", *FAST])
    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(np.isfinite(losses))
    record = read_training_record(out)
    assert record.training_args["teacher_model"] == str(tiny_detector_dir)
    assert record.data["source_balance"] == 0.5


def test_native_crops_cover_the_image_without_resizing():
    from train.evaluation.predict import NativeCrops

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 64, 3), dtype=np.uint8))
    crops = NativeCrops(size=32, grid=3, mean=[0.0] * 3, std=[1.0] * 3)(img)
    assert crops.shape == (9, 3, 32, 32)
    pixels = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    assert torch.allclose(crops[0], pixels[:, :32, :32], atol=1e-6)  # top-left: native pixels, untouched
    assert torch.allclose(crops[-1], pixels[:, 8:, 32:], atol=1e-6)  # bottom-right
    small = NativeCrops(size=32, grid=2, mean=[0.0] * 3, std=[1.0] * 3)(img.resize((20, 16)))
    assert small.shape == (4, 3, 32, 32)  # enlarged to the crop first


def test_evaluate_native_crops_average_the_crop_logits(tmp_path, tiny_detector_dir):
    from modeling import load_detector
    from train.evaluation.predict import NativeCrops, predict_logits
    from train.evaluation.run import main as evaluate

    data = make_image_folder(tmp_path / "data", n_per_class=3, size=(64, 48))
    results = evaluate(["--model", str(tiny_detector_dir), "--data_dir", str(data), "--output_dir",
                             str(tmp_path / "eval"), "--native_crop_size", "32", "--native_grid", "2",
                             "--num_workers", "0"])
    assert results["data"]["n"] == 6 and results["args"]["native_crop_size"] == 32
    model = load_detector(tiny_detector_dir).eval()
    files = sorted((data / "fake").glob("*.jpg"))[:1]
    cfg = model.config.pretrained_cfg
    crops = NativeCrops(32, 2, cfg["mean"], cfg["std"])(Image.open(files[0]).convert("RGB"))
    expected = model(pixel_values=crops).logits.mean(0)
    got = predict_logits(model, [str(files[0])], NativeCrops(32, 2, cfg["mean"], cfg["std"]))
    assert np.allclose(got[0], expected.detach().numpy(), atol=1e-5)
    assert Counter(results["data"]["generators"]) == Counter({"none": 3, "unknown": 3})
    assert set(results["by_family"]) == {"none", "unknown"} and set(results["by_family_vs_real"]) == {"unknown"}
    assert results["by_family_vs_real"]["unknown"]["n"] == 6


def test_generator_families_and_what_training_saw():
    from modeling.families import family_of, seen_in_training

    assert family_of("SD3") == family_of("Stable Diffusion 3 Medium") == "Stable Diffusion 3"
    assert family_of("SD1.5 DreamShaper 3.2") == family_of("SDXL-Turbo") == "Stable Diffusion 1/2/XL"
    assert family_of("DALL-E 3") == "DALL-E 3" and family_of("DALL-E Mini (min-dalle)") == "other text-to-image"
    assert family_of("VQGAN+CLIP (README samples)") == "other text-to-image"
    assert family_of("StyleGAN2 (FFHQ)") == family_of("GAN (StyleGAN-type, unstated)") == "GAN"
    assert family_of("Hunyuan-DiT v1.2") == "other text-to-image" and family_of("DiT-XL/2 (ImageNet)") != "GAN"
    assert family_of("none") == "none" and family_of("some new model") == "some new model"
    training = ["StyleGAN2 (FFHQ)", "SD1.5 DreamShaper 3.2"]
    assert seen_in_training("StyleGAN2 (FFHQ)", training) == "generator seen"
    assert seen_in_training("GAN (StyleGAN-type, unstated)", training) == "family seen"
    assert seen_in_training("SD3", training) == "never seen"


def test_convert_weights_maps_by_position_and_refuses_a_misfit(tmp_path):
    import timm
    from safetensors.torch import load_file

    from train import convert_weights

    source = timm.create_model("resnet10t", pretrained=False)
    renamed = {f"net.{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(source.state_dict().items())}
    torch.save(renamed, tmp_path / "other_names.pth")
    out = convert_weights.main(["--architecture", "resnet10t", "--checkpoint", str(tmp_path / "other_names.pth"),
                                "--output", str(tmp_path / "w.safetensors")])
    weights = load_file(out)
    assert torch.equal(weights["fc.weight"], source.state_dict()["fc.weight"])
    model = build_detector("resnet10t", pretrained=str(out), image_size=32)  # the file a training run takes
    assert torch.equal(model.timm_model.conv1[0].weight, source.conv1[0].weight)
    with pytest.raises(ValueError, match="tensors|does not fit"):
        convert_weights.main(["--architecture", "convnextv2_atto", "--checkpoint", str(tmp_path / "other_names.pth"),
                              "--output", str(tmp_path / "bad.safetensors")])


def test_threshold_for_balanced_accuracy_takes_the_best_cut():
    from train.evaluation.calibration import choose_threshold, threshold_for_balanced_accuracy
    from train.evaluation.metrics import detection_metrics

    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.8, 0.9])
    t = threshold_for_balanced_accuracy(labels, probs)
    assert t == pytest.approx((0.4 + 0.3) / 2)  # calls 0.4 and up fake: TPR 1, FPR 0.25 (J 0.75), best here
    best = max(detection_metrics(labels, probs, c)["balanced_accuracy"] for c in np.linspace(0, 1, 101))
    assert detection_metrics(labels, probs, t)["balanced_accuracy"] == pytest.approx(best)
    assert choose_threshold(labels, probs, "fpr", 0.0) == pytest.approx((0.6 + 0.8) / 2)
    with pytest.raises(ValueError, match="policy"):
        choose_threshold(labels, probs, "median")


def test_evaluation_and_card_say_which_generators_training_never_saw(tmp_path, tiny_detector_dir):
    import shutil

    from hub.card import EvalSet, generator_table, headline
    from train.evaluation.run import main as evaluate

    data = make_image_folder(tmp_path / "data", n_per_class=4)
    rows = ["file_name,label,source,generator"]
    rows += [f"real/r{i}.jpg,real,photos,none" for i in range(4)]
    rows += [f"fake/f{i}.jpg,fake,gallery,{'StyleGAN3 (FFHQ)' if i < 2 else 'DALL-E 3'}" for i in range(4)]
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")
    model = tmp_path / "model"
    shutil.copytree(tiny_detector_dir, model)
    write_training_record(model, TrainingRecord(data={"train": [{"source": "train",
                                                                  "generators": ["StyleGAN2 (FFHQ)"]}]}))

    results = evaluate(["--model", str(model), "--data_dir", str(data), "--output_dir", str(tmp_path / "eval"),
                        "--num_workers", "0"])
    assert results["seen_in_training"] == {"DALL-E 3": "never seen", "StyleGAN3 (FFHQ)": "family seen"}
    assert results["never_seen_vs_real"]["generators"] == ["DALL-E 3"] and results["never_seen_vs_real"]["n"] == 6
    families = generator_table(results, "family")
    assert "| `DALL-E 3` | 2 |" in families and families.splitlines()[0].endswith("in training |")
    assert "never seen |" in families and "family seen |" in families
    text = headline([EvalSet("toy", tmp_path / "eval" / "results.json", results)])
    assert "never seen in training** (DALL-E 3; 2 fakes, against all 4 reals)" in text
