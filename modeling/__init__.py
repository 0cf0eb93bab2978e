"""The detector: a timm backbone inside transformers' `TimmWrapperForImageClassification`.

The names below are imported on first use (PEP 562), so `modeling.imageio` or `modeling.inference` can be
imported without torch, timm and transformers: the app serves from a cached OpenVINO model without them.
"""
import importlib

__all__ = [
    "DEFAULT_LABELS",
    "apply_temperature",
    "build_detector",
    "constrain_input_filter",
    "get_calibration",
    "load_detector",
    "save_detector",
    "set_calibration",
]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module(".detector", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
