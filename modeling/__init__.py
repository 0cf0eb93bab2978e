"""The detector: a timm backbone inside transformers' `TimmWrapperForImageClassification`."""
from .detector import (
    DEFAULT_LABELS,
    apply_temperature,
    build_detector,
    constrain_input_filter,
    get_calibration,
    load_detector,
    save_detector,
    set_calibration,
)

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
