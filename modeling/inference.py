"""Serving-time inference: one loaded detector shared by every request, calibrated p(fake), a verdict with an
"uncertain" band, a stability check and a per-patch map.

Everything about the model comes from its folder: config.json (preprocessing, labels, calibration: the
temperature is already folded into the classifier, the threshold and the verdict band are read here),
training_config.json (the crop size it was trained on, the patch map's window). The network runs on one of
modeling/backends.py's runtimes; preprocessing is timm's eval transform written with PIL and numpy (equal to
timm's, tested), so serving from the cached OpenVINO model needs neither torch nor transformers.

The verdict band: "AI-generated" at or above its upper edge, "Real" below its lower edge, "Uncertain" in between.
A calibrated model stores the band fitted on its calibration folder (config.calibration["band"], see
train/evaluation/calibration.py); without one the band is the threshold +-UNCERTAIN_BAND. When the threshold moves
(the app's slider), the band moves with it and keeps its distances below and above the threshold; an edge that
would leave [0, 1] collapses onto the threshold, so every score keeps a side.

The patch map comes from the verdict's own forward pass (modeling/patches.py): the head applied to the last
stage's cells under each window of the training crop size.

A model whose config holds a `scoring` (modeling/formats.py) reads native pixels instead: grid x grid crops of the
unresized image (modeling/views.py, the same crops the evaluation harness and calibration score), logits averaged.
Its patch map is then each crop's own score, painted over the part of the image around that crop.
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
from .formats import RESULTS_PATTERNS, calibration_from, scoring_from
from .patches import FEATURE_STRIDE, PatchMap, grid_shape, training_crop_size, window_cells
from .views import native_crops

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "Detector", "PatchMap", "Prediction", "band_at", "heatmap_overlay", "verdict"]

UNCERTAIN_BAND = 0.1  # a model without a fitted band: |p(fake) - threshold| below this is "uncertain"
BATCH_CHUNK = 8  # images per backend call in predict_batch: bounds memory whatever the batch size
STABILITY_JPEG_QUALITY = 75
STABILITY_SCALE = 0.5
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


def band_at(threshold: float, calibration: dict | None = None) -> tuple[float, float]:
    """The verdict band (low, high) at `threshold`: the calibration's fitted band keeping its distances from the
    calibrated threshold, else threshold +- UNCERTAIN_BAND (see the module doc)."""
    stored = (calibration or {}).get("band")
    if stored and threshold == calibration["threshold"]:
        return float(stored[0]), float(stored[1])  # exactly as fitted, with no rounding from the offsets
    if stored:
        below, above = calibration["threshold"] - stored[0], stored[1] - calibration["threshold"]
    else:
        below = above = UNCERTAIN_BAND
    low, high = threshold - below, threshold + above
    return (threshold if low < 0 else low), (threshold if high > 1 else high)


def verdict(fake_probability: float, band: tuple[float, float]) -> str:
    """'fake' at or above the band's upper edge, 'real' below its lower edge, 'uncertain' in between."""
    low, high = band
    if fake_probability >= high:
        return "fake"
    return "real" if fake_probability < low else "uncertain"


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

    def __init__(self, runtime, config: dict, model_dir: Path | None = None, name: str | None = None):
        self.runtime, self.config, self.model_dir = runtime, config, model_dir
        self.name = name or (model_dir.name if model_dir else config.get("architecture", "model"))
        self.calibration = calibration_from(config.get("calibration"))
        self.threshold = float(self.calibration["threshold"])
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
        self.scoring = scoring_from(config.get("scoring"))
        # The patch map's window: in the native view each crop is one patch; otherwise the training crop size
        self.window = (self.scoring["native_crop_size"] if self.scoring
                       else training_crop_size(model_dir, min(self.input_size)))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, backend: str = "auto", cache_dir: str | Path | None = None,
                        threads: int | None = None) -> "Detector":
        """A local folder saved with save_detector, or a Hub repo id (safetensors only, through huggingface_hub's
        cache). cache_dir: where the converted OpenVINO model is kept between starts (None: converted at every
        start)."""
        model_dir = resolve_model_dir(name_or_path)
        config = json.loads((model_dir / "config.json").read_text())
        runtime = load_backend(config, window_cells(model_dir, config), backend, model_dir=model_dir,
                               cache_dir=cache_dir, threads=threads)
        name = str(name_or_path) if not Path(name_or_path).is_dir() else model_dir.resolve().name
        return cls(runtime, config, model_dir, name=name)

    @classmethod
    def from_model(cls, model, backend: str = "auto", threads: int | None = None, **kwargs) -> "Detector":
        """A TimmWrapperForImageClassification already in memory (nothing is cached)."""
        config = model.config.to_dict()
        runtime = load_backend(config, window_cells(None, config), backend, net=model.timm_model, threads=threads)
        return cls(runtime, config, **kwargs)

    @property
    def backend(self) -> str:
        return self.runtime.name

    def band(self, threshold: float | None = None) -> tuple[float, float]:
        """The verdict band at `threshold` (default: the model's own), see band_at."""
        return band_at(self.threshold if threshold is None else float(threshold), self.calibration)

    def crop_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """Where the eval transform (resize the short side, centre crop) takes its crop, in input pixels."""
        (width, height), (crop_h, crop_w) = size, self.input_size
        scale = math.floor(crop_h / self.crop_pct) / min(width, height)
        box_w, box_h = min(width, crop_w / scale), min(height, crop_h / scale)
        left, top = (width - box_w) / 2, (height - box_h) / 2
        return left, top, left + box_w, top + box_h

    def preprocess(self, images: list[Image.Image]) -> np.ndarray:
        """The network's input for `images`: one resized view per image, or in the native view grid x grid crops
        per image, image after image."""
        if self.scoring:
            size, grid = self.scoring["native_crop_size"], self.scoring["native_grid"]
            crops = np.concatenate([native_crops(img, size, grid) for img in images]).astype(np.float32) / 255.0
            return (crops.transpose(0, 3, 1, 2) - self.mean) / self.std
        return self.resized_view(images)

    def resized_view(self, images: list[Image.Image]) -> np.ndarray:
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

    def _probabilities(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Softmax of the verdict's logits (N, classes) and of every patch's (N, rows, cols, classes): the windows
        of the resized view, or the crops of the native view (whose logits the verdict averages)."""
        per_image = self.scoring["native_grid"] ** 2 if self.scoring else 1
        # one runtime call per image: the backends then meet one input shape (see OpenVinoBackend)
        out = np.concatenate([self.runtime(pixel_values[i:i + per_image])
                              for i in range(0, len(pixel_values), per_image)]).astype(np.float64)
        classes = len(self.labels)
        logits = out.reshape(len(out), -1, classes)  # the verdict's logits first, then each window's
        if self.scoring:
            grid = self.scoring["native_grid"]
            crops = logits[:, 0].reshape(-1, grid, grid, classes)
            return _softmax(crops.mean((1, 2))), _softmax(crops)
        rows, cols = grid_shape(pixel_values.shape[2:], self.window)
        return _softmax(logits[:, 0]), _softmax(logits[:, 1:]).reshape(len(out), rows, cols, classes)

    def _prediction(self, p: np.ndarray, threshold: float) -> Prediction:
        p_fake = float(p[self.fake_index])
        return Prediction(p_fake, {name: float(v) for name, v in zip(self.labels, p)},
                          verdict(p_fake, self.band(threshold)), threshold)

    def predict_batch(self, images: list[Image.Image], threshold: float | None = None) -> list[Prediction]:
        """RGB PIL images (see modeling.imageio.read_image) -> one Prediction each."""
        threshold = self.threshold if threshold is None else float(threshold)
        out = []
        for start in range(0, len(images), BATCH_CHUNK):
            probs, _ = self._probabilities(self.preprocess(images[start:start + BATCH_CHUNK]))
            out += [self._prediction(p, threshold) for p in probs]
        return out

    def predict(self, image: Image.Image, threshold: float | None = None) -> Prediction:
        return self.predict_batch([image], threshold)[0]

    def predict_with_map(self, image: Image.Image, threshold: float | None = None) -> tuple[Prediction, PatchMap]:
        """The Prediction and the patch map of one image, from one forward pass."""
        threshold = self.threshold if threshold is None else float(threshold)
        probs, windows = self._probabilities(self.preprocess([image]))
        if self.scoring:  # one value per crop, each painted over its share of the whole image
            grid = self.scoring["native_grid"]
            patches = PatchMap(windows[0, ..., self.fake_index], 1, 1, (grid, grid), (0, 0, *image.size))
        else:
            stride = FEATURE_STRIDE  # one cell of the last stage
            patches = PatchMap(windows[0, ..., self.fake_index], self.window, stride, self.input_size,
                               self.crop_box(image.size))
        return self._prediction(probs[0], threshold), patches

    def patch_map(self, image: Image.Image) -> PatchMap:
        """p(fake) of every window of the training crop size over the model's input crop (see modeling/patches)."""
        return self.predict_with_map(image)[1]

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


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


# Inside the band a patch is painted grey; outside it, at least this much of the colour, rising to full at 0 or 1,
# so a patch that crosses the band's edge is visibly blue or red rather than a faint tint.
MIN_COLOUR = 0.45
GREY = (150, 150, 150)


def heatmap_overlay(image: Image.Image, patches: PatchMap, band: tuple[float, float], alpha: float = 0.65,
                    max_side: int | None = 1024) -> Image.Image:
    """The image (shrunk to max_side) with the patch map painted on the part the model saw, on the verdict's scale:
    grey where a patch's score is inside the verdict band, red at or above its upper edge, blue below its lower
    edge, stronger towards 1 or 0; outside the model's crop, dimmed."""
    base = image.convert("RGB")
    if max_side and max(base.size) > max_side:  # a 16 MP float overlay would cost ~200 MB per request
        base.thumbnail((max_side, max_side), Image.BILINEAR)
    scale = base.width / image.width
    left, top, right, bottom = (round(v * scale) for v in patches.crop_box)
    size = (max(1, right - left), max(1, bottom - top))
    p = np.asarray(Image.fromarray(patches.pixel_map().astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    low, high = band
    fake = np.clip((p - high) / max(1 - high, 1e-6), 0, 1)  # 0 at the band's upper edge, 1 at p = 1
    real = np.clip((low - p) / max(low, 1e-6), 0, 1)  # 0 at its lower edge, 1 at p = 0
    colour = np.empty((*p.shape, 3), dtype=np.float32)
    colour[:] = GREY
    strength = np.full(p.shape, alpha * 0.5, dtype=np.float32)  # inside the band: a grey veil
    for mask, amount, rgb in ((p >= high, fake, (255, 0, 0)), (p < low, real, (0, 60, 255))):
        colour[mask] = rgb
        strength[mask] = alpha * (MIN_COLOUR + (1 - MIN_COLOUR) * amount[mask])
    out = np.asarray(base, dtype=np.float32) * 0.45  # dim everything, then restore the crop
    region = np.asarray(base.crop((left, top, left + size[0], top + size[1])), dtype=np.float32)
    out[top:top + size[1], left:left + size[0]] = region * (1 - strength[..., None]) + colour * strength[..., None]
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
