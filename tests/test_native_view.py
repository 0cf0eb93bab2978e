"""The native view (config.scoring): one crop grid for the app, the evaluation harness, calibration and the README."""
import contextlib
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, TINY_ARCH, make_image, make_image_folder
from modeling import build_detector, load_detector, save_detector
from modeling.formats import TrainingRecord, scoring_from, write_training_record
from modeling.imageio import read_image
from modeling.inference import Detector, heatmap_overlay
from modeling.patches import window_cells
from modeling.views import native_crop_boxes, native_crops, served_input_shape

SCORING = {"native_crop_size": 32, "native_grid": 2}


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory):
    """A random atto at 64 px, 'trained' on 64-px crops, served in a 2x2 grid of 32-px native crops."""
    folder = tmp_path_factory.mktemp("native")
    model = build_detector(TINY_ARCH, pretrained=False, image_size=64)
    model.config.scoring = dict(SCORING)
    save_detector(model, folder)
    write_training_record(folder, TrainingRecord(augmentation_profiles={"train": {"crop_size": 64}}))
    return folder


def test_crop_boxes_run_corner_to_corner_at_native_size():
    boxes = native_crop_boxes(100, 60, 32, 3)
    assert boxes[0] == (0, 0, 32, 32) and boxes[-1] == (68, 28, 100, 60)
    assert boxes[1] == (34, 0, 66, 32) and len(boxes) == 9
    assert native_crop_boxes(32, 32, 32, 2) == [(0, 0, 32, 32)] * 4  # an image of one crop: the same crop


def test_native_crops_keep_pixels_and_enlarge_only_small_images():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 64, 3), dtype=np.uint8))
    crops = native_crops(img, 32, 2)
    assert crops.dtype == np.uint8 and crops.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(crops[3], np.asarray(img)[8:, 32:])
    assert native_crops(img.resize((20, 16)), 32, 2).shape == (4, 32, 32, 3)


def test_scoring_config_is_read_and_checked():
    assert scoring_from(None) is None and scoring_from({}) is None
    assert scoring_from({"native_crop_size": "96", "native_grid": 4}) == {"native_crop_size": 96, "native_grid": 4}
    with pytest.raises(ValueError, match="positive"):
        scoring_from({"native_crop_size": 0, "native_grid": 4})
    config = {"pretrained_cfg": {"input_size": [3, 64, 64]}}
    assert served_input_shape(config) == (1, 3, 64, 64)
    assert served_input_shape({**config, "scoring": SCORING}) == (4, 3, 32, 32)  # one call: every crop


def test_a_window_never_exceeds_the_native_crop(native_dir):
    config = json.loads((native_dir / "config.json").read_text())
    assert window_cells(native_dir, config) == 1  # trained on 64 px (2 cells), served on 32-px crops
    assert window_cells(native_dir, {**config, "scoring": None}) == 2


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_detector_averages_the_crop_logits_the_harness_averages(native_dir, tmp_path, backend):
    from train.evaluation.predict import predict_logits, resolve_scoring, scoring_transform

    det = Detector.from_pretrained(native_dir, backend=backend)
    model = load_detector(native_dir).eval()
    assert resolve_scoring(model) == SCORING and det.window == 32
    paths = [make_image(tmp_path / f"{i}.png", seed=i, size=(70 + 9 * i, 50), fake=i % 2 == 0, fmt="PNG")
             for i in range(3)]
    logits = predict_logits(model, [str(p) for p in paths], scoring_transform(model, SCORING))
    expected = torch.softmax(torch.from_numpy(logits), -1)[:, 1].numpy()
    got = [p.fake_probability for p in det.predict_batch([read_image(p) for p in paths])]
    tolerance = 0.01 if "bf16" in det.backend else 1e-5  # OpenVINO's bf16 + int8 on CPUs with native bf16
    if backend == "openvino":  # one compiled shape: each image's crops in one call, whatever the batch
        assert set(det.runtime.requests) == {(4, 3, 32, 32)}
    np.testing.assert_allclose(got, expected, atol=tolerance)
    # and not the resized view's score
    resized = predict_logits(model, [str(p) for p in paths], scoring_transform(model, None))
    assert not np.allclose(torch.softmax(torch.from_numpy(resized), -1)[:, 1].numpy(), expected, atol=1e-3)


