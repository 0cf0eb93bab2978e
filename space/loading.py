"""Which model the Space serves, and loading it once.

The model is --model, else $MODEL_ID, else the model the Space was pushed with (space_config.json beside app.py,
written by hub/push.py), else the bundled checkpoints/demo/, else a randomly initialised network with a warning on
the page. A Hub repo id is downloaded through huggingface_hub's cache (offline once it is there).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from modeling.inference import Detector

logger = logging.getLogger(__name__)

SPACE_DIR = Path(__file__).resolve().parents[1]  # where app.py, space_config.json and examples/ sit
SPACE_CONFIG = "space_config.json"
RANDOM_MODEL_WARNING = ("No trained model found: this demo runs a randomly initialised network, so its answers "
                        "mean nothing. Start it with --model DIR_OR_HUB_ID or MODEL_ID=...")


def default_cache_dir(space_dir: Path = SPACE_DIR) -> str:
    """Where converted models are kept: $MODEL_CACHE_DIR, else model_cache/ beside app.py (what hub/push.py ships
    in the Space)."""
    return os.environ.get("MODEL_CACHE_DIR") or str(space_dir / "model_cache")


def pushed_model_id(space_dir: Path = SPACE_DIR) -> str | None:
    """The model repo a pushed Space was published with (space_config.json), if any."""
    path = space_dir / SPACE_CONFIG
    return json.loads(path.read_text()).get("model_id") if path.is_file() else None


def model_to_serve(model: str | None, space_dir: Path = SPACE_DIR) -> str | None:
    bundled = space_dir / "checkpoints" / "demo"
    return (model or os.environ.get("MODEL_ID") or pushed_model_id(space_dir)
            or (str(bundled) if bundled.is_dir() else None))


def load_app_detector(model: str | None, space_dir: Path = SPACE_DIR, **detector_kwargs
                      ) -> tuple[Detector, str | None]:
    """The Detector to serve and the warning to show (None for a trained model)."""
    detector_kwargs.setdefault("cache_dir", default_cache_dir(space_dir))
    model = model_to_serve(model, space_dir)
    if model:
        return Detector.from_pretrained(model, **detector_kwargs), None
    logger.warning(RANDOM_MODEL_WARNING)
    from modeling import build_detector

    detector_kwargs.pop("cache_dir", None)  # a random network is never cached
    random_model = build_detector("convnextv2_atto", pretrained=False, image_size=256)
    return Detector.from_model(random_model, **detector_kwargs), RANDOM_MODEL_WARNING


def limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena and rarely returns their memory. Gradio runs
    requests on a pool of threads, so a server's RSS crept up over many requests with the default (8 per core);
    with 2 arenas it stays flat (benchmarks/app_load.py). No-op outside glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, n)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass
