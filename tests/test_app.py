"""The Gradio app and its inference path: verdicts, thresholds, Grad-CAM, provenance, bad input over the API."""
import csv
import socket

import gradio as gr
import numpy as np
import pytest
import torch
from gradio.data_classes import FileData
from gradio_client import Client, handle_file
from PIL import Image, PngImagePlugin
from transformers import pipeline

import app
from conftest import TINY_ARCH, encode_image, make_image, odd_image_cases
from modeling import build_detector, save_detector, set_calibration
from modeling.imageio import read_image
from modeling.inference import (Detector, _int8_weights, cpu_has_native_bf16, heatmap_overlay, to_openvino,
                                verdict)
from modeling.provenance import read_provenance


@pytest.fixture(scope="module")
def detector(tiny_detector_dir):
    # ONNX Runtime: the app's path on CPUs without native bf16. The compiled bf16 path (the default where the CPU
    # has native bf16) costs ~45 s of compiling, so it has its own slow test below.
    return Detector.from_pretrained(tiny_detector_dir, backend="onnx")


@pytest.fixture(scope="module")
def detector_dir_64(tmp_path_factory):
    """A random atto at 64 px: its last stage is a 2x2 grid, the smallest on which Grad-CAM can point anywhere."""
    folder = tmp_path_factory.mktemp("detector_64")
    save_detector(build_detector(TINY_ARCH, pretrained=False, image_size=64), folder)
    return folder


@pytest.fixture
def photo(tmp_path):
    return make_image(tmp_path / "photo.jpg", seed=3, size=(80, 60))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- inference ---------------------------------------------------------------------------------------------

def test_fast_path_matches_eager_pipeline(tiny_detector_dir, detector, tmp_path):
    assert detector.backend == "onnxruntime"
    torch_detector = Detector.from_pretrained(tiny_detector_dir, backend="torch")
    clf = pipeline("image-classification", model=str(tiny_detector_dir))
    for seed in range(4):
        path = make_image(tmp_path / f"{seed}.jpg", seed=seed, size=(50 + 10 * seed, 70), fake=seed % 2 == 0)
        eager = {o["label"]: o["score"] for o in clf(str(path), top_k=None)}
        fast = detector.predict(read_image(path))
        assert fast.fake_probability == pytest.approx(eager["fake"], abs=1e-5)
        assert fast.probabilities["real"] == pytest.approx(eager["real"], abs=1e-5)
        assert torch_detector.predict(read_image(path)).fake_probability == pytest.approx(eager["fake"], abs=1e-5)


def assert_close_to_eager(det: Detector, model_dir, tmp_path, tolerance=0.01):
    """det's p(fake) within tolerance of eager fp32 pipeline() on six images, with a Grad-CAM for each."""
    clf = pipeline("image-classification", model=str(model_dir))
    images = [make_image(tmp_path / f"{i}.jpg", seed=i, size=(96, 80), fake=i % 2 == 0) for i in range(6)]
    predictions = det.predict_batch([read_image(p) for p in images], with_cam=True)
    for path, pred in zip(images, predictions):
        eager = {o["label"]: o["score"] for o in clf(str(path), top_k=None)}
        assert pred.fake_probability == pytest.approx(eager["fake"], abs=tolerance)
        assert pred.cam.shape == (2, 2) and np.abs(pred.cam).max() == pytest.approx(1.0)


def test_gradcam_on_a_one_cell_grid_is_blank_not_noise(tiny_detector_dir, tmp_path):
    # At 32 px the last stage is 1x1, and the head's LayerNorm makes Grad-CAM there zero up to rounding: the
    # overlay must not blow that rounding up to a full-strength colour.
    det = Detector.from_pretrained(tiny_detector_dir, backend="torch")
    for seed in range(4):
        pred = det.predict(read_image(make_image(tmp_path / f"{seed}.jpg", seed=seed, size=(64, 48))), with_cam=True)
        assert pred.cam.shape == (1, 1) and abs(pred.cam).max() < 0.05


@pytest.mark.slow
def test_compiled_bf16_path_stays_within_tolerance(detector_dir_64, tmp_path):
    assert_close_to_eager(Detector.from_pretrained(detector_dir_64, backend="compile"), detector_dir_64, tmp_path)


def test_openvino_path_stays_within_tolerance(detector_dir_64, tmp_path):
    """The app's default path on CPU: bf16 + int8 where the CPU has native bf16 (as here), else f32."""
    det = Detector.from_pretrained(detector_dir_64, backend="openvino")
    assert det.backend == ("openvino+bf16+int8" if cpu_has_native_bf16() else "openvino")
    assert_close_to_eager(det, detector_dir_64, tmp_path)


