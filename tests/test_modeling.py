import json
import time

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel, pipeline

from conftest import TINY_ARCH, TINY_SIZE, model_probabilities
from modeling import apply_temperature, build_detector, get_calibration, load_detector, save_detector
from modeling.detector import PretrainedWeightsUnavailable


def test_build_detector_is_a_transformers_classifier_with_labels_and_eval_preprocessing():
    model = build_detector(TINY_ARCH, pretrained=False, image_size=64)
    assert isinstance(model, PreTrainedModel)
    assert model.config.id2label == {0: "real", 1: "fake"}
    assert model.config.label2id == {"real": 0, "fake": 1}
    cfg = model.config.pretrained_cfg
    assert tuple(cfg["input_size"]) == (3, 64, 64)
    assert round(64 / cfg["crop_pct"]) == 72  # short side 288 at 256 px, scaled: 72 at 64 px
    assert cfg["interpolation"] == "bicubic" and cfg["crop_mode"] == "center"
    assert tuple(cfg["mean"]) == pytest.approx((0.485, 0.456, 0.406))
    assert tuple(cfg["std"]) == pytest.approx((0.229, 0.224, 0.225))
    assert model.timm_model.get_classifier().out_features == 2


def test_eval_resize_ratio_one_keeps_native_pixels(tmp_path):
    model = build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE, eval_resize_ratio=1.0)
    save_detector(model, tmp_path)
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (TINY_SIZE, TINY_SIZE + 8, 3), dtype=np.uint8))
    got = AutoImageProcessor.from_pretrained(tmp_path)(img, return_tensors="pt")["pixel_values"][0]
    crop = np.asarray(img.crop((4, 0, 4 + TINY_SIZE, TINY_SIZE)), dtype=np.float32) / 255  # centre, unresized
    want = (crop - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), want, atol=1e-4)


def test_custom_labels_and_model_kwargs_round_trip(tmp_path):
    model = build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE, labels=("fake", "real"),
                           drop_path_rate=0.1)
    save_detector(model, tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert loaded.config.id2label == {0: "fake", 1: "real"}
    assert loaded.config.model_args == {"drop_path_rate": 0.1}


def test_saved_folder_is_safetensors_only_and_timm_readable(tiny_detector_dir):
    files = sorted(p.name for p in tiny_detector_dir.iterdir())
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    config = json.loads((tiny_detector_dir / "config.json").read_text())
    assert config["model_args"] == {}  # timm 1.0.31 crashes on null
    assert config["label_names"] == ["real", "fake"] and config["num_classes"] == 2
    from safetensors import safe_open

    with safe_open(tiny_detector_dir / "model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if k.startswith("timm_model.")]


def test_timm_and_transformers_give_the_same_logits(tiny_detector_dir):
    hf = AutoModelForImageClassification.from_pretrained(tiny_detector_dir).eval()
    tm = timm.create_model("local-dir:" + str(tiny_detector_dir), pretrained=True).eval()
    x = torch.randn(3, 3, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=x).logits, tm(x), atol=1e-5, rtol=0)
    # and the weights really came from the folder, not a fresh random init
    fresh = timm.create_model(TINY_ARCH, num_classes=2).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), tm(x), atol=1e-3)


def test_pipeline_scores_are_the_models_own_probabilities(tiny_detector_dir):
    clf = pipeline("image-classification", model=str(tiny_detector_dir))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    out = {o["label"]: o["score"] for o in clf(img)}
    assert out == pytest.approx(model_probabilities(tiny_detector_dir, img), abs=1e-5)


def test_image_processor_resizes_short_side_then_center_crops(tiny_detector_dir):
    proc = AutoImageProcessor.from_pretrained(tiny_detector_dir)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    got = proc(img, return_tensors="pt")["pixel_values"][0]
    # by hand: short side 60 -> 36 (32 * 288/256), bicubic, centre crop 32, ImageNet mean/std
    resized = img.resize((54, 36), Image.BICUBIC)
    left, top = (54 - 32) // 2, (36 - 32) // 2
    crop = np.asarray(resized.crop((left, top, left + 32, top + 32)), dtype=np.float32) / 255
    want = (crop - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), want, atol=0.02)


def test_pretrained_weights_without_hub_fail_fast_with_advice():
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        build_detector("convnextv2_base", pretrained=True)
    assert time.perf_counter() - start < 30  # huggingface_hub alone would retry for about a minute
    msg = str(err.value)
    assert "timm/convnextv2_base.fcmae_ft_in1k" in msg
    assert "pretrained=False" in msg and "path" in msg


def test_pretrained_from_local_timm_weights(tmp_path):
    from safetensors.torch import save_file

    src = timm.create_model(TINY_ARCH, num_classes=1000)
    save_file(src.state_dict(), tmp_path / "model.safetensors")
    model = build_detector(TINY_ARCH, pretrained=tmp_path, image_size=TINY_SIZE)
    torch.testing.assert_close(model.timm_model.stem[0].weight, src.stem[0].weight)
    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained=False"):
        build_detector(TINY_ARCH, pretrained=tmp_path / "missing.safetensors")


def test_temperature_is_folded_into_the_head_for_every_loader(tmp_path):
    model = build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE).eval()
    x = torch.randn(2, 3, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        before = model(pixel_values=x).logits
        apply_temperature(model, 2.0)
        torch.testing.assert_close(model(pixel_values=x).logits, before / 2.0)
    save_detector(model, tmp_path)
    assert get_calibration(load_detector(tmp_path).config)["temperature"] == pytest.approx(2.0)
    tm = timm.create_model("local-dir:" + str(tmp_path), pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(tm(x), before / 2.0, atol=1e-5, rtol=0)


def test_load_detector_refuses_pickle_only_folder(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="safetensors"):
        load_detector(tmp_path)


def test_npr_input_filter_makes_the_model_blind_to_block_constant_content(tmp_path):
    model = build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE, input_filter="npr").eval()
    x = torch.randn(2, 3, TINY_SIZE, TINY_SIZE)
    content = torch.randn(2, 3, TINY_SIZE // 2, TINY_SIZE // 2).repeat_interleave(2, -1).repeat_interleave(2, -2)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x + content).logits, model(pixel_values=x).logits,
                                   atol=1e-4, rtol=0)
        # a plain model does see that content
        plain = build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE).eval()
        assert not torch.allclose(plain(pixel_values=x + content).logits, plain(pixel_values=x).logits, atol=1e-3)
    # the constraint lives in the weights, so timm and transformers load it with no custom code
    save_detector(model, tmp_path)
    assert load_detector(tmp_path).config.input_filter == "npr"
    tm = timm.create_model("local-dir:" + str(tmp_path), pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(tm(x + content), tm(x), atol=1e-4, rtol=0)


def test_npr_input_filter_refuses_a_stem_it_cannot_constrain():
    with pytest.raises(ValueError, match="stem"):
        build_detector("resnet18", pretrained=False, image_size=TINY_SIZE, input_filter="npr")
