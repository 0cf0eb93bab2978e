"""The Gradio app and its inference path: backends, verdicts, stability, the patch map, provenance, the API."""
import csv
import json
import re
import subprocess
import sys

import gradio as gr
import numpy as np
import pytest
import timm.data
import torch
from gradio_client import Client, handle_file
from PIL import Image, PngImagePlugin
from transformers import pipeline

import modeling.backends as backends
import space.uploads
from conftest import ROOT, TINY_ARCH, encode_image, free_port, make_image, odd_image_cases
from modeling import build_detector, load_detector, save_detector, set_calibration
from modeling.backends import cpu_has_native_bf16, to_openvino
from modeling import formats
from modeling.formats import TrainingRecord, write_training_record
from modeling.imageio import MAX_BYTES, read_image
from modeling.inference import Detector, band_at, heatmap_overlay, verdict
from modeling.provenance import read_provenance
from space.api import predict_files
from space.batch_tab import THUMBNAIL_SIDE, analyse_batch
from space.batch_export import BATCH_COLUMNS
from space.headline import model_headline
from space.loading import SPACE_DIR, load_app_detector
from space.page import build_demo
from space.single_tab import analyse, example_files, relabel
from space.uploads import uploaded_path
from space.verdict_text import render_verdict, stability_line

EXAMPLES_DIR = SPACE_DIR / "examples"


@pytest.fixture(scope="module")
def detector(tiny_detector_dir):
    # ONNX Runtime: a fallback path, exact and quick to build.
    return Detector.from_pretrained(tiny_detector_dir, backend="onnx")


@pytest.fixture(scope="module")
def detector_dir_64(tmp_path_factory):
    """A random atto at 64 px, with the crop size it was 'trained' on recorded as training_config.json does."""
    folder = tmp_path_factory.mktemp("detector_64")
    save_detector(build_detector(TINY_ARCH, pretrained=False, image_size=64), folder)
    write_training_record(folder, TrainingRecord(
        augmentation_profiles={"train": {"crop_size": 32}, "light": {"crop": "resized"}}))
    return folder


def copy_weights(model_dir, folder):
    """A model folder holding only the weights and config of model_dir (no evaluation, no training record)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    return folder


@pytest.fixture
def photo(tmp_path):
    return make_image(tmp_path / "photo.jpg", seed=3, size=(80, 60))


# --- inference ---------------------------------------------------------------------------------------------

def test_preprocess_equals_timm_eval_transform(detector_dir_64, tmp_path):
    det = Detector.from_pretrained(detector_dir_64, backend="torch")
    config = json.loads((detector_dir_64 / "config.json").read_text())
    for crop_pct in (det.crop_pct, 1.0, 0.875):
        det.crop_pct = crop_pct
        transform = timm.data.create_transform(**{**timm.data.resolve_data_config(
            config["pretrained_cfg"], model=None), "crop_pct": crop_pct}, is_training=False)
        for size in ((64, 64), (97, 50), (50, 131), (300, 200)):
            image = read_image(make_image(tmp_path / "im.jpg", seed=sum(size), size=size))
            np.testing.assert_allclose(det.preprocess([image])[0], transform(image).numpy(), atol=1e-6)


def test_fast_paths_match_eager_pipeline(tiny_detector_dir, detector, tmp_path):
    assert detector.backend == "onnxruntime"
    others = [Detector.from_pretrained(tiny_detector_dir, backend=b) for b in ("torch", "openvino")]
    clf = pipeline("image-classification", model=str(tiny_detector_dir))
    for seed in range(4):
        path = make_image(tmp_path / f"{seed}.jpg", seed=seed, size=(50 + 10 * seed, 70), fake=seed % 2 == 0)
        eager = {o["label"]: o["score"] for o in clf(str(path), top_k=None)}
        fast = detector.predict(read_image(path))
        assert fast.fake_probability == pytest.approx(eager["fake"], abs=1e-5)
        assert fast.probabilities["real"] == pytest.approx(eager["real"], abs=1e-5)
        for other in others:
            tolerance = 1e-5 if other.backend in ("torch", "openvino") else 0.01
            assert other.predict(read_image(path)).fake_probability == pytest.approx(eager["fake"], abs=tolerance)


def assert_close_to_eager(det: Detector, model_dir, tmp_path, tolerance=0.01):
    """det's p(fake) within tolerance of eager fp32 pipeline() on six images."""
    clf = pipeline("image-classification", model=str(model_dir))
    images = [make_image(tmp_path / f"{i}.jpg", seed=i, size=(96, 80), fake=i % 2 == 0) for i in range(6)]
    predictions = det.predict_batch([read_image(p) for p in images])
    for path, pred in zip(images, predictions):
        eager = {o["label"]: o["score"] for o in clf(str(path), top_k=None)}
        assert pred.fake_probability == pytest.approx(eager["fake"], abs=tolerance)


