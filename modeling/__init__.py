"""The detector: a timm backbone inside transformers' `TimmWrapperForImageClassification`.

The names below load on first use (PEP 562), so `import modeling.formats` or `modeling.imageio` does not import
torch, and a command's --help answers at once.
"""
from importlib import import_module

_EXPORTS = {
    "LABELS": "formats",
    "apply_temperature": "detector",
    "build_detector": "detector",
    "constrain_input_filter": "detector",
    "get_calibration": "detector",
    "load_detector": "detector",
    "save_detector": "detector",
    "set_calibration": "detector",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
