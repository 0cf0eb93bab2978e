"""Serving-time inference: one loaded detector shared by every request, calibrated p(fake), a verdict with an
"uncertain" band, a stability check and a per-patch map.

Everything about the model comes from its folder: config.json (preprocessing, labels, calibration: the
temperature is already folded into the classifier, the threshold is read here), training_config.json (the crop
size it was trained on, used by the patch map). The network runs on one of modeling/backends.py's runtimes;
preprocessing is timm's eval transform written with PIL and numpy (equal to timm's, tested), so serving from the
cached OpenVINO model needs neither torch nor transformers.

The patch map: the model's input crop is cut into overlapping windows of the training crop size (stride a
quarter window) and each window is scored on its own; a pixel's value is the mean p(fake) of the windows that
cover it. It says "this part, seen alone, looks AI-generated / real" on the model's own scale and threshold.
Against Grad-CAM of the last stage, benchmarks/app_heatmap.py measures which map localises pasted-in generated
regions and agrees with the verdict (figures in benchmarks/README.md).
"""
from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .backends import BACKENDS, load_backend
from .formats import RESULTS_PATTERNS, calibration_from, read_training_record

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "Detector", "PatchMap", "Prediction", "heatmap_overlay", "verdict"]

UNCERTAIN_BAND = 0.1  # |p(fake) - threshold| below this is reported as "uncertain"
BATCH_CHUNK = 8  # images per backend call in predict_batch: bounds memory whatever the batch size
STABILITY_JPEG_QUALITY = 75
STABILITY_SCALE = 0.5
MIN_WINDOW = 32  # ConvNeXt's total stride: a smaller window has no cell left in the last stage
_INTERPOLATION = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                  "lanczos": Image.LANCZOS}


@dataclass
class Prediction:
    fake_probability: float
    probabilities: dict[str, float]
    label: str  # "real", "fake" or "uncertain"
    threshold: float

    def as_dict(self) -> dict:
        return {"label": self.label, "fake_probability": self.fake_probability,
                "probabilities": self.probabilities, "threshold": self.threshold}


@dataclass
class PatchMap:
    """p(fake) of each window (rows x cols) over the model's input crop, and where that crop lies in the image."""
    probabilities: np.ndarray
    window: int
    stride: int
    crop_size: tuple[int, int]  # (height, width) of the model's input
    crop_box: tuple[float, float, float, float]  # left, top, right, bottom in the input image's pixels

    def pixel_map(self) -> np.ndarray:
        """(height, width) of the model's input: the mean p(fake) of the windows covering each pixel."""
        total, count = np.zeros(self.crop_size), np.zeros(self.crop_size)
        for (row, col), p in np.ndenumerate(self.probabilities):
            y, x = row * self.stride, col * self.stride
            total[y:y + self.window, x:x + self.window] += p
            count[y:y + self.window, x:x + self.window] += 1
        return total / np.maximum(count, 1)


def verdict(fake_probability: float, threshold: float, band: float = UNCERTAIN_BAND) -> str:
    """'fake' at or above threshold + band, 'real' below threshold - band, 'uncertain' in between."""
    if fake_probability >= threshold + band or (fake_probability >= threshold and threshold + band > 1):
        return "fake"
    if fake_probability < threshold - band or (fake_probability < threshold and threshold - band < 0):
        return "real"
    return "uncertain"