@pytest.mark.slow
def test_compiled_bf16_path_stays_within_tolerance(detector_dir_64, tmp_path):
    assert_close_to_eager(Detector.from_pretrained(detector_dir_64, backend="compile"), detector_dir_64, tmp_path)


def test_openvino_path_stays_within_tolerance(detector_dir_64, tmp_path):
    """The app's default path on CPU: bf16 + int8 where the CPU has native bf16 (as here), else f32."""
    det = Detector.from_pretrained(detector_dir_64, backend="openvino")
    assert det.backend == ("openvino+bf16+int8" if cpu_has_native_bf16() else "openvino")
    assert_close_to_eager(det, detector_dir_64, tmp_path)


def test_int8_weights_leave_the_last_stage_and_head_alone():
    import openvino as ov

    net = build_detector(TINY_ARCH, pretrained=False, image_size=32).timm_model.eval()
    int8 = [op.get_friendly_name() for op in to_openvino(net, (3, 32, 32), low_precision=True).get_ops()
            if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    stages = {name.split("stages.")[1].split(".")[0] for name in int8 if "stages." in name}
    assert stages == {str(i) for i in range(len(net.stages) - 1)}
    assert any("mlp.fc1" in name for name in int8) and not any("head" in name for name in int8)


def test_content_blind_model_runs_openvino_in_f32_exactly(tmp_path):
    model = build_detector(TINY_ARCH, pretrained=False, image_size=32, input_filter="npr")
    det = Detector.from_model(model, backend="auto")
    assert det.backend == "openvino"  # never bf16: it would round away the pixel differences the stem reads
    ref = Detector.from_model(model, backend="torch")
    for seed in range(3):
        image = read_image(make_image(tmp_path / f"{seed}.jpg", seed=seed, size=(40, 40)))
        assert det.predict(image).fake_probability == pytest.approx(ref.predict(image).fake_probability, abs=1e-5)


def test_backends_are_tried_in_order(monkeypatch, tiny_detector_dir, caplog):
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: False)
    assert backends.candidates("auto", low_precision=False) == ["openvino", "onnx", "torch"]
    assert backends.candidates("auto", low_precision=True) == ["openvino", "compile", "onnx", "torch"]

    def broken(*args, **kwargs):
        raise RuntimeError("converter failed")

    monkeypatch.setattr(backends, "_openvino", broken)
    det = Detector.from_pretrained(tiny_detector_dir, backend="auto")
    assert det.backend == "onnxruntime" and "The openvino backend is unavailable (converter failed)" in caplog.text
    with pytest.raises(RuntimeError, match="converter failed"):  # asked for by name: no silent fallback
        Detector.from_pretrained(tiny_detector_dir, backend="openvino")


