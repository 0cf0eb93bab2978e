"""'This verdict is wrong': the analysed file's original bytes under <feedback_dir>/<label>/<sha256>.<ext> and a row
in metadata.csv, the `imagefolder` layout train/run.py reads as a source. The same file is stored once."""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import threading
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from .uploads import refusal

logger = logging.getLogger(__name__)

FEEDBACK_COLUMNS = ["file_name", "label", "source", "generator", "model", "model_fake_probability", "reported_at"]
FEEDBACK_NOTE = ("**What is stored**: this image file exactly as uploaded (its bytes, with any metadata inside it), "
                 "the label you choose, the model's score and the time, in a folder on this server, to retrain the "
                 "detector. Not your name, address or anything else. Nothing is stored unless you press the button.")
_FORMAT_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
                  "TIFF": ".tif", "AVIF": ".avif"}
_lock = threading.Lock()  # one writer of metadata.csv at a time


def feedback_file_name(raw: bytes, label: str) -> str:
    """<label>/<sha256 of the bytes>.<ext>: the README's name, and the same file always gets the same one."""
    with Image.open(io.BytesIO(raw)) as img:  # the header only: the format names the suffix
        suffix = _FORMAT_SUFFIX.get(img.format, ".img")
    return f"{label}/{hashlib.sha256(raw).hexdigest()}{suffix}"


def save_feedback(feedback_dir: Path, state: dict | None, label: str, model: str) -> str:
    """state: the single-image tab's analysis (the upload's path and the model's score). The bytes are the file as
    uploaded, read when the visitor asks to store them."""
    if not state or "path" not in state:
        raise refusal("Analyse an image first.")
    if label not in ("real", "fake"):
        raise refusal("Choose what the image really is.")
    raw = Path(state["path"]).read_bytes()
    file_name = feedback_file_name(raw, label)
    with _lock:
        metadata = feedback_dir / "metadata.csv"
        if metadata.is_file():
            with metadata.open(newline="") as f:
                if any(row["file_name"].split("/")[-1] == file_name.split("/")[-1] for row in csv.DictReader(f)):
                    return "Thank you: this image was already reported."
        (feedback_dir / label).mkdir(parents=True, exist_ok=True)
        (feedback_dir / file_name).write_bytes(raw)
        new = not metadata.is_file()
        with metadata.open("a", newline="") as f:
            writer = csv.DictWriter(f, FEEDBACK_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({"file_name": file_name, "label": label, "source": "feedback", "generator": "",
                             "model": model, "model_fake_probability": f"{state['fake_probability']:.4f}",
                             "reported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    logger.info("Feedback stored: %s", file_name)
    return f"Thank you: stored as *{'AI-generated' if label == 'fake' else 'real photo'}* for retraining."