def training_crop_size(model_dir: Path | None, input_size: int) -> int:
    """The crop size the model was trained on (training_config.json's augmentation profiles), else half the input;
    at least MIN_WINDOW, at most the input."""
    try:
        record = read_training_record(model_dir) if model_dir else None
    except (OSError, ValueError, TypeError):  # a damaged record costs the map its window size, not the model
        record = None
    sizes = record.crop_sizes() if record else []
    return min(max(min(sizes, default=input_size // 2), MIN_WINDOW), input_size)


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """A local folder, or a Hub repo downloaded to the local cache (weights, config and evaluation results)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(name_or_path), allow_patterns=[
        "*.json", "*.safetensors", *RESULTS_PATTERNS, "README.md"]))


class Detector:
    """A loaded detector for serving. Build once, share between threads.

    runtime: the network as modeling/backends.py loads it (load_backend), a callable from pixel values to logits;
    `backend` is its name. from_pretrained and from_model take that name ("auto", "openvino", "compile", "onnx" or
    "torch") and load the runtime.
    """

    def __init__(self, runtime, config: dict, model_dir: Path | None = None, name: str | None = None,
                 uncertain_band: float = UNCERTAIN_BAND):
        self.runtime, self.config, self.model_dir = runtime, config, model_dir
        self.name = name or (model_dir.name if model_dir else config.get("architecture", "model"))
        self.calibration = calibration_from(config.get("calibration"))
        self.threshold = float(self.calibration["threshold"])
        self.uncertain_band = uncertain_band
        self.labels = list(config.get("label_names") or
                           [config["id2label"][k] for k in sorted(config["id2label"], key=int)])
        self.fake_index = self.labels.index("fake") if "fake" in self.labels else len(self.labels) - 1
        cfg = config["pretrained_cfg"]
        if cfg.get("crop_mode", "center") != "center":
            raise ValueError(f"only crop_mode='center' is served, not {cfg['crop_mode']!r}")
        self.input_size = tuple(cfg["input_size"][1:])  # (height, width)
        self.crop_pct = cfg.get("crop_pct") or 0.875  # timm's default
        self.interpolation = _INTERPOLATION[cfg.get("interpolation", "bilinear")]
        self.mean = np.asarray(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=np.float32)[:, None, None]
        self.std = np.asarray(cfg.get("std", (0.229, 0.224, 0.225)), dtype=np.float32)[:, None, None]
        self.window = training_crop_size(model_dir, min(self.input_size))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, backend: str = "auto", cache_dir: str | Path | None = None,
                        threads: int | None = None, **kwargs) -> "Detector":
        """A local folder saved with save_detector, or a Hub repo id (safetensors only). cache_dir: where the
        converted OpenVINO model is kept between starts (None: converted at every start)."""
        model_dir = resolve_model_dir(name_or_path)
        config = json.loads((model_dir / "config.json").read_text())
        runtime = load_backend(config, backend, model_dir=model_dir, cache_dir=cache_dir, threads=threads)
        name = str(name_or_path) if not Path(name_or_path).is_dir() else model_dir.resolve().name
        return cls(runtime, config, model_dir, name=name, **kwargs)

    @classmethod
    def from_model(cls, model, backend: str = "auto", threads: int | None = None, **kwargs) -> "Detector":
        """A TimmWrapperForImageClassification already in memory (nothing is cached)."""
        config = model.config.to_dict()
        return cls(load_backend(config, backend, net=model.timm_model, threads=threads), config, **kwargs)

    @property
    def backend(self) -> str:
        return self.runtime.name

    def crop_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """Where the eval transform (resize the short side, centre crop) takes its crop, in input pixels."""
        (width, height), (crop_h, crop_w) = size, self.input_size
        scale = math.floor(crop_h / self.crop_pct) / min(width, height)
        box_w, box_h = min(width, crop_w / scale), min(height, crop_h / scale)
        left, top = (width - box_w) / 2, (height - box_h) / 2
        return left, top, left + box_w, top + box_h

    def preprocess(self, images: list[Image.Image]) -> np.ndarray:
        """timm's eval transform (crop_mode="center"): the short side to floor(size / crop_pct), as torchvision's
        Resize(int) computes it, a centre crop, then scaling to [0, 1] and normalising."""
        crop_h, crop_w = self.input_size
        short = math.floor(crop_h / self.crop_pct)
        out = np.empty((len(images), 3, crop_h, crop_w), dtype=np.float32)
        for i, img in enumerate(images):
            w, h = img.size
            size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
            img = img.convert("RGB").resize(size, self.interpolation) if size != img.size else img.convert("RGB")
            top, left = int(round((size[1] - crop_h) / 2.0)), int(round((size[0] - crop_w) / 2.0))
            pixels = np.asarray(img.crop((left, top, left + crop_w, top + crop_h)), dtype=np.float32) / 255.0
            out[i] = (pixels.transpose(2, 0, 1) - self.mean) / self.std
        return out

    def _probabilities(self, pixel_values: np.ndarray) -> np.ndarray:
        logits = self.runtime(pixel_values).astype(np.float64)
        exp = np.exp(logits - logits.max(-1, keepdims=True))
        return exp / exp.sum(-1, keepdims=True)

    def _prediction(self, p: np.ndarray, threshold: float) -> Prediction:
        p_fake = float(p[self.fake_index])
        return Prediction(p_fake, {name: float(v) for name, v in zip(self.labels, p)},
                          verdict(p_fake, threshold, self.uncertain_band), threshold)

    def predict_batch(self, images: list[Image.Image], threshold: float | None = None) -> list[Prediction]:
        """RGB PIL images (see modeling.imageio.read_image) -> one Prediction each."""
        threshold = self.threshold if threshold is None else float(threshold)
        out = []
        for start in range(0, len(images), BATCH_CHUNK):
            probs = self._probabilities(self.preprocess(images[start:start + BATCH_CHUNK]))
            out += [self._prediction(p, threshold) for p in probs]
        return out

    def predict(self, image: Image.Image, threshold: float | None = None) -> Prediction:
        return self.predict_batch([image], threshold)[0]

    def stability(self, image: Image.Image, prediction: Prediction) -> dict:
        """p(fake) after what re-uploading often does (JPEG quality 75; a 0.5x resize) and whether the verdict at
        prediction's threshold stays the same under both."""
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=STABILITY_JPEG_QUALITY)
        small = (max(1, round(image.width * STABILITY_SCALE)), max(1, round(image.height * STABILITY_SCALE)))
        jpeg, resized = self.predict_batch([Image.open(buffer).convert("RGB"), image.resize(small, Image.BICUBIC)],
                                           prediction.threshold)
        return {"jpeg_quality_75": jpeg.fake_probability, "resized_half": resized.fake_probability,
                "verdict_holds": jpeg.label == resized.label == prediction.label}

    def patch_map(self, image: Image.Image) -> PatchMap:
        """p(fake) of every window of the training crop size over the model's input crop (see the module doc)."""
        pixels = self.preprocess([image])[0]
        height, width = self.input_size
        window = self.window
        stride = max(1, window // 4)
        rows, cols = (height - window) // stride + 1, (width - window) // stride + 1
        windows = np.stack([pixels[:, r * stride:r * stride + window, c * stride:c * stride + window]
                            for r in range(rows) for c in range(cols)])
        probs = np.concatenate([self._probabilities(windows[i:i + 32]) for i in range(0, len(windows), 32)])
        return PatchMap(probs[:, self.fake_index].reshape(rows, cols), window, stride, (height, width),
                        self.crop_box(image.size))


def heatmap_overlay(image: Image.Image, patches: PatchMap, threshold: float, alpha: float = 0.6,
                    max_side: int | None = 1024) -> Image.Image:
    """The image (shrunk to max_side) with the patch map painted on the part the model saw: red where a patch alone
    scores at or above the threshold, blue below, stronger the further from it; outside the model's crop, dimmed."""
    base = image.convert("RGB")
    if max_side and max(base.size) > max_side:  # a 16 MP float overlay would cost ~200 MB per request
        base.thumbnail((max_side, max_side), Image.BILINEAR)
    scale = base.width / image.width
    left, top, right, bottom = (round(v * scale) for v in patches.crop_box)
    size = (max(1, right - left), max(1, bottom - top))
    p = np.asarray(Image.fromarray(patches.pixel_map().astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    # Distance from the threshold on each side, scaled to [-1, 1]: full colour at p = 0 or p = 1.
    below, above = max(threshold, 1e-6), max(1 - threshold, 1e-6)
    signed = np.where(p >= threshold, (p - threshold) / above, (p - threshold) / below)
    colour = np.zeros((*p.shape, 3), dtype=np.float32)
    colour[..., 0] = np.clip(signed, 0, 1) * 255  # red: this patch alone looks AI-generated
    colour[..., 2] = np.clip(-signed, 0, 1) * 255  # blue: it looks like a photograph
    strength = (np.abs(signed) * alpha)[..., None]
    out = np.asarray(base, dtype=np.float32) * 0.45  # dim everything, then restore the crop
    region = np.asarray(base.crop((left, top, left + size[0], top + size[1])), dtype=np.float32)
    out[top:top + size[1], left:left + size[0]] = region * (1 - strength) + colour * strength
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
