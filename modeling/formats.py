"""The formats and constants that training, evaluation, the model card and the app share, each defined here once:
the label names, the calibration defaults, and the schema of an evaluation's results.json.

Standard library only, so anything (the app, hub/card.py, a notebook) can read results.json or a config's
calibration without importing torch. A schema change happens here; train/evaluation/ writes it, hub/card.py reads it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

# Label names; the index is the label id (real = 0, fake = 1) and the class order build_detector uses.
LABELS = ("real", "fake")

# A model that was never calibrated: raw softmax (temperature 1) and the threshold 0.5.
DEFAULT_CALIBRATION = {"temperature": 1.0, "threshold": 0.5}
# How calibration chooses the threshold on the held-out folder: "fpr" flags at most DEFAULT_TARGET_FPR of its reals,
# "balanced_accuracy" takes its best balanced accuracy (train/evaluation/calibration.py).
THRESHOLD_POLICIES = ("fpr", "balanced_accuracy")
DEFAULT_THRESHOLD_POLICY = "fpr"
DEFAULT_TARGET_FPR = 0.05
# The verdict band: the narrowest around the threshold outside which at least this share of the held-out folder's
# verdicts is right (train/evaluation/calibration.py's fit_band).
DEFAULT_BAND_ACCURACY = 0.9


class Calibration(TypedDict, total=False):
    """config.calibration of a saved detector (temperature and threshold always; the rest once fitted)."""
    temperature: float
    threshold: float
    target_fpr: float | None  # None with the balanced_accuracy policy
    threshold_policy: str
    fitted_on: str
    # [low, high] around the threshold, calibrated p(fake): "AI-generated" at or above high, "Real" below low,
    # "Uncertain" in between (train/evaluation/calibration.py fits it; modeling/inference.py applies it). A model
    # without one gets the threshold +-0.1.
    band: list[float]


def calibration_from(stored: dict | None) -> Calibration:
    """The calibration a config holds (config.calibration, or config.json's "calibration"), defaults filled in."""
    return {**DEFAULT_CALIBRATION, **(stored or {})}


# ---- results.json of `python -m train.evaluation` ----------------------------------------------------------------

class DetectionMetrics(TypedDict):
    """One set of predictions (train/evaluation/metrics.py defines each number); undefined ones are None."""
    n: int
    accuracy: float | None
    balanced_accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    roc_auc: float | None
    average_precision: float | None
    tpr_at_1pct_fpr: float | None
    tpr_at_5pct_fpr: float | None
    ece: float | None
    confusion_matrix: list[list[int]]  # [[tn, fp], [fn, tp]]


METRIC_KEYS = tuple(DetectionMetrics.__annotations__)
# The scalar metrics with the names people read (model card, Hub model-index).
METRIC_NAMES = {
    "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "precision": "Precision", "recall": "Recall",
    "f1": "F1", "roc_auc": "ROC AUC", "average_precision": "Average precision",
    "tpr_at_1pct_fpr": "TPR at 1% FPR", "tpr_at_5pct_fpr": "TPR at 5% FPR", "ece": "ECE",
}


def class_counts(m: DetectionMetrics) -> tuple[int, int]:
    """(reals, fakes) in the set, from its confusion matrix."""
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    return tn + fp, fn + tp


def false_positive_rate(m: DetectionMetrics) -> float | None:
    """The share of reals called fake at the threshold; None without reals."""
    (tn, fp), _ = m["confusion_matrix"]
    return fp / (tn + fp) if tn + fp else None


class ModelInfo(TypedDict):
    name_or_path: str
    architecture: str
    image_size: int
    num_parameters: int
    temperature: float
    threshold: float
    calibration: Calibration


class DataInfo(TypedDict):
    dirs: list[str]
    n: int
    n_real: int
    n_fake: int
    sources: dict[str, int]
    generators: dict[str, int]


class CalibrationSet(TypedDict):
    """The fit's own measurements on the held-out folder."""
    n: int
    n_real: int
    n_fake: int
    nll_before: float
    nll_after: float
    ece_before: float | None
    ece_after: float | None
    fpr: float
    tpr: float | None


class _CalibrationFit(TypedDict):
    temperature: float  # the model's total temperature after the fit
    temperature_fitted: float  # this fit's factor
    threshold: float
    target_fpr: float | None
    threshold_policy: str
    fitted_on: str
    calibration_set: CalibrationSet


class CalibrationFit(_CalibrationFit, total=False):
    ece_before: float | None  # on the evaluated data, added once it is scored
    ece_after: float | None


class Runtime(TypedDict):
    seconds: float
    device: str
    images_per_second: float


class _Results(TypedDict):
    args: dict
    model: ModelInfo
    data: DataInfo
    overall: DetectionMetrics
    by_source: dict[str, DetectionMetrics]
    by_generator: dict[str, DetectionMetrics]
    by_family: dict[str, DetectionMetrics]  # generators grouped by lineage (train/families.py)
    runtime: Runtime


class NeverSeenMetrics(DetectionMetrics):
    generators: list[str]  # the fake generators neither seen nor of a family seen in training


class DecisiveMetrics(TypedDict):
    """How the verdict band serves the evaluated set: the share of images given a decisive verdict (AI-generated
    or Real, not Uncertain) and how often those verdicts are right."""
    band: list[float]  # [low, high]
    n: int  # images evaluated
    share: float  # of all images, the share with a decisive verdict
    accuracy: float | None  # of the decisive verdicts, the share that is right; None if there are none
    fake_share: float | None  # of the fakes, the share called AI-generated; None without fakes
    real_share: float | None  # of the reals, the share called Real; None without reals


class EvaluationResults(_Results, total=False):
    by_generator_vs_real: dict[str, DetectionMetrics]  # each generator's fakes against all reals (needs reals)
    by_family_vs_real: dict[str, DetectionMetrics]  # each family's fakes against all reals (needs reals)
    seen_in_training: dict[str, str]  # generator -> generator seen / family seen / never seen (model's record)
    never_seen_vs_real: NeverSeenMetrics  # the never-seen generators' fakes against all reals
    calibration: CalibrationFit  # with --fit_temperature
    robustness: dict[str, DetectionMetrics]  # with --robustness, perturbation name -> metrics
    decisive: DecisiveMetrics  # for a model with a verdict band (calibration.band)


RESULTS_FILE = "results.json"


def write_results(path: str | Path, results: EvaluationResults) -> Path:
    path = Path(path)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def read_results(path: str | Path) -> EvaluationResults:
    return json.loads(Path(path).read_text())