def test_native_patch_map_is_each_crops_own_score_over_the_whole_image(native_dir, tmp_path):
    det = Detector.from_pretrained(native_dir, backend="torch")
    image = read_image(make_image(tmp_path / "x.png", seed=4, size=(90, 60), fmt="PNG"))
    prediction, patches = det.predict_with_map(image)
    model = load_detector(native_dir).eval()
    crops = det.preprocess([image])
    assert crops.shape == (4, 3, 32, 32)
    with torch.no_grad():
        each = model(pixel_values=torch.from_numpy(crops)).logits.softmax(-1)[:, 1].numpy()
    np.testing.assert_allclose(patches.probabilities.ravel(), each, atol=1e-5)
    assert patches.crop_box == (0, 0, 90, 60)  # the native view spans the whole image: nothing is dimmed
    assert patches.pixel_map().shape == (2, 2)
    overlay = heatmap_overlay(image, patches, det.band())
    assert overlay.size == image.size


def test_calibrating_in_the_native_view_stores_it_and_evaluation_then_uses_it(tmp_path):
    from train.evaluation.run import main as evaluate

    model_dir = save_detector(build_detector(TINY_ARCH, pretrained=False, image_size=64), tmp_path / "m")
    val = make_image_folder(tmp_path / "val", n_per_class=4, seed=1, size=(80, 64))
    test = make_image_folder(tmp_path / "test", n_per_class=3, seed=2, size=(80, 64))
    common = ["--data_dir", str(test), "--num_workers", "0"]
    evaluate(["--model", str(model_dir), "--output_dir", str(tmp_path / "e1"), "--calibrate", "--calibration_dir",
              str(val), "--calibrated_model_dir", str(tmp_path / "cal"), "--native_crop_size", "32",
              "--native_grid", "2", *common])
    assert json.loads((tmp_path / "cal" / "config.json").read_text())["scoring"] == SCORING
    results = evaluate(["--model", str(tmp_path / "cal"), "--output_dir", str(tmp_path / "e2"), *common])
    assert results["model"]["scoring"] == SCORING
    resized = evaluate(["--model", str(tmp_path / "cal"), "--output_dir", str(tmp_path / "e3"),
                        "--native_crop_size", "0", *common])
    assert resized["model"]["scoring"] is None
    assert resized["overall"]["ece"] != results["overall"]["ece"]
    # calibrating again in the resized view takes the native view back off the model
    evaluate(["--model", str(tmp_path / "cal"), "--output_dir", str(tmp_path / "e4"), "--calibrate",
              "--calibration_dir", str(val), "--calibrated_model_dir", str(tmp_path / "cal2"),
              "--native_crop_size", "0", *common])
    assert json.loads((tmp_path / "cal2" / "config.json").read_text()).get("scoring") is None


def test_training_validates_in_the_native_view_it_stores(tmp_path):
    """The Trainer's validation scores each image as the app does (its crops' logits averaged), so the best
    checkpoint is the best as served, and the view travels with every saved model."""
    from sklearn.metrics import roc_auc_score

    from conftest import FAST
    from train import run
    from train.evaluation.predict import image_files, predict_logits, scoring_transform

    train_dir = make_image_folder(tmp_path / "train", n_per_class=4, size=(80, 64))
    val = make_image_folder(tmp_path / "val", n_per_class=4, seed=1, size=(80, 64))
    trainer = run.main(["--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "64",
                        "--train_dirs", str(train_dir), "--validation_dirs", str(val), "--max_steps", "2",
                        "--per_device_train_batch_size", "4", "--native_crop_size", "32", "--native_grid", "2",
                        "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps",
                        "--save_steps", "2", "--output_dir", str(tmp_path / "out"), *FAST])
    for folder in (tmp_path / "out", tmp_path / "out" / "checkpoint-2"):
        assert json.loads((folder / "config.json").read_text())["scoring"] == SCORING

    model = trainer.model.eval()
    rows = trainer.eval_dataset.rows
    served = predict_logits(model, image_files(rows), scoring_transform(model, SCORING))
    resized = predict_logits(model, image_files(rows), scoring_transform(model, None))
    validated = trainer.predict(trainer.eval_dataset).predictions
    np.testing.assert_allclose(validated, served, rtol=1e-4, atol=1e-5)
    assert np.abs(validated - resized).max() > 1e-3
    fake = model.config.label2id["fake"]
    auc = roc_auc_score(rows["label"], torch.from_numpy(served).softmax(-1)[:, fake].numpy())
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_roc_auc"] == pytest.approx(auc)

    # continuing that model keeps its view; 0 takes it back to the resized one
    again = run.main(["--init_from", str(tmp_path / "out"), "--train_dirs", str(train_dir), "--max_steps", "1",
                      "--per_device_train_batch_size", "4", "--native_crop_size", "0",
                      "--output_dir", str(tmp_path / "again"), *FAST])
    assert scoring_from(getattr(again.model.config, "scoring", None)) is None
    assert run.build_model(run.ModelArguments(init_from=str(tmp_path / "out"))).config.scoring == SCORING


