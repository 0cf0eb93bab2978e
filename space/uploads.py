"""An uploaded file, read from disk once and decoded once: its bytes (for provenance and feedback), the decoded
image (for the model and the thumbnails) and its metadata signals.

Events take Gradio's raw payload (preprocess=False): gr.Image's own preprocessing would open the upload with PIL
first, so a non-image or a decompression bomb would fail inside Gradio with a generic error. Here nothing touches
the bytes before modeling.imageio does. (Gradio has already checked that the path is inside its upload folder.)
"""
from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder
from PIL import Image

from modeling.imageio import ImageReadError, read_file_bytes, read_image
from modeling.provenance import Provenance, read_provenance

logger = logging.getLogger(__name__)


@dataclass
class Upload:
    path: str
    raw: bytes
    image: Image.Image  # RGB, EXIF orientation applied
    provenance: Provenance


def uploaded_path(payload: dict | FileData | None) -> str | None:
    """The uploaded file's own path, from an event's raw payload; a base64 (pasted) upload is written to Gradio's
    upload folder first."""
    if payload is None:
        return None
    if isinstance(payload, FileData):
        payload = payload.model_dump()
    path, url = payload.get("path"), payload.get("url") or ""
    if path is None and url.startswith("data:"):
        path = Path(get_upload_folder()) / f"upload-{uuid.uuid4().hex}"
        path.write_bytes(base64.b64decode(url.split(",", 1)[1]))
    return str(path) if path else None


def read_upload(path: str) -> Upload:
    """Raises ImageReadError with a message for the visitor."""
    raw = read_file_bytes(path)
    return Upload(path, raw, read_image(raw), read_provenance(raw))


def refusal(message: str) -> gr.Error:
    """An API error for the client, and one line in the log: a handled bad request needs no traceback."""
    logger.info("Refused: %s", message)
    return gr.Error(message, print_exception=False)


def read_or_refuse(path: str | None) -> Upload:
    """For the API: the upload, or a gr.Error saying why not."""
    if not path:
        raise refusal("Please upload an image first.")
    try:
        return read_upload(path)
    except ImageReadError as e:
        raise refusal(str(e)) from None