def test_int8_weights_leave_the_last_stage_alone():
    import openvino as ov

    net = build_detector(TINY_ARCH, pretrained=False, image_size=32).timm_model.eval()
    int8 = [op.get_friendly_name() for op in _int8_weights(to_openvino(net, (3, 32, 32)), net).get_ops()
            if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    stages = {name.split("stages.")[1].split(".")[0] for name in int8 if "stages." in name}
    assert stages == {str(i) for i in range(len(net.stages) - 1)}
    assert any("mlp.fc1" in name for name in int8)


def test_content_blind_model_runs_openvino_in_f32_exactly(tmp_path):
    model = build_detector(TINY_ARCH, pretrained=False, image_size=32, input_filter="npr")
    det = Detector(model, backend="auto")
    assert det.backend == "openvino"  # never bf16: it would round away the pixel differences the stem reads
    ref = Detector(model, backend="torch")
    for seed in range(3):
        image = read_image(make_image(tmp_path / f"{seed}.jpg", seed=seed, size=(40, 40)))
        assert det.predict(image).fake_probability == pytest.approx(ref.predict(image).fake_probability, abs=1e-5)


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
def test_verdict_band(p, threshold, expected):
    assert verdict(p, threshold, band=0.1) == expected


def test_threshold_comes_from_calibration(tmp_path):
    model = build_detector(TINY_ARCH, pretrained=False, image_size=32)
    set_calibration(model, threshold=0.73)
    det = Detector.from_pretrained(save_detector(model, tmp_path / "m"), backend="torch")
    assert det.threshold == 0.73
    demo = app.build_demo(det)
    sliders = [c for c in demo.blocks.values() if isinstance(c, gr.Slider)]
    assert sliders and all(s.value == 0.73 for s in sliders)


def test_gradcam_equals_hooks_on_last_stage(photo):
    """The hook-free Grad-CAM (ONNX backbone + PyTorch head) must equal the textbook one: hooks on
    timm_model.stages[-1] of the eager fp32 model."""
    det = Detector(build_detector(TINY_ARCH, pretrained=False, image_size=96), backend="onnx")
    image = read_image(photo)
    ref_model = det.net  # the ONNX backend leaves the PyTorch module as it was
    acts = {}
    handle = ref_model.stages[-1].register_forward_hook(lambda m, i, out: acts.update(a=out))
    try:
        logits = ref_model(det.preprocess([image]))
    finally:
        handle.remove()
    log_odds = logits[0, 1] - logits[0, 0]  # real=0, fake=1
    (grads,) = torch.autograd.grad(log_odds, acts["a"])
    ref = (grads.mean((2, 3), keepdim=True) * acts["a"]).sum(1)[0].detach()
    ref = (ref / ref.abs().max()).numpy()
    cam = det.predict(image, with_cam=True).cam
    assert cam.shape == ref.shape == (3, 3)  # 96 px / stride 32
    np.testing.assert_allclose(cam, ref, atol=1e-3)
    assert np.abs(cam).max() == pytest.approx(1.0)


def test_heatmap_overlay_dims_outside_the_crop(detector, tmp_path):
    image = Image.new("RGB", (200, 100), (200, 200, 200))
    pred = detector.predict(image, with_cam=True)
    left, top, right, bottom = pred.crop_box
    side = 32 * 100 / 36  # short side 100 -> 36 px, centre crop 32 px
    assert (left, top, right, bottom) == pytest.approx((100 - side / 2, 50 - side / 2, 100 + side / 2, 50 + side / 2))
    overlay = np.asarray(heatmap_overlay(image, pred))
    assert overlay.shape == (100, 200, 3)
    assert overlay[50, 5].max() < 100  # outside the centre crop: dimmed
    big = Image.new("RGB", (3000, 1500))
    assert heatmap_overlay(big, detector.predict(big, with_cam=True), max_side=512).size == (512, 256)


# --- provenance --------------------------------------------------------------------------------------------

def test_provenance_signals():
    img = Image.new("RGB", (8, 8))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle, Steps: 20, Sampler: Euler a, Model: sd15")
    assert "PNG text chunk 'parameters'" in read_provenance(encode_image(img, "PNG", pnginfo=info)).markdown()

    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "EOS R5", "Adobe Photoshop 25.0"
    prov = read_provenance(encode_image(img, "JPEG", exif=exif))
    assert (prov.camera_make, prov.camera_model, prov.software) == ("Canon", "EOS R5", "Adobe Photoshop 25.0")
    assert prov.generator_metadata == [] and not prov.c2pa

    exif[0x0131] = "Midjourney v6"
    assert "EXIF Software names a generator" in read_provenance(encode_image(img, "JPEG", exif=exif)).markdown()

    jpeg = encode_image(img, "JPEG")
    jumbf = b"JP\x00\x01\x00\x00\x00\x01" + b"\x00\x00\x00\x20jumb\x00\x00\x00\x18jumdc2pa"
    app11 = b"\xff\xeb" + (len(jumbf) + 2).to_bytes(2, "big") + jumbf
    assert read_provenance(jpeg[:2] + app11 + jpeg[2:]).c2pa

    assert read_provenance(b"not an image").as_dict()["generator_metadata"] == []


def test_example_images_and_their_licenses():
    files = app._examples(app.EXAMPLES_DIR)
    assert len(files) >= 4
    assert sum(p.stat().st_size for p in app.EXAMPLES_DIR.iterdir()) < 300_000
    licenses = (app.EXAMPLES_DIR / "LICENSES.md").read_text()
    for (path,) in files:
        name = path.rsplit("/", 1)[-1]
        assert name in licenses
        assert name.startswith(("real_", "fake_"))
        assert read_image(path).size == (256, 256)
    xmp = read_provenance((app.EXAMPLES_DIR / "fake_sd15_town_with_xmp.jpg").read_bytes())
    assert any("DigitalSourceType" in s for s in xmp.generator_metadata)


# --- the UI's functions, without a server ------------------------------------------------------------------

def test_image_input_hands_over_the_upload_untouched(photo, tmp_path):
    component = app.image_file_input()
    assert component.preprocess(FileData(path=str(photo), orig_name="photo.jpg")) == str(photo)
    assert component.preprocess(None) is None
    bad = tmp_path / "text.png"
    bad.write_text("no image")  # gr.Image's own preprocessing would raise inside Gradio here
    assert component.preprocess(FileData(path=str(bad), orig_name="text.png")) == str(bad)
    assert not (app.HERE / "app.pyi").exists()  # no Gradio stub file written next to the app


def test_analyse_and_relabel(detector, photo):
    verdict_md, probs, image, overlay, provenance_md, p_fake = app.analyse(detector, str(photo), 0.5)
    assert probs["fake"] == pytest.approx(p_fake) and probs["real"] == pytest.approx(1 - p_fake, abs=1e-6)
    assert image.size == overlay.size == (80, 60)
    assert "Camera (EXIF):** none recorded" in provenance_md
    assert f"{p_fake:.1%}" in verdict_md
    assert "## AI-generated" in app.relabel(detector, p_fake, threshold=0.01)
    assert "## Real" in app.relabel(detector, p_fake, threshold=0.99)
    assert app.analyse(detector, None, 0.5)[0] == ""  # the input was cleared


def test_batch_keeps_order_reports_bad_files_and_writes_csv(detector, tmp_path):
    good = [make_image(tmp_path / f"g{i}.jpg", seed=i) for i in range(9)]
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    paths = [str(p) for p in good[:4] + [bad] + good[4:]]
    rows, csv_path = app.analyse_batch(detector, paths, 0.5, tmp_path / "csv")
    assert [r[0] for r in rows] == [p.rsplit("/", 1)[-1] for p in paths]
    assert rows[4][1] == "error" and "not an image" in rows[4][-1]
    with open(csv_path) as f:
        table = list(csv.reader(f))
    assert table[0] == app.BATCH_COLUMNS and len(table) == 11
    expected = detector.predict(read_image(good[0])).fake_probability
    assert float(table[1][2]) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(gr.Error, match="at most"):
        app.analyse_batch(detector, paths * 10, 0.5, tmp_path / "csv")


def test_random_model_fallback_warns(monkeypatch, tmp_path):
    monkeypatch.delenv("MODEL_ID", raising=False)
    monkeypatch.setattr(app, "DEFAULT_MODEL_DIR", tmp_path / "missing")
    det, warning = app.load_app_detector(None, backend="torch")
    assert "randomly initialised" in warning and det.net.default_cfg["architecture"] == "convnextv2_atto"
    html = app.build_demo(det, warning).config["components"]
    assert any("randomly initialised" in str(c.get("props", {}).get("value")) for c in html)


def test_model_id_env_is_used(monkeypatch, tiny_detector_dir):
    monkeypatch.setenv("MODEL_ID", str(tiny_detector_dir))
    det, warning = app.load_app_detector(None, backend="torch")
    assert warning is None and det.data_config["input_size"] == (3, 32, 32)


# --- over HTTP with gradio_client: every bad input, and the server keeps serving ---------------------------

@pytest.fixture(scope="module")
def server(detector):
    demo = app.build_demo(detector)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                max_file_size=2 * app.MAX_BYTES)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    demo.close()


@pytest.mark.parametrize("case", list(odd_image_cases()))
def test_api_answers_or_refuses_clearly(server, detector, tmp_path, case):
    name, data, error = odd_image_cases()[case]
    path = tmp_path / name
    path.write_bytes(data)
    if error:
        with pytest.raises(Exception, match=error) as info:
            server.predict(handle_file(str(path)), api_name="/predict")
        assert type(info.value).__name__ == "AppError"  # a gr.Error, not a crash
    else:
        result = server.predict(handle_file(str(path)), api_name="/predict")
        assert result["label"] in ("real", "fake", "uncertain")
        assert result["fake_probability"] == pytest.approx(detector.predict(read_image(path)).fake_probability,
                                                           abs=1e-5)
        assert set(result["provenance"]) >= {"camera_make", "c2pa_present", "generator_metadata"}
    # The server is still serving after each of them.
    assert "label" in server.predict(handle_file(str(app.EXAMPLES_DIR / "real_unsplash_cat.jpg")),
                                     api_name="/predict")


def test_api_lists_predict(server):
    assert "/predict" in server.view_api(print_info=False, return_format="dict")["named_endpoints"]