def test_the_page_says_how_the_model_reads_the_image(native_dir, detector_dir_for_page):
    from space.single_tab import map_text

    native = map_text(Detector.from_pretrained(native_dir, backend="torch"))
    assert "4 crops of 32x32 pixels" in native and "dimmed" not in native
    resized = map_text(Detector.from_pretrained(detector_dir_for_page, backend="torch"))
    assert "each 64-pixel patch" in resized and "crops of" not in resized  # its training crop


@pytest.fixture
def detector_dir_for_page(native_dir, tmp_path):
    """native_dir's model in the resized view: the same folder without config.scoring."""
    folder = tmp_path / "resized"
    folder.mkdir()
    for name in ("model.safetensors", "training_config.json"):
        (folder / name).write_bytes((native_dir / name).read_bytes())
    config = json.loads((native_dir / "config.json").read_text())
    config.pop("scoring")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def run_snippet(code: str) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<snippet>", "exec"), {})
    return out.getvalue().split()


def test_card_gives_the_native_view_snippet_and_it_scores_as_the_app(native_dir, tmp_path):
    from hub.card import build_model_card

    card = str(build_model_card(native_dir, repo_id="someone/native"))
    assert "4 crops of 32x32 pixels" in card
    snippets = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(snippets) == 4  # pipeline, AutoModel, timm, then the native view
    det = Detector.from_pretrained(native_dir, backend="torch")
    for i, size in enumerate([(90, 70), (20, 24)]):  # a larger image and one smaller than a crop
        photo = make_image(tmp_path / f"photo{i}.png", seed=8 + i, size=size, fmt="PNG")
        code = snippets[3].replace("someone/native", str(native_dir)).replace("photo.jpg", str(photo))
        label, p_fake = run_snippet(code)
        expected = det.predict(read_image(photo))
        assert float(p_fake) == pytest.approx(expected.fake_probability, abs=1e-5)
    resized = snippets[1].replace("someone/native", str(native_dir)).replace("photo.jpg", str(photo))
    assert float(run_snippet(resized)[-1]) != pytest.approx(expected.fake_probability, abs=1e-4)


def test_card_of_a_resized_view_model_has_no_native_snippet(detector_dir_for_page):
    from hub.card import build_model_card

    card = str(build_model_card(detector_dir_for_page, repo_id="someone/resized"))
    assert "native view" not in card and len(re.findall(r"```python\n", card)) == 3


def test_readme_native_view_recipe_gives_the_apps_verdict(native_dir, tmp_path):
    from modeling import set_calibration

    model = load_detector(native_dir)
    set_calibration(model, threshold=0.5, band=[0.45, 0.55])
    model_dir = save_detector(model, tmp_path / "m")
    det = Detector.from_pretrained(model_dir, backend="torch")
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- native-view -->\n```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("checkpoints/demo", str(model_dir))
    for seed in range(4):
        path = make_image(tmp_path / f"{seed}.png", seed=seed, size=(70, 50 + 10 * seed), fmt="PNG")
        scope = {}
        exec(code.replace("photo.jpg", str(path)), scope)
        prediction = det.predict(read_image(path))
        assert scope["p_fake"] == pytest.approx(prediction.fake_probability, abs=1e-5)
        assert scope["label"] == prediction.label
