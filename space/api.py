"""The documented API (README "API"): /predict and /predict_batch, with their JSON typed so `client.view_api()`
lists the fields.

No `from __future__ import annotations` here: gr.api reads the functions' annotations as objects to describe the
return values; as strings they would be listed as `Any`.
"""
from typing import Optional, TypedDict

import gradio as gr
from gradio.data_classes import FileData

from modeling.imageio import ImageReadError
from modeling.inference import Detector, Prediction

from .uploads import Upload, read_or_refuse, read_upload, refusal, uploaded_path

MAX_BATCH_FILES = 64


class Stability(TypedDict):
    jpeg_quality_75: float  # p(fake) after re-encoding as JPEG quality 75
    resized_half: float  # p(fake) after a 0.5x resize
    verdict_holds: bool  # the label is the same for the original and both


class ProvenanceFields(TypedDict):
    camera_make: Optional[str]
    camera_model: Optional[str]
    software: Optional[str]
    c2pa_present: bool
    generator_metadata: list[str]
    declared_generator: Optional[str]  # the generator the file's metadata names, if it declares one


class Result(TypedDict):
    label: str  # "real", "fake" or "uncertain"
    fake_probability: float
    probabilities: dict[str, float]
    threshold: float
    stability: Stability
    provenance: ProvenanceFields


class FileResult(Result, total=False):
    file: str
    error: str  # instead of the other fields, for a file that is not a readable image


def image_result(detector: Detector, upload: Upload, prediction: Prediction) -> Result:
    """What /predict returns for an analysed upload: the verdict, the stability check and the provenance."""
    return {**prediction.as_dict(), "stability": detector.stability(upload.image, prediction),
            "provenance": upload.provenance.as_dict()}


def predict_files(detector: Detector, paths: list[str], threshold: Optional[float] = None
                  ) -> tuple[list[FileResult], list[Upload | None]]:
    """One result per file, in order (/predict's fields plus `file`, or `file` and `error` for a file that is not a
    readable image), and the uploads (None where unreadable) for the caller's thumbnails."""
    paths = [p for p in (paths or []) if p]
    if not paths:
        raise refusal("Please upload one or more images.")
    if len(paths) > MAX_BATCH_FILES:
        raise refusal(f"Please upload at most {MAX_BATCH_FILES} files at once (got {len(paths)}).")
    results, uploads = [], []
    for path in paths:  # one at a time: memory stays bounded for any batch size
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        try:
            upload = read_upload(path)
        except ImageReadError as e:
            results.append({"file": name, "error": str(e)})
            uploads.append(None)
            continue
        prediction = detector.predict(upload.image, threshold)
        results.append({"file": name, **image_result(detector, upload, prediction)})
        uploads.append(upload)
    return results, uploads


def add_api(demo: gr.Blocks, detector: Detector) -> None:
    """Register /predict and /predict_batch on the Blocks being built; every model call shares one slot."""

    def predict(image: FileData) -> Result:
        """One image file -> label, fake_probability, probabilities, threshold, stability, provenance."""
        upload = read_or_refuse(uploaded_path(image))
        return image_result(detector, upload, detector.predict(upload.image))

    def predict_batch(images: list[FileData], threshold: float = round(detector.threshold, 4)) -> list[FileResult]:
        """Image files -> one /predict result each (plus `file`), or `file` and `error` for unreadable ones."""
        return predict_files(detector, [uploaded_path(f) for f in images or []], threshold)[0]

    for fn, output in ((predict, "result"), (predict_batch, "results")):
        dependency = gr.api(fn, api_name=fn.__name__, concurrency_id="model", concurrency_limit=1)
        for block_id in dependency["outputs"]:  # view_api names an output by its label ("1st" by default)
            demo.blocks[block_id].label = output
