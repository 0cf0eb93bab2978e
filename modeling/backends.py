"""Runtimes for the detector's network: float32 pixels (N, 3, H, W) in, as numpy out: the logits (N, classes)
followed by every patch-map window's logits (modeling/patches.py), one array per image.

`load_backend` tries the candidates in order and keeps the first that works. On a CPU ("auto"): OpenVINO, then
torch.compile + bf16 (CPUs with native bf16 only; compiling needs a C++ compiler), then ONNX Runtime, then eager
PyTorch. Measured speed and accuracy of each: benchmarks/README.md.

OpenVINO's converted (and, on CPUs with native bf16, int8-compressed) model is cached on disk under a key made
of the weights, config.json and the converter's versions, so a second start reads it instead of importing
torch and converting again: torch, timm and transformers are imported only on a cache miss or for another
backend. A model with a content-blind stem (input_filter, such as the bundled demo model) always runs in f32:
bf16 rounds away the one-grey-level differences it reads.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from .patches import window_cells, with_patch_logits
from .views import served_input_shape

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "openvino", "compile", "onnx", "torch")
CACHE_FORMAT = "2"  # bump when the cached model's meaning changes (what is converted, how it is compressed)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls at twice the fp32 rate. Without them bf16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux: don't guess
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def candidates(backend: str, low_precision: bool) -> list[str]:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend != "auto":
        return [backend]
    return ["openvino", *(["compile"] if low_precision else []), "onnx", "torch"]


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "none"


def cache_key(model_dir: Path, low_precision: bool, patch_cells: int) -> str:
    """The weights, config.json, the patch map's window and the versions that shape the converted model."""
    digest = hashlib.sha256(f"{CACHE_FORMAT} low_precision={low_precision} cells={patch_cells}".encode())
    for name in ("openvino", "nncf"):
        digest.update(f" {name}={_package_version(name)}".encode())
    for path in sorted(model_dir.glob("*.safetensors")) + [model_dir / "config.json"]:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:20]


class OpenVinoBackend:
    """The network in OpenVINO's CPU plugin. The model is converted once with any input shape; each shape it meets
    gets its own compiled static model, which runs faster than a dynamic one. modeling.inference calls it once per
    image, so the app meets one shape: the resized view (1, 3, H, W) or the native view's crops (k, 3, s, s), which
    run as one batch (faster than one by one: benchmarks/README.md). low_precision: bf16 inference with int8
    weights (see to_openvino). The lock: an InferRequest is not thread-safe, and the app runs one model call at a
    time anyway."""

    def __init__(self, model, threads: int | None, low_precision: bool):
        import openvino as ov

        self.core, self.model = ov.Core(), model
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if low_precision else "f32"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        compressed = any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
                         for op in model.get_ops())
        if compressed:
            self.config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 128
        self.name = "openvino" + ("+bf16" if low_precision else "") + ("+int8" if compressed else "")
        self.requests: dict[tuple[int, int], object] = {}
        self.lock = threading.Lock()

    def _request(self, shape: tuple[int, ...]):
        if shape not in self.requests:
            model = self.model.clone()
            model.reshape(list(shape))
            self.requests[shape] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        return self.requests[shape]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            # .copy(): the result is a view of the request's output buffer, which the next call overwrites
            return self._request(x.shape).infer([x])[0].copy()


def to_openvino(net, input_size: tuple[int, int, int], low_precision: bool):
    """The timm network as an OpenVINO model taking any batch and image size. low_precision: the weights of the stem
    and of every stage but the last become int8 (nncf, per output channel) and the CPU plugin quantizes the
    linear layers' activations on the fly, so ConvNeXt's MLPs run on int8 dot products. The last stage and the
    head stay bf16: quantizing the last stage too moved p(fake) further from fp32 (benchmarks/README.md)."""
    import openvino as ov
    import torch

    example = torch.zeros(1, *input_size)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found" on CPUs
    with warnings.catch_warnings():  # the converter traces with torch.jit, which warns of its own deprecation
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        model = ov.convert_model(net.eval(), example_input=example, input=[ov.PartialShape([-1, 3, -1, -1])])
    if not low_precision:
        return model
    try:
        import nncf
    except ImportError:
        logger.warning("nncf is not installed: OpenVINO runs in bf16 without int8 weights (slower).")
        return model
    logging.getLogger("nncf").setLevel(logging.WARNING)  # its per-layer bit-width table
    stages = getattr(net, "stages", None)
    patterns = [r".*head.*"] + ([rf".*stages\.{len(stages) - 1}\..*"] if stages else [])
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM,
                                 ignored_scope=nncf.IgnoredScope(patterns=patterns, validate=False))


def cached_model_path(cache_dir: Path, model_dir: Path, low_precision: bool, patch_cells: int) -> Path:
    return cache_dir / cache_key(model_dir, low_precision, patch_cells) / "model.xml"


def save_to_cache(model, path: Path) -> None:
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, path, compress_to_fp16=False)  # fp16 weights would change the scores


