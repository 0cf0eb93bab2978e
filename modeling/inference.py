"""Serving-time inference: one loaded detector shared by every request, calibrated p(fake), a verdict with an
"uncertain" band, and Grad-CAM.

Speed (benchmarks/app_latency.py: convnextv2_base at 256 px, random weights, on a 2-core AMD EPYC with native bf16).
backend="auto" on a CPU runs forward_features in OpenVINO: bf16, with int8 weights and dynamic int8 activations in
the MLPs of every stage but the last (see _OpenVinoBackbone): 3.48x faster than eager fp32 pipeline() (94 vs
326 ms per image, median, idle machine; 3.27x in a busier run), p(fake) within 0.0078 of it on 48 ood images,
0.0096 on all 1,429.
Measured on the way there (same machine; backbone alone):
torch.compile + bf16 autocast 150-157 ms (inductor's weight freezing gained 7% on base; the whole app path was
2.3x faster than eager), OpenVINO bf16 124 ms (p within 0.0035), OpenVINO bf16 + int8 in every stage 95 ms but p
off by up to 0.0088 (0.0059 with the last stage kept bf16, as shipped); torchao's int8 dynamic quantization under
torch.compile 151 ms; OpenVINO f32 252 ms (exact); ONNX Runtime fp32 1.2-1.4x faster than eager (exact).
Without OpenVINO, auto falls back to torch.compile + bf16 where the CPU has native bf16 (compiling takes ~40 s at
load and needs a C++ compiler), then ONNX Runtime, then eager PyTorch (also the path on a GPU).
A model with a content-blind stem (input_filter, such as the bundled demo model) always runs in f32: bf16 rounds
away the one-grey-level differences it reads.

Grad-CAM without hooks. The net is split into backbone (`forward_features`: stem and stages; for ConvNeXt its
output is the last stage's activation map) and head (`forward_head`: pool, norm, classifier). The backbone
runs on the fast path; only the tiny head runs in PyTorch with autograd, on the last stage's activations. The
gradient of the log-odds log p(fake)/p(real) with respect to those activations gives the Grad-CAM weights.
That costs almost nothing, keeps no per-request state on the module (so concurrent requests cannot mix their
activations, as forward hooks would), and gives the same map as hooking `stages[-1]`.
"""
from __future__ import annotations

import io
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import timm.data
import torch
from PIL import Image

from .detector import fake_index, get_calibration, load_detector

logger = logging.getLogger(__name__)

UNCERTAIN_BAND = 0.1  # |p(fake) - threshold| below this is reported as "uncertain"
BACKENDS = ("auto", "openvino", "compile", "onnx", "torch")
BATCH_CHUNK = 8  # images per backbone call in predict_batch: bounds memory whatever the batch size


@dataclass
class Prediction:
    fake_probability: float
    probabilities: dict[str, float]
    label: str  # "real", "fake" or "uncertain"
    threshold: float
    # Signed Grad-CAM on the last stage (h x w, max |value| = 1): > 0 pushed towards "fake", < 0 towards "real".
    cam: np.ndarray | None = field(default=None, repr=False)
    # The part of the input image the model saw (timm's eval transform resizes, then centre-crops): left, top,
    # right, bottom in the input image's pixels.
    crop_box: tuple[float, float, float, float] | None = None

    def as_dict(self) -> dict:
        return {"label": self.label, "fake_probability": self.fake_probability,
                "probabilities": self.probabilities, "threshold": self.threshold}


def verdict(fake_probability: float, threshold: float, band: float = UNCERTAIN_BAND) -> str:
    """'fake' at or above threshold + band, 'real' below threshold - band, 'uncertain' in between."""
    if fake_probability >= threshold + band or (fake_probability >= threshold and threshold + band > 1):
        return "fake"
    if fake_probability < threshold - band or (fake_probability < threshold and threshold - band < 0):
        return "real"
    return "uncertain"