def test_converted_model_is_cached_and_keyed_by_the_weights(tmp_path, detector_dir_64, monkeypatch):
    model_dir = copy_weights(detector_dir_64, tmp_path / "model")
    image = read_image(make_image(tmp_path / "x.jpg", seed=1, size=(70, 64)))
    first = Detector.from_pretrained(model_dir, backend="openvino", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*/model.xml"))) == 1

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(backends, "to_openvino", no_conversion)
    second = Detector.from_pretrained(model_dir, backend="openvino", cache_dir=tmp_path / "cache")
    assert second.predict(image).fake_probability == pytest.approx(first.predict(image).fake_probability, abs=1e-6)
    monkeypatch.undo()
    model = load_detector(model_dir)  # other weights: another key (whatever the random state the fixture saw)
    with torch.no_grad():
        model.timm_model.get_classifier().bias.add_(1.0)
    save_detector(model, model_dir)
    Detector.from_pretrained(model_dir, backend="openvino", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*/model.xml"))) == 2


def test_serving_from_the_cache_imports_no_torch(tmp_path, tiny_detector_dir):
    """The start-up promise: with the converted model cached, neither torch nor transformers is imported."""
    Detector.from_pretrained(tiny_detector_dir, backend="openvino", cache_dir=tmp_path / "cache")
    photo = make_image(tmp_path / "p.jpg", seed=2)
    code = (f"import sys; from modeling.inference import Detector; from modeling.imageio import read_image; "
            f"d = Detector.from_pretrained({str(tiny_detector_dir)!r}, cache_dir={str(tmp_path / 'cache')!r}); "
            f"p = d.predict(read_image({str(photo)!r})); d.patch_map(read_image({str(photo)!r})); "
            f"print(d.backend, round(p.fake_probability, 6), sorted(m for m in ('torch', 'timm', 'transformers') "
            f"if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    backend, p, imported = out.split(" ", 2)
    assert backend.startswith("openvino") and imported.strip() == "[]"
    expected = Detector.from_pretrained(tiny_detector_dir, backend="torch").predict(read_image(photo))
    assert float(p) == pytest.approx(expected.fake_probability, abs=0.01)


def test_batch_equals_single(detector, tmp_path):
    images = [read_image(make_image(tmp_path / f"{i}.jpg", seed=i)) for i in range(11)]  # > one chunk of 8
    batch = detector.predict_batch(images)
    assert [p.fake_probability for p in batch] == pytest.approx(
        [detector.predict(im).fake_probability for im in images], abs=1e-5)


@pytest.mark.parametrize("p, threshold, expected", [
    (0.95, 0.5, "fake"), (0.6, 0.5, "fake"), (0.59, 0.5, "uncertain"), (0.41, 0.5, "uncertain"),
    (0.39, 0.5, "real"), (0.05, 0.5, "real"),
    (0.97, 0.95, "fake"),  # the band is clipped at 1: above a high threshold is fake
    (0.03, 0.05, "real"),
])
def test_model_without_a_fitted_band_is_uncertain_within_a_tenth_of_the_threshold(p, threshold, expected):
    assert verdict(p, band_at(threshold, {"threshold": 0.5})) == expected


def test_fitted_band_decides_and_moves_with_the_threshold_keeping_its_offsets():
    calibration = {"threshold": 0.6, "band": [0.55, 0.72]}
    assert band_at(0.6, calibration) == (0.55, 0.72)  # exactly as stored at the calibrated threshold
    assert [verdict(p, band_at(0.6, calibration)) for p in (0.549, 0.55, 0.71, 0.72)] == [
        "real", "uncertain", "uncertain", "fake"]
    assert band_at(0.4, calibration) == pytest.approx((0.35, 0.52))  # 0.05 below, 0.12 above
    assert band_at(0.95, calibration) == pytest.approx((0.9, 0.95))  # an edge beyond 1 collapses on the threshold
    assert band_at(0.03, calibration) == pytest.approx((0.03, 0.15))


def test_threshold_and_band_come_from_calibration(tmp_path):
    model = build_detector(TINY_ARCH, pretrained=False, image_size=32)
    set_calibration(model, threshold=0.7312345, band=[0.61, 0.8])
    det = Detector.from_pretrained(save_detector(model, tmp_path / "m"), backend="torch")
    assert det.threshold == 0.7312345 and det.band() == (0.61, 0.8)
    demo = build_demo(det)
    sliders = [c for c in demo.blocks.values() if isinstance(c, gr.Slider)]
    assert sliders and all(s.value == 0.731 for s in sliders)  # the precision the page prints
    assert "decision threshold 0.731." in model_headline(det)


def readme_block(marker: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", readme, re.S).group(1)


@pytest.mark.parametrize("band", [None, [0.3, 0.6]])
def test_readme_recipe_gives_the_apps_verdict_from_pipeline(tmp_path, band):
    """pipeline()'s top label is argmax (a threshold of 0.5); the README shows how to get the app's verdict (the
    calibrated threshold and the verdict band) from pipeline(), and this runs that exact code."""
    model = build_detector(TINY_ARCH, pretrained=False, image_size=32)
    set_calibration(model, threshold=0.45, **({"band": band} if band else {}))
    model_dir = save_detector(model, tmp_path / "m")
    det = Detector.from_pretrained(model_dir, backend="torch")
    code = readme_block("verdict-from-pipeline").replace("checkpoints/demo", str(model_dir))
    for seed in range(8):
        path = make_image(tmp_path / f"{seed}.jpg", seed=seed, size=(48, 48), fake=seed % 2 == 0)
        scope = {}
        exec(code.replace("photo.jpg", str(path)), scope)
        prediction = det.predict(read_image(path))
        assert scope["label"] == prediction.label
        assert scope["p_fake"] == pytest.approx(prediction.fake_probability, abs=1e-5)
    assert band is None or (scope["low"], scope["high"]) == tuple(band)


# --- the patch map -----------------------------------------------------------------------------------------

def torch_window_scores(model_dir, pixels: np.ndarray, cells: int) -> np.ndarray:
    """The patch map's definition in plain torch: the head applied to the last stage's cells averaged under each
    window."""
    import torch

    net = load_detector(model_dir).timm_model
    with torch.no_grad():
        features = net.eval().forward_features(torch.from_numpy(pixels[None]))
        rows, cols = features.shape[2] - cells + 1, features.shape[3] - cells + 1
        scores = np.empty((rows, cols))
        for r in range(rows):
            for c in range(cols):
                window = features[:, :, r:r + cells, c:c + cells]
                scores[r, c] = net.forward_head(window).softmax(-1)[0, 1].item()
    return scores


def test_patch_map_is_the_head_on_each_window_of_the_verdicts_own_forward(detector_dir_64, tmp_path):
    det = Detector.from_pretrained(detector_dir_64, backend="onnx")
    assert det.window == 32  # training_config.json's crop size: one cell of the last stage
    image = read_image(make_image(tmp_path / "x.jpg", seed=5, size=(90, 64)))
    prediction, patches = det.predict_with_map(image)
    assert prediction.fake_probability == pytest.approx(det.predict(image).fake_probability, abs=1e-6)
    assert patches.probabilities.shape == (2, 2) and patches.stride == 32  # a 2x2 grid of cells at 64 px
    expected = torch_window_scores(detector_dir_64, det.preprocess([image])[0], cells=1)
    np.testing.assert_allclose(patches.probabilities, expected, atol=1e-5)
    full = patches.pixel_map()
    assert full.shape == (64, 64) and full[0, 0] == pytest.approx(patches.probabilities[0, 0])


def test_a_window_as_large_as_the_input_scores_what_the_verdict_scores(tmp_path):
    folder = save_detector(build_detector(TINY_ARCH, pretrained=False, image_size=64), tmp_path / "m")
    write_training_record(folder, TrainingRecord(augmentation_profiles={"t": {"crop_size": 64}}))
    det = Detector.from_pretrained(folder, backend="onnx")
    image = read_image(make_image(tmp_path / "x.jpg", seed=6, size=(70, 64)))
    prediction, patches = det.predict_with_map(image)
    assert patches.probabilities.shape == (1, 1)
    assert patches.probabilities[0, 0] == pytest.approx(prediction.fake_probability, abs=1e-6)


def test_patch_map_colours_follow_the_verdict_band(detector, tmp_path):
    """Red at or above the band, blue below it, grey inside it, whatever the image; outside the crop is dimmed."""
    image = Image.new("RGB", (200, 100), (128, 128, 128))
    patches = detector.patch_map(image)
    left, top, right, bottom = patches.crop_box
    side = 32 * 100 / 36  # short side 100 -> 36 px, centre crop 32 px
    assert (left, top, right, bottom) == pytest.approx((100 - side / 2, 50 - side / 2, 100 + side / 2, 50 + side / 2))
    all_fake = np.asarray(heatmap_overlay(image, patches, band=(1e-6, 1e-6))).astype(int)
    all_real = np.asarray(heatmap_overlay(image, patches, band=(1 - 1e-6, 1 - 1e-6))).astype(int)
    all_uncertain = np.asarray(heatmap_overlay(image, patches, band=(1e-6, 1 - 1e-6))).astype(int)
    assert all_fake.shape == (100, 200, 3)
    assert all_fake[50, 100, 0] > all_fake[50, 100, 2] + 60 and all_real[50, 100, 2] > all_real[50, 100, 0] + 60
    assert np.ptp(all_uncertain[50, 100]) < 10  # grey: no channel stands out
    assert all_fake[50, 5].max() < 100  # outside the centre crop: dimmed
    big = Image.new("RGB", (3000, 1500))
    assert heatmap_overlay(big, detector.patch_map(big), (0.5, 0.5), max_side=512).size == (512, 256)


def test_window_defaults_to_half_the_input_in_whole_cells(tiny_detector_dir, detector_dir_64, tmp_path):
    assert Detector.from_pretrained(tiny_detector_dir, backend="torch").window == 32  # not below one cell
    model_dir = save_detector(build_detector(TINY_ARCH, pretrained=False, image_size=128), tmp_path / "m")
    assert Detector.from_pretrained(model_dir, backend="torch").window == 64
    model_dir = save_detector(build_detector(TINY_ARCH, pretrained=False, image_size=96), tmp_path / "m96")
    assert Detector.from_pretrained(model_dir, backend="torch").window == 32  # half is 48: one whole cell
    assert Detector.from_pretrained(detector_dir_64, backend="torch").window == 32


# --- stability and the headline ----------------------------------------------------------------------------

def test_stability_reports_both_perturbations(detector, photo):
    image = read_image(photo)
    prediction = detector.predict(image)
    stability = detector.stability(image, prediction)
    assert set(stability) == {"jpeg_quality_75", "resized_half", "verdict_holds"}
    jpeg, half = detector.predict_batch([read_image(encode_image(image, "JPEG", quality=75)),
                                         image.resize((40, 30), Image.BICUBIC)])
    assert stability["jpeg_quality_75"] == pytest.approx(jpeg.fake_probability, abs=1e-6)
    assert stability["resized_half"] == pytest.approx(half.fake_probability, abs=1e-6)
    assert stability["verdict_holds"] == (jpeg.label == half.label == prediction.label)


def result(p=0.3, jpeg=0.3, half=0.3, declared=None) -> dict:
    return {"fake_probability": p, "stability": {"jpeg_quality_75": jpeg, "resized_half": half},
            "provenance": {"declared_generator": declared}}


BAND = (0.46, 0.66)  # around a threshold of 0.56


def test_verdict_text_reconciles_metadata_and_stability():
    plain = render_verdict(result(), 0.56, BAND)
    assert plain.startswith("## Real") and "verdict holds" in plain and "metadata" not in plain
    assert "(threshold 0.56; *Uncertain* from 46.0% to 66.0%)" in plain
    claimed = render_verdict(result(declared="Stable Diffusion 1.5"), 0.56, BAND)
    first, rest = claimed.split("\n", 1)
    assert first == "### The file's metadata says it was made by Stable Diffusion 1.5"
    assert "strip or forge" in rest and "## Pixel detector: Real" in rest and "**30.0%**" in rest


def test_stability_line_names_the_change_that_moves_the_verdict():
    resized = stability_line(result(p=0.3, jpeg=0.3, half=0.9), BAND)
    assert "**the verdict changes after a 0.5x resize (to AI-generated): treat as uncertain.**" in resized
    assert "JPEG quality 75 (" not in resized
    jpeg = stability_line(result(p=0.9, jpeg=0.5, half=0.9), BAND)
    assert "changes after JPEG quality 75 (to Uncertain)" in jpeg and "resize (" not in jpeg
    both = stability_line(result(p=0.9, jpeg=0.1, half=0.5), BAND)
    assert "after JPEG quality 75 (to Real) and after a 0.5x resize (to Uncertain)" in both


def test_an_uncertain_verdict_is_never_said_to_hold():
    steady = stability_line(result(p=0.5, jpeg=0.55, half=0.6), BAND)
    assert "holds" not in steady and "Uncertain after both as well" in steady
    moved = stability_line(result(p=0.5, jpeg=0.55, half=0.2), BAND)
    assert "holds" not in moved and "after a 0.5x resize it reads Real: no firm verdict either way" in moved


def write_results(folder, tn=90, fp=10, fn=60, tp=40, auc=0.7, decisive=None):
    folder.mkdir(parents=True, exist_ok=True)
    overall = {"n": tn + fp + fn + tp, "recall": tp / (tp + fn), "roc_auc": auc, "confusion_matrix": [[tn, fp],
                                                                                                     [fn, tp]]}
    formats.write_results(folder / formats.RESULTS_FILE, {"overall": overall, "by_source": {},
                                                          **({"decisive": decisive} if decisive else {})})


def test_headline_says_what_is_served(tmp_path, tiny_detector_dir):
    model_dir = copy_weights(tiny_detector_dir, tmp_path / "m")
    det = Detector.from_pretrained(model_dir, backend="torch")
    assert "how often it is right is unknown" in model_headline(det)
    write_results(model_dir / "eval_val", tn=50, fp=0, fn=0, tp=50, auc=1.0)
    write_results(model_dir / "eval" / "ood")  # as published on the Hub: eval/<set>/results.json
    headline = model_headline(det)
    assert "`m`" in headline and "convnextv2_atto" in headline
    assert "On 200 images from sources and generators it never saw in training" in headline
    assert "scores **40.0% of AI-generated images and 10.0% of real photos at or above its threshold**" in headline
    assert "AUC 0.700" in headline and "A demo model, not a production detector" in headline
    assert "decisive" not in headline  # no band was fitted: no promise about decisive verdicts


def test_headline_states_the_decisive_share_and_says_plainly_when_fakes_get_uncertain(tmp_path, tiny_detector_dir):
    model_dir = copy_weights(tiny_detector_dir, tmp_path / "m")
    det = Detector.from_pretrained(model_dir, backend="torch")
    decisive = {"band": [0.4, 0.7], "n": 200, "share": 0.72, "accuracy": 0.881, "fake_share": 0.64,
                "real_share": 0.8}
    write_results(model_dir / "eval_ood", decisive=decisive)
    headline = model_headline(det)
    assert ("On our out-of-distribution test set, **72% of images get a decisive verdict, 88% of those are "
            "right**") in headline
    assert "Most AI-generated images get *Uncertain*" not in headline
    write_results(model_dir / "eval_ood", decisive={**decisive, "fake_share": 0.2})
    assert "Most AI-generated images get *Uncertain*, not *AI-generated*: only 20% of them" in model_headline(det)
    write_results(model_dir / "eval_ood", decisive={**decisive, "fake_share": 0.0})
    assert "*AI-generated*: none of them was called AI-generated there." in model_headline(det)
    write_results(model_dir / "eval_ood", decisive={**decisive, "fake_share": 0.001})
    assert "*AI-generated*: under 1% of them were called AI-generated there." in model_headline(det)


# --- provenance --------------------------------------------------------------------------------------------

def test_provenance_signals():
    img = Image.new("RGB", (8, 8))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle, Steps: 20, Sampler: Euler a, Model: sd15")
    prov = read_provenance(encode_image(img, "PNG", pnginfo=info))
    assert "PNG text chunk 'parameters'" in prov.markdown() and prov.declared_generator == "Stable Diffusion (web UI)"

    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "EOS R5", "Adobe Photoshop 25.0"
    prov = read_provenance(encode_image(img, "JPEG", exif=exif))
    assert (prov.camera_make, prov.camera_model, prov.software) == ("Canon", "EOS R5", "Adobe Photoshop 25.0")
    assert prov.generator_metadata == [] and not prov.c2pa and prov.declared_generator is None

    exif[0x0131] = "Midjourney v6"
    prov = read_provenance(encode_image(img, "JPEG", exif=exif))
    assert "EXIF Software names a generator" in prov.markdown() and prov.declared_generator == "Midjourney v6"

    jpeg = encode_image(img, "JPEG")
    jumbf = b"JP\x00\x01\x00\x00\x00\x01" + b"\x00\x00\x00\x20jumb\x00\x00\x00\x18jumdc2pa"
    app11 = b"\xff\xeb" + (len(jumbf) + 2).to_bytes(2, "big") + jumbf
    signed = read_provenance(jpeg[:2] + app11 + jpeg[2:])
    assert signed.c2pa and signed.declared_generator is None  # a manifest alone claims nothing about generation
    jumbf += b"c2pa.actions digitalSourceType http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    app11 = b"\xff\xeb" + (len(jumbf) + 2).to_bytes(2, "big") + jumbf
    assert read_provenance(jpeg[:2] + app11 + jpeg[2:]).declared_generator == "a generative AI model"

    assert read_provenance(b"not an image").as_dict()["generator_metadata"] == []


def test_example_images_are_labelled_and_licensed():
    examples = example_files(EXAMPLES_DIR)
    assert len(examples) >= 6
    assert sum(p.stat().st_size for p in EXAMPLES_DIR.iterdir()) < 300_000
    licenses = (EXAMPLES_DIR / "LICENSES.md").read_text()
    with (EXAMPLES_DIR / "metadata.csv").open(newline="") as f:
        rows = {row["file_name"]: row for row in csv.DictReader(f)}
    for path, caption in examples:
        name = path.rsplit("/", 1)[-1]
        assert name in licenses and name in rows
        truth = rows[name]["label"]
        assert name.startswith(f"{truth}_") and caption.startswith("Real photo" if truth == "real" else "AI-generated")
        assert read_image(path).size == (256, 256)
    xmp = read_provenance((EXAMPLES_DIR / "fake_sd15_town_with_xmp.jpg").read_bytes())
    assert any("DigitalSourceType" in s for s in xmp.generator_metadata) and xmp.declared_generator


# --- the UI's functions, without a server ------------------------------------------------------------------

def test_upload_payload_reaches_read_image_untouched(photo, tmp_path, monkeypatch):
    assert uploaded_path({"path": str(photo), "orig_name": "photo.jpg", "meta": {"_type": "gradio.FileData"}}) \
        == str(photo)
    assert uploaded_path(None) is None
    monkeypatch.setattr(space.uploads, "get_upload_folder", lambda: str(tmp_path))
    data = photo.read_bytes()
    pasted = uploaded_path({"path": None, "url": "data:image/jpeg;base64," +
                            __import__("base64").b64encode(data).decode()})
    assert open(pasted, "rb").read() == data


def test_each_upload_is_read_and_decoded_once(detector, photo, tmp_path, monkeypatch):
    calls = {"read": 0, "decode": 0}
    read_file_bytes, read_image_ = space.uploads.read_file_bytes, space.uploads.read_image

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(space.uploads, "read_file_bytes", counted("read", read_file_bytes))
    monkeypatch.setattr(space.uploads, "read_image", counted("decode", read_image_))
    analyse(detector, {"path": str(photo)}, detector.threshold)
    assert calls == {"read": 1, "decode": 1}
    files = [make_image(tmp_path / f"b{i}.jpg", seed=i) for i in range(3)]
    analyse_batch(detector, [str(f) for f in files], detector.threshold, tmp_path / "csv")
    assert calls == {"read": 4, "decode": 4}  # the thumbnails come from the decoded images


def test_a_refused_file_leaves_its_reason_on_the_page_and_an_empty_input(detector, tmp_path):
    bad = tmp_path / "text.jpg"
    bad.write_text("no image")  # gr.Image's own preprocessing would raise inside Gradio here
    verdict_md, probs, image, overlay, _, provenance_md, state, image_in = analyse(detector, {"path": str(bad)}, 0.5)
    assert "This file was not analysed" in verdict_md and "not an image we can read" in verdict_md
    assert image_in is None and probs is None and overlay is None  # no broken image left in the input
    # Clearing the input (which the refusal does) keeps the reason; a visitor's later clear empties the page.
    kept = analyse(detector, None, 0.5, state)
    assert "not an image we can read" in kept[0] and kept[6] is None
    assert analyse(detector, None, 0.5, None)[0] == ""


def test_analyse_and_relabel(detector, photo):
    verdict_md, probs, image, overlay, legend, provenance_md, state, _ = analyse(detector, {"path": str(photo)}, 0.5)
    p_fake = state["fake_probability"]
    assert probs["fake"] == pytest.approx(p_fake) and probs["real"] == pytest.approx(1 - p_fake, abs=1e-6)
    assert image.size == overlay.size == (80, 60)
    assert "Camera (EXIF):** none recorded" in provenance_md
    assert f"{p_fake:.1%}" in verdict_md and "Stability:" in verdict_md
    assert "40.0% to 60.0%" in legend  # the band at the page's threshold
    fake_md, fake_map, fake_legend = relabel(detector, state, 0.01)
    real_md, real_map, real_legend = relabel(detector, state, 0.99)
    assert "## AI-generated" in fake_md and "## Real" in real_md
    red, blue = np.asarray(fake_map).astype(int)[30, 40], np.asarray(real_map).astype(int)[30, 40]
    assert red[0] > red[2] and blue[2] > blue[0]  # the map's colours follow the threshold
    assert "below 1.0%" in fake_legend and "99.0% and above" in real_legend


def test_page_threshold_at_its_default_is_the_models_own(detector, photo, tmp_path):
    model = build_detector(TINY_ARCH, pretrained=False, image_size=32)
    set_calibration(model, threshold=0.4567891)
    det = Detector.from_pretrained(save_detector(model, tmp_path / "m"), backend="onnx")
    state = analyse(det, {"path": str(photo)}, 0.457)[6]  # the slider shows the threshold rounded
    assert state["threshold"] == 0.4567891 and "threshold 0.457" in analyse(det, {"path": str(photo)}, 0.457)[0]
    assert analyse(det, {"path": str(photo)}, 0.5)[6]["threshold"] == 0.5


def test_batch_sorts_reports_bad_files_and_writes_csv(detector, tmp_path):
    good = [make_image(tmp_path / f"g{i}.jpg", seed=i, fake=i % 3 == 0) for i in range(9)]
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    paths = [str(p) for p in good[:4] + [bad] + good[4:]]
    thumbnails, rows, csv_path, notice = analyse_batch(detector, paths, 0.5, tmp_path / "csv")
    assert sorted(r[0] for r in rows) == sorted(p.rsplit("/", 1)[-1] for p in paths)
    scores = [r[2] for r in rows[:-1]]
    assert scores == sorted(scores, reverse=True)  # most likely AI-generated first
    assert rows[-1][1] == "error" and "not an image" in rows[-1][-1]  # unreadable files last, with the reason
    assert notice == "9 analysed, 1 refused (reason in the table)"
    assert len(thumbnails) == 9 and max(thumbnails[0][0].size) <= THUMBNAIL_SIDE
    label, score, name = rows[0][1], rows[0][2], rows[0][0]
    assert thumbnails[0][1] == f"{label} {score:.0%} · {name}"  # the verdict and score before the file name
    with open(csv_path) as f:
        table = list(csv.reader(f))
    assert table[0] == BATCH_COLUMNS and len(table) == 11
    first = next(p for p in good if p.name == table[1][0])
    assert float(table[1][2]) == pytest.approx(detector.predict(read_image(first)).fake_probability, abs=1e-4)
    too_many = analyse_batch(detector, paths * 10, 0.5, tmp_path / "csv")
    assert too_many[:3] == ([], [], None) and "at most 64 files" in too_many[3]  # said on the page, not a toast


def test_random_model_fallback_warns(monkeypatch, tmp_path):
    monkeypatch.delenv("MODEL_ID", raising=False)
    det, warning = load_app_detector(None, space_dir=tmp_path, backend="torch", cache_dir=tmp_path / "cache")
    assert "randomly initialised" in warning and det.config["architecture"] == "convnextv2_atto"
    html = build_demo(det, warning).config["components"]
    assert any("randomly initialised" in str(c.get("props", {}).get("value")) for c in html)


def test_model_id_env_is_used(monkeypatch, tiny_detector_dir):
    monkeypatch.setenv("MODEL_ID", str(tiny_detector_dir))
    det, warning = load_app_detector(None, backend="torch")
    assert warning is None and det.input_size == (32, 32)


# --- over HTTP with gradio_client: every bad input, and the server keeps serving ---------------------------

@pytest.fixture(scope="module")
def server(detector):
    demo = build_demo(detector)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                max_file_size=2 * MAX_BYTES)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    demo.close()


@pytest.mark.parametrize("case", list(odd_image_cases()))
def test_api_answers_or_refuses_clearly(server, detector, tmp_path, case, capfd):
    name, data, error = odd_image_cases()[case]
    path = tmp_path / name
    path.write_bytes(data)
    if error:
        with pytest.raises(Exception, match=error) as info:
            server.predict(handle_file(str(path)), api_name="/predict")
        assert type(info.value).__name__ == "AppError"  # a gr.Error, not a crash
        assert "Traceback" not in capfd.readouterr().err  # a handled bad upload is one log line
    else:
        result = server.predict(handle_file(str(path)), api_name="/predict")
        assert result["label"] in ("real", "fake", "uncertain")
        assert result["fake_probability"] == pytest.approx(detector.predict(read_image(path)).fake_probability,
                                                           abs=1e-5)
        assert set(result["provenance"]) >= {"camera_make", "c2pa_present", "generator_metadata",
                                             "declared_generator"}
        assert set(result["stability"]) == {"jpeg_quality_75", "resized_half", "verdict_holds"}
    # The server is still serving after each of them.
    assert "label" in server.predict(handle_file(str(EXAMPLES_DIR / "real_unsplash_cat.jpg")),
                                     api_name="/predict")


def test_api_lists_named_endpoints_and_batch_answers(server, detector, tmp_path):
    api = server.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(api) == {"/predict", "/predict_batch"}  # the UI's own events are private
    assert [r["label"] for r in api["/predict"]["returns"]] == ["result"]
    assert [r["label"] for r in api["/predict_batch"]["returns"]] == ["results"]
    # Typed: the README's JSON fields, not `Any`.
    returned = api["/predict"]["returns"][0]["python_type"]["type"]
    for field in ("label: str", "fake_probability: float", "verdict_holds: bool", "declared_generator"):
        assert field in returned, returned
    assert "fake_probability: float" in api["/predict_batch"]["returns"][0]["python_type"]["type"]
    good = make_image(tmp_path / "a.jpg", seed=1)
    bad = tmp_path / "b.jpg"
    bad.write_text("nope")
    results = server.predict([handle_file(str(good)), handle_file(str(bad))], 0.5, api_name="/predict_batch")
    assert [r["file"] for r in results] == ["a.jpg", "b.jpg"]
    assert results[0]["fake_probability"] == pytest.approx(detector.predict(read_image(good)).fake_probability,
                                                           abs=1e-5)
    assert results[0]["threshold"] == 0.5 and "not an image" in results[1]["error"]
