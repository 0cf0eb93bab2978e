"""The app in a real browser: `python app.py --model DIR --port N` in a subprocess, driven by headless Chromium.

Uses Debian's chromium (/usr/bin/chromium, installed by `make test`) through the playwright package; nothing is
downloaded at run time. Without chromium the test fails on CI (CI=true) and is skipped elsewhere.
"""
import json
import os
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


@pytest.fixture
def app_server(tiny_detector_dir, tmp_path):
    require_chromium()  # before paying for the server
    model_dir = Path(shutil.copytree(tiny_detector_dir, tmp_path / "model"))
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
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_upload_shows_verdict_heatmap_and_provenance(app_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    image = make_image(tmp_path / "upload.jpg", seed=7, size=(160, 120))
    screenshot = tmp_path / "app.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(app_server, wait_until="domcontentloaded")
            # 1. What is served: the model's name and its headline from results.json, under the title.
            info = page.locator("#model-info")
            expect(info).to_contain_text("Model:")
            expect(info).to_contain_text("catches 40.0% of AI-generated images at 10.0% false alarms")
            expect(info).to_contain_text("never saw in training")
            expect(info).to_contain_text("A demo model, not a production detector")
            # 3. Labelled examples: the truth and source as visible text under each thumbnail.
            examples = page.locator("#examples")
            expect(examples.get_by_text("Real photo (Unsplash)").first).to_be_visible()
            expect(examples.get_by_text("AI-generated: SD 2 (photo prompt)")).to_be_visible()

            page.locator("#image-input input[type=file]").set_input_files(str(image))
            verdict = page.locator("#verdict")
            expect(verdict).to_contain_text("Probability AI-generated", timeout=120_000)
            text = verdict.inner_text()
            assert any(word in text for word in ("Real", "AI-generated", "Uncertain")), text
            # 5. Stability beside the verdict.
            expect(verdict).to_contain_text("after JPEG quality 75")
            assert "verdict holds" in text or "verdict changes under re-compression" in text, text
            expect(page.locator("#provenance")).to_contain_text("Camera (EXIF)")
            expect(page.locator("#heatmap img")).to_be_visible()
            expect(page.locator("#heatmap-legend")).to_contain_text("patch looks AI-generated")
            expect(page.locator("#feedback")).to_contain_text("This verdict is wrong?")

            # Moving the threshold to its maximum re-labels the same score without re-running the model.
            page.locator("input[type=range]").first.fill("0.99")
            expect(verdict).to_contain_text("threshold 0.99", timeout=30_000)
            expect(verdict).to_contain_text("Real")
            page.screenshot(path=str(screenshot), full_page=True)

            # 2. An example whose metadata declares a generator: that claim comes first, then the pixel verdict.
            page.locator("#examples").get_by_text("AI-generated: SD 1.5 + XMP").click()
            expect(verdict).to_contain_text("The file's metadata says it was made by Stable Diffusion",
                                            timeout=120_000)
            expect(verdict).to_contain_text("Pixel detector:")
            expect(verdict).to_contain_text("easy to strip or forge")
            page.screenshot(path=str(tmp_path / "metadata_example.png"), full_page=True)

            # A bad file gets the app's own message, and the app keeps serving.
            bad = tmp_path / "notes.png"
            bad.write_text("a text file renamed to .png\n" * 20)
            page.locator("#image-input button[aria-label='Remove Image']").first.click()
            page.locator("#image-input input[type=file]").set_input_files(str(bad))
            expect(page.get_by_text("This file is not an image we can read").first).to_be_visible(timeout=60_000)
            page.screenshot(path=str(tmp_path / "bad_file.png"), full_page=True)

            # Batch: thumbnails and a table with the API's labels, most likely AI-generated first.
            page.get_by_role("tab", name="Batch").click()
            files = [make_image(tmp_path / f"batch_{i}.jpg", seed=i, size=(64, 64), fake=i == 1) for i in range(3)]
            page.locator("input[type=file][multiple]").set_input_files([str(f) for f in files + [bad]])
            page.get_by_role("button", name="Analyse all").click()
            table = page.locator("#batch-table")
            expect(table).to_contain_text("batch_0.jpg", timeout=120_000)
            expect(table).to_contain_text("This file is not an image we can read")
            expect(page.locator("#batch-thumbnails img")).to_have_count(3)
            page.screenshot(path=str(tmp_path / "batch.png"), full_page=True)
        finally:
            browser.close()
    server_log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in server_log and "Warning" not in server_log, server_log[-3000:]
    assert screenshot.stat().st_size > 10_000
    print(f"\nverdict: {text!r}; screenshots: {tmp_path}")