class _Features(torch.nn.Module):
    """The backbone alone, as a module ONNX can export."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_features(x)


class _OnnxBackbone:
    """forward_features exported to ONNX (in memory) and run by ONNX Runtime. InferenceSession.run is thread-safe."""

    name = "onnxruntime"

    def __init__(self, net: torch.nn.Module, input_size: tuple[int, int, int], threads: int):
        import onnxruntime as ort  # optional dependency: the caller falls back to PyTorch without it

        example = torch.zeros(2, *input_size)
        buffer = io.BytesIO()
        # The TorchScript exporter (dynamo=False) needs only the `onnx` package; the torch.export-based one would
        # add onnxscript and takes several times longer on a CPU.
        torch.onnx.export(_Features(net).eval(), (example,), buffer, dynamo=False, opset_version=17,
                          input_names=["pixel_values"], output_names=["features"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "features": {0: "batch"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (features,) = self.session.run(None, {"pixel_values": x.numpy()})
        return torch.from_numpy(features)


class _OpenVinoBackbone:
    """forward_features converted to OpenVINO (static batch 1: a batch runs image by image) and run on its CPU plugin.

    low_precision (native bf16, no input filter): bf16 inference, and the weights of the stem and of every stage but
    the last become int8 (nncf, per output channel); the CPU plugin quantizes the linear layers' activations on the
    fly in groups of 128, so ConvNeXt's MLPs, most of its FLOPs, run on int8 dot products. The last stage
    stays bf16: quantizing it too raised the largest change in p(fake) from 0.006 to 0.009.
    Without low_precision: f32, exact.
    The lock: one InferRequest, which is not thread-safe; the app runs one model call at a time anyway."""

    def __init__(self, net: torch.nn.Module, input_size: tuple[int, int, int], threads: int, low_precision: bool):
        import openvino as ov  # optional dependency: the caller falls back without it

        model = to_openvino(net, input_size)
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "bf16" if low_precision else "f32"}
        self.name = "openvino+bf16" if low_precision else "openvino"
        if low_precision:
            try:
                model = _int8_weights(model, net)
                config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 128
                self.name = "openvino+bf16+int8"
            except ImportError:
                logger.warning("nncf is not installed: OpenVINO runs in bf16 without int8 weights (slower).")
        self.request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
        self.lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            # .copy(): the result is a view of the request's output buffer, which the next image overwrites
            features = [torch.from_numpy(self.request.infer([one.numpy()])[0].copy()) for one in x.split(1)]
        return torch.cat(features)


def to_openvino(net: torch.nn.Module, input_size: tuple[int, int, int]):
    """forward_features as an OpenVINO model for one image of input_size (C, H, W)."""
    import openvino as ov

    example = torch.zeros(1, *input_size)
    return ov.convert_model(_Features(net).eval(), example_input=example, input=[list(example.shape)])


def _int8_weights(model, net: torch.nn.Module):
    """int8 weights everywhere but in the last stage (see _OpenVinoBackbone)."""
    import nncf

    logging.getLogger("nncf").setLevel(logging.WARNING)  # its per-layer bit-width table, at every app start
    stages = getattr(net, "stages", None)
    ignored = nncf.IgnoredScope(patterns=[rf".*stages\.{len(stages) - 1}\..*"], validate=False) if stages else None
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM, ignored_scope=ignored)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls at twice the fp32 rate. Without them bf16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux: don't guess
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class _CompiledBackbone:
    """forward_features compiled by torch.compile (inductor) and run under bf16 autocast, channels_last.

    Compiled for batch size 1 only (a batch runs image by image) so no request triggers a recompile; warmed up
    here, at load. The lock keeps concurrent callers out of dynamo's caches (not thread-safe); the app runs one
    model call at a time anyway, because one call already uses every core."""

    name = "torch.compile+bf16"

    def __init__(self, net: torch.nn.Module, input_size: tuple[int, int, int]):
        self.net = net.to(memory_format=torch.channels_last)
        # freezing: inductor treats the weights as constants, folds them and pre-packs them for oneDNN's bf16
        # convolutions and matmuls: 1.07x faster than compiling without it for convnextv2_base, 1.7x for atto.
        self.compiled = torch.compile(net.forward_features, dynamic=False, options={"freezing": True})
        self.lock = threading.Lock()
        self(torch.zeros(1, *input_size))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            features = [self.compiled(one.contiguous(memory_format=torch.channels_last)) for one in x.split(1)]
        return torch.cat(features).float().contiguous()


class _TorchBackbone:
    name = "torch"

    def __init__(self, net: torch.nn.Module, device: torch.device):
        self.net = net.to(device=device, memory_format=torch.channels_last)
        self.device = device

    @torch.no_grad()  # not inference_mode: Grad-CAM needs autograd on these features afterwards
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, memory_format=torch.channels_last)
        return self.net.forward_features(x).float().contiguous().cpu()


class Detector:
    """A loaded detector for serving. Build once, share between threads.

    backend: "auto" (see the module docstring), "openvino" (bf16 + int8 MLPs on CPUs with native bf16, else f32),
    "compile" (torch.compile + bf16 autocast), "onnx" (ONNX Runtime, fp32) or "torch" (eager fp32).
    """

    def __init__(self, model, backend: str = "auto", device: str | torch.device | None = None,
                 threads: int | None = None, uncertain_band: float = UNCERTAIN_BAND):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        self.model = model.eval()
        self.net = model.timm_model
        self.config = model.config
        self.calibration = get_calibration(self.config)
        self.threshold = float(self.calibration["threshold"])
        self.uncertain_band = uncertain_band
        self.labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        self.fake_index = fake_index(self.config)
        # The same eval transform pipeline() uses (TimmWrapperImageProcessor builds it from config.pretrained_cfg).
        self.data_config = timm.data.resolve_data_config(self.config.pretrained_cfg, model=None, verbose=False)
        self.transform = timm.data.create_transform(**self.data_config, is_training=False)
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.backbone = self._make_backbone(backend, threads or torch.get_num_threads())

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> "Detector":
        """A Hub repo id or a local folder saved with save_detector (safetensors only)."""
        return cls(load_detector(name_or_path), **kwargs)

    def _make_backbone(self, backend: str, threads: int):
        on_cpu = self.device.type == "cpu"
        input_size = tuple(self.data_config["input_size"])
        # A content-blind stem (input_filter) reads pixel differences of one grey level, which bf16 rounds away
        low_precision = getattr(self.model.config, "input_filter", None) is None and cpu_has_native_bf16()
        if backend == "openvino" or (backend == "auto" and on_cpu):
            try:
                return _OpenVinoBackbone(self.net, input_size, threads, low_precision)
            except Exception as e:  # noqa: BLE001 - missing package or an op the converter cannot handle
                if backend == "openvino":
                    raise
                logger.warning("OpenVINO backbone unavailable (%s); trying the next backend.", e)
        if backend == "compile" or (backend == "auto" and on_cpu and low_precision):
            try:
                return _CompiledBackbone(self.net, input_size)
            except Exception as e:  # noqa: BLE001 - no C++ compiler, an op inductor cannot handle...
                if backend == "compile":
                    raise
                self.net.to(memory_format=torch.contiguous_format)
                logger.warning("torch.compile backbone unavailable (%s); trying ONNX Runtime.", e)
        if backend == "onnx" or (backend == "auto" and on_cpu):
            try:
                return _OnnxBackbone(self.net, input_size, threads)
            except Exception as e:  # noqa: BLE001 - missing package or an op the exporter cannot handle
                if backend == "onnx":
                    raise
                logger.warning("ONNX Runtime backbone unavailable (%s); running the backbone in PyTorch.", e)
        return _TorchBackbone(self.net, self.device)

    @property
    def backend(self) -> str:
        return self.backbone.name

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(img) for img in images])

    def crop_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """Where timm's eval transform (resize the short side, centre crop) takes its crop, in input pixels."""
        width, height = size
        crop_h, crop_w = self.data_config["input_size"][1:]
        scale_size = math.floor(crop_h / self.data_config["crop_pct"])  # timm's rule for crop_mode="center"
        scale = scale_size / min(width, height)
        box_w, box_h = min(width, crop_w / scale), min(height, crop_h / scale)
        left, top = (width - box_w) / 2, (height - box_h) / 2
        return left, top, left + box_w, top + box_h

    def _head(self, features: torch.Tensor, with_cam: bool):
        """forward_head in PyTorch fp32 (cheap); with_cam also returns the signed Grad-CAM of each image."""
        features = features.to(next(self.net.parameters()).device).float()
        if not with_cam:
            with torch.inference_mode():
                return self.net.forward_head(features).float().cpu(), None
        features.requires_grad_(True)
        with torch.enable_grad():
            logits = self.net.forward_head(features).float()
            others = torch.ones(logits.shape[-1], dtype=torch.bool, device=logits.device)
            others[self.fake_index] = False
            # Log-odds log p(fake) / p(not fake): its gradient points towards "fake" evidence.
            log_odds = logits[:, self.fake_index] - logits[:, others].logsumexp(-1)
            (grads,) = torch.autograd.grad(log_odds.sum(), features)
        weights = grads.mean(dim=(2, 3), keepdim=True)  # Grad-CAM: channel weights = spatially pooled gradients
        terms = (weights * features).detach()
        cams = terms.sum(1)
        # The head normalises the pooled features, so the map sums to ~0 over positions; on a 1x1 grid it is only
        # rounding noise. Dividing by its own max would blow that noise up to +-1, so the divisor is at least 1e-3
        # of the map's size before cancellation (the sum of |weight * feature| over channels, at its largest).
        magnitude = terms.abs().sum(1).flatten(1).amax(1)
        scale = torch.maximum(cams.flatten(1).abs().amax(1), 1e-3 * magnitude).clamp(min=1e-12)
        cams = cams / scale[:, None, None]
        return logits.detach().cpu(), cams.cpu().numpy()

    def predict_batch(self, images: list[Image.Image], threshold: float | None = None,
                      with_cam: bool = False) -> list[Prediction]:
        """RGB PIL images (see modeling.imageio.read_image) -> one Prediction each."""
        threshold = self.threshold if threshold is None else float(threshold)
        out = []
        for start in range(0, len(images), BATCH_CHUNK):
            chunk = images[start:start + BATCH_CHUNK]
            features = self.backbone(self.preprocess(chunk))
            logits, cams = self._head(features, with_cam)
            probs = logits.softmax(-1).tolist()
            for i, (img, p) in enumerate(zip(chunk, probs)):
                p_fake = float(p[self.fake_index])
                out.append(Prediction(
                    fake_probability=p_fake,
                    probabilities={name: float(v) for name, v in zip(self.labels, p)},
                    label=verdict(p_fake, threshold, self.uncertain_band),
                    threshold=threshold,
                    cam=None if cams is None else cams[i],
                    crop_box=self.crop_box(img.size),
                ))
        return out

    def predict(self, image: Image.Image, threshold: float | None = None, with_cam: bool = False) -> Prediction:
        return self.predict_batch([image], threshold, with_cam)[0]


