"""The app in a real browser: `python app.py --model DIR --port N` in a subprocess, driven by headless Chromium.

Uses Debian's chromium (/usr/bin/chromium, installed by `make test`) through the playwright package; nothing is
downloaded at run time. Without chromium the test fails on CI (CI=true) and is skipped elsewhere.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port, make_image

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT_S = 240  # a first start converts the model: slow on a busy 2-core box


def require_chromium():
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return
    message = (f"Chromium not found at {CHROMIUM}: `make test` installs Debian's chromium package "
               "(apt-get install chromium, as root), or set CHROMIUM=/path/to/chromium.")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def calibrate_so_the_resize_moves_the_verdict(model_dir: Path, tmp_path: Path) -> Path:
    """An image, and a calibration written into model_dir, whose verdict changes after the 0.5x resize but not after
    JPEG quality 75: a threshold between the image's score and its resized score, with a band of zero width (every
    verdict decisive). Scores from ONNX Runtime in fp32; the server's backend agrees to far better than the margin."""
    from modeling.imageio import read_image
    from modeling.inference import Detector

    detector = Detector.from_pretrained(model_dir, backend="onnx")
    best = None
    for seed in range(40):
        path = make_image(tmp_path / f"candidate_{seed}.jpg", seed=seed, size=(160, 120), fake=seed % 2 == 0)
        image = read_image(path)
        prediction = detector.predict(image)
        stability = detector.stability(image, prediction)
        p, jpeg, half = prediction.fake_probability, stability["jpeg_quality_75"], stability["resized_half"]
        threshold = (p + half) / 2
        margin = min(abs(p - threshold), abs(jpeg - threshold)) if (p < threshold) == (jpeg < threshold) else 0
        if best is None or margin > best[0]:
            best = (margin, path, threshold)
    margin, path, threshold = best
    assert margin > 0.002, "no generated image has a resize that moves its score clear of the JPEG one"
    config = json.loads((model_dir / "config.json").read_text())
    config["calibration"] = {**config.get("calibration", {}), "threshold": threshold, "band": [threshold, threshold]}
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture
def app_server(tiny_detector_dir, tmp_path):
    require_chromium()  # before paying for the server
    model_dir = Path(shutil.copytree(tiny_detector_dir, tmp_path / "model"))
    image = calibrate_so_the_resize_moves_the_verdict(model_dir, tmp_path)
    (model_dir / "eval_ood").mkdir()  # what train.evaluation writes; the page's headline reads it
    (model_dir / "eval_ood" / "results.json").write_text(json.dumps({"overall": {
        "n": 200, "recall": 0.4, "roc_auc": 0.7, "confusion_matrix": [[90, 10], [60, 40]]}}))
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", MODEL_ID="")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", str(model_dir),
                             "--port", str(port), "--host", "127.0.0.1",  # the default backend, as users run it
                             "--cache_dir", str(tmp_path / "cache"), "--feedback_dir", str(tmp_path / "feedback")],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not serve {url} within {SERVER_START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield url, image
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_upload_shows_verdict_heatmap_and_provenance(app_server, tmp_path):
    from gradio_client import Client, handle_file
    from playwright.sync_api import expect, sync_playwright

    from modeling.formats import calibration_from
    from modeling.inference import band_at
    from space.verdict_text import VERDICT_TEXT, shown, stability_line

    url, image = app_server
    # What the page must show, from the server's own API on the same file.
    expected = Client(url, verbose=False).predict(handle_file(str(image)), api_name="/predict")
    calibration = calibration_from(json.loads((tmp_path / "model" / "config.json").read_text())["calibration"])
    expected_stability = stability_line(expected, band_at(expected["threshold"], calibration)).replace("**", "")
    screenshot = tmp_path / "app.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            # 1. What is served: the model's name and its headline from results.json, under the title.
            info = page.locator("#model-info")
            expect(info).to_contain_text("Model:")
            expect(info).to_contain_text("scores 40.0% of AI-generated images and 10.0% of real photos at or above")
            expect(info).to_contain_text("never saw in training")
            expect(info).to_contain_text("A demo model, not a production detector")
            # 3. Labelled examples: the truth and source as visible text under each thumbnail, all six in view.
            examples = page.locator("#examples")
            expect(examples.get_by_text("Real photo (Unsplash)").first).to_be_visible()
            expect(examples.get_by_text("AI-generated: SD 2 (photo prompt)")).to_be_visible()
            gallery_box = examples.bounding_box()
            thumbs = examples.locator("img")
            expect(thumbs).to_have_count(6)
            for i in range(6):
                box = thumbs.nth(i).bounding_box()
                assert box["y"] + box["height"] <= gallery_box["y"] + gallery_box["height"] + 1, i

            page.locator("#image-input input[type=file]").set_input_files(str(image))
            verdict = page.locator("#verdict")
            expect(verdict).to_contain_text("Probability AI-generated", timeout=120_000)
            text = verdict.inner_text()
            assert text.splitlines()[0].strip() == VERDICT_TEXT[expected["label"]], text  # the API's verdict
            # 5. Stability beside the verdict, naming the change that moved the score (here the 0.5x resize).
            assert expected_stability in text, (expected_stability, text)
            assert "changes after a 0.5x resize" in text and "after JPEG quality 75 (" not in text, text
            # The threshold as the slider's box shows it, with the same precision.
            box_value = page.locator("#threshold input[type=number]").input_value()
            assert f"threshold {box_value};" in text or f"threshold {box_value})" in text, (box_value, text)
            assert box_value == shown(expected["threshold"])
            expect(page.locator("#provenance")).to_contain_text("Camera (EXIF)")
            expect(page.locator("#heatmap img")).to_be_visible()
            expect(page.locator("#heatmap-legend")).to_contain_text("patch looks AI-generated")
            expect(page.locator("#feedback")).to_contain_text("This verdict is wrong?")

            # Moving the threshold to its maximum re-labels the same score without re-running the model.
            page.locator("#threshold input[type=range]").fill("0.99")
            expect(verdict).to_contain_text("threshold 0.99", timeout=30_000)
            expect(verdict).to_contain_text("Real")
            expect(page.locator("#heatmap-legend")).to_contain_text("99.0% and above")
            page.screenshot(path=str(screenshot), full_page=True)

            # At phone width the verdict comes before the examples.
            page.set_viewport_size({"width": 390, "height": 844})
            assert verdict.bounding_box()["y"] < examples.bounding_box()["y"]
            page.set_viewport_size({"width": 1280, "height": 1100})

            # 2. An example whose metadata declares a generator: that claim comes first, then the pixel verdict.
            page.locator("#examples").get_by_text("AI-generated: SD 1.5 + XMP").click()
            expect(verdict).to_contain_text("The file's metadata says it was made by Stable Diffusion",
                                            timeout=120_000)
            expect(verdict).to_contain_text("Pixel detector:")
            expect(verdict).to_contain_text("easy to strip or forge")
            page.screenshot(path=str(tmp_path / "metadata_example.png"), full_page=True)

            # A bad file gets the app's own message, which stays on the page; no broken image stays in the input.
            bad = tmp_path / "notes.png"
            bad.write_text("a text file renamed to .png\n" * 20)
            page.locator("#image-input button[aria-label='Remove Image']").first.click()
            page.locator("#image-input input[type=file]").set_input_files(str(bad))
            expect(verdict).to_contain_text("This file is not an image we can read", timeout=60_000)
            page.wait_for_timeout(15_000)  # longer than a toast lives
            expect(verdict).to_contain_text("This file is not an image we can read")
            expect(page.locator("#image-input img")).to_have_count(0)
            page.screenshot(path=str(tmp_path / "bad_file.png"), full_page=True)

            # Batch: thumbnails with readable captions and a table with the API's labels, most likely AI-generated
            # first.
            page.get_by_role("tab", name="Batch").click()
            files = [make_image(tmp_path / f"batch_{i}.jpg", seed=i, size=(64, 64), fake=i == 1) for i in range(3)]
            page.locator("input[type=file][multiple]").set_input_files([str(f) for f in files + [bad]])
            page.get_by_role("button", name="Analyse all").click()
            table = page.locator("#batch-table")
            expect(table).to_contain_text("batch_0.jpg", timeout=120_000)
            expect(table).to_contain_text("This file is not an image we can read")
            expect(page.locator("#batch-thumbnails img")).to_have_count(3)
            captions = page.locator("#batch-thumbnails .caption-label")
            expect(captions).to_have_count(3)
            for i in range(3):
                caption = captions.nth(i)
                assert re.fullmatch(r"(real|fake|uncertain) \d+% · batch_\d\.jpg", caption.inner_text().strip())
                assert caption.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), caption.inner_text()
            page.screenshot(path=str(tmp_path / "batch.png"), full_page=True)
        finally:
            browser.close()
    server_log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in server_log and "Warning" not in server_log, server_log[-3000:]
    assert screenshot.stat().st_size > 10_000
    print(f"\nverdict: {text!r}; screenshots: {tmp_path}")