def fill_cache(model_dir: str | Path, cache_dir: str | Path) -> list[Path]:
    """Convert model_dir for every CPU the app may meet (f32; and bf16 + int8 unless the model has an input
    filter) into cache_dir: what hub/push.py ships in the Space, so it serves without torch."""
    from .detector import load_detector

    model_dir, cache_dir = Path(model_dir), Path(cache_dir)
    config = json.loads((model_dir / "config.json").read_text())
    cells = window_cells(model_dir, config)
    net = with_patch_logits(load_detector(model_dir).timm_model, cells)
    input_size = served_input_shape(config)[1:]
    paths = []
    for low_precision in (False, True) if config.get("input_filter") is None else (False,):
        path = cached_model_path(cache_dir, model_dir, low_precision, cells)
        if not path.is_file():
            save_to_cache(to_openvino(net, input_size, low_precision), path)
        paths.append(path)
    return paths


def _openvino(load_net, input_size, threads, low_precision, model_dir: Path | None, cache_dir: Path | None,
              patch_cells: int):
    import openvino as ov

    cached = (cached_model_path(cache_dir, model_dir, low_precision, patch_cells) if cache_dir and model_dir
              else None)
    if cached is not None and cached.is_file():
        logger.info("Reading the converted model from %s", cached.parent)
        return OpenVinoBackend(ov.Core().read_model(cached), threads, low_precision)
    try:
        net = load_net()
    except ImportError as e:
        raise ImportError(f"{e}. The converted model is not in the cache ({cache_dir}), and converting it needs "
                          "torch, timm and transformers: install the project's requirements.txt.") from e
    model = to_openvino(net, input_size, low_precision)
    if cached is not None:
        try:
            save_to_cache(model, cached)
            logger.info("Cached the converted model in %s", cached.parent)
        except OSError as e:  # a read-only folder: serve anyway, convert again next time
            logger.warning("Could not cache the converted model in %s (%s)", cached.parent, e)
    return OpenVinoBackend(model, threads, low_precision)


class CompiledBackend:
    """torch.compile (inductor) under bf16 autocast, channels_last. dynamic=False: each input shape compiles once
    (at load, for one image's call: see OpenVinoBackend). freezing: inductor folds the weights as constants and
    pre-packs them for oneDNN (faster; measured in benchmarks/README.md). The lock keeps concurrent callers out of
    dynamo's caches, which are not thread-safe."""

    name = "torch.compile+bf16"

    def __init__(self, net, input_shape):
        import torch

        self.torch = torch
        self.net = net.to(memory_format=torch.channels_last)
        self.compiled = torch.compile(net, dynamic=False, options={"freezing": True})
        self.lock = threading.Lock()
        self(np.zeros(input_shape, dtype=np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with self.lock, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return self.compiled(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).float().numpy()


class OnnxBackend:
    """Exported to ONNX in memory (any batch and size) and run by ONNX Runtime; InferenceSession.run is thread-safe.
    The TorchScript exporter (dynamo=False) needs only the `onnx` package; the torch.export one would add
    onnxscript and takes several times longer on a CPU."""

    name = "onnxruntime"

    def __init__(self, net, input_size, threads: int | None):
        import io

        import onnxruntime as ort
        import torch

        buffer = io.BytesIO()
        axes = {0: "batch", 2: "height", 3: "width"}
        torch.onnx.export(net.eval(), (torch.zeros(2, *input_size),), buffer, dynamo=False, opset_version=17,
                          input_names=["pixel_values"], output_names=["logits"],
                          dynamic_axes={"pixel_values": axes, "logits": {0: "batch"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"pixel_values": np.ascontiguousarray(x)})[0]


class TorchBackend:
    """Eager PyTorch in fp32 (on a GPU when there is one)."""

    name = "torch"

    def __init__(self, net):
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.net = net.to(self.device).eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.net(self.torch.from_numpy(x).to(self.device)).float().cpu().numpy()


def load_backend(config: dict, patch_cells: int, backend: str = "auto", model_dir: str | Path | None = None,
                 net=None, cache_dir: str | Path | None = None, threads: int | None = None):
    """The first of `candidates(backend)` that loads. The timm network comes from `net` or is loaded from model_dir
    when a candidate needs it (OpenVINO only on a cache miss), wrapped to also score the patch map's windows of
    patch_cells cells (modeling/patches.py). An explicitly requested backend that fails raises."""
    if net is None and model_dir is None:
        raise ValueError("load_backend needs model_dir or net")
    model_dir = Path(model_dir) if model_dir is not None else None
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    input_shape = served_input_shape(config)
    input_size = input_shape[1:]
    low_precision = config.get("input_filter") is None and cpu_has_native_bf16()
    loaded = {}

    def load_net():
        if "net" not in loaded:
            from .detector import load_detector

            timm_net = net if net is not None else load_detector(model_dir).timm_model
            loaded["net"] = with_patch_logits(timm_net.eval(), patch_cells)
        return loaded["net"]

    builders = {
        "openvino": lambda: _openvino(load_net, input_size, threads, low_precision, model_dir, cache_dir,
                                      patch_cells),
        "compile": lambda: CompiledBackend(load_net(), input_shape),
        "onnx": lambda: OnnxBackend(load_net(), input_size, threads),
        "torch": lambda: TorchBackend(load_net()),
    }
    names = candidates(backend, low_precision)
    for i, name in enumerate(names):
        try:
            return builders[name]()
        except Exception as e:  # noqa: BLE001 - a missing package, an op a converter cannot handle, no compiler...
            if i == len(names) - 1:
                raise
            logger.warning("The %s backend is unavailable (%s); trying %s.", name, e, names[i + 1])