def heatmap_overlay(image: Image.Image, prediction: Prediction, alpha: float = 0.5,
                    max_side: int | None = 1024) -> Image.Image:
    """The input image (shrunk to max_side) with the Grad-CAM evidence painted on the part the model saw (red:
    pushed towards "fake", blue: towards "real"); the part outside the model's crop is dimmed."""
    if prediction.cam is None:
        raise ValueError("this prediction has no Grad-CAM; call predict(..., with_cam=True)")
    base = image.convert("RGB")
    if max_side and max(base.size) > max_side:  # a 16 MP float overlay would cost ~200 MB per request
        base.thumbnail((max_side, max_side), Image.BILINEAR)
    scale = base.width / image.width
    left, top, right, bottom = (round(v * scale) for v in prediction.crop_box)
    size = (max(1, right - left), max(1, bottom - top))
    cam = torch.from_numpy(np.ascontiguousarray(prediction.cam, dtype=np.float32))[None, None]
    cam = torch.nn.functional.interpolate(cam, size=size[::-1], mode="bilinear", align_corners=False)[0, 0].numpy()
    colour = np.zeros((*cam.shape, 3), dtype=np.float32)
    colour[..., 0] = np.clip(cam, 0, 1) * 255  # red where the evidence points to "fake"
    colour[..., 2] = np.clip(-cam, 0, 1) * 255  # blue where it points to "real"
    strength = (np.abs(cam) * alpha)[..., None]
    out = np.asarray(base, dtype=np.float32) * 0.45  # dim everything, then restore the crop
    region = np.asarray(base.crop((left, top, left + size[0], top + size[1])), dtype=np.float32)
    out[top:top + size[1], left:left + size[0]] = region * (1 - strength) + colour * strength
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
