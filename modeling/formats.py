"""The formats and constants that training, evaluation, the model card and the app share, each defined here once:
the label names, the calibration defaults, the schema of an evaluation's results.json and where a model folder keeps
it, the record of a training run (training_config.json), and the Markdown tables people read.

Standard library only, so anything (the app, hub/card.py, a notebook) can read results.json, training_config.json or
a config's calibration without importing torch. A schema change happens here: train/evaluation/ writes results.json
and train/run.py training_config.json through the writers below; everything else reads through the readers.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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


class Scoring(TypedDict):
    """config.scoring of a detector that reads native pixels: grid x grid crops of native_crop_size pixels spread
    evenly over the unresized image, their logits averaged (modeling/views.py). A config without one is scored on
    the single resized view of timm's eval transform, which is also what pipeline() and timm apply."""
    native_crop_size: int
    native_grid: int


def scoring_from(stored: dict | None) -> Scoring | None:
    """The scoring a config holds (config.scoring, or config.json's "scoring"); None: the resized view."""
    if not stored:
        return None
    size, grid = int(stored["native_crop_size"]), int(stored["native_grid"])
    if size < 1 or grid < 1:
        raise ValueError(f"scoring needs a positive native_crop_size and native_grid, got {stored}")
    return {"native_crop_size": size, "native_grid": grid}


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
    scoring: Scoring | None  # the view every score was taken in; None: the resized view (older files lack it)


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
    by_family: dict[str, DetectionMetrics]  # generators grouped by lineage (modeling/families.py)
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
    calibration: CalibrationFit  # with --calibrate
    robustness: dict[str, DetectionMetrics]  # with --robustness, perturbation name -> metrics
    decisive: DecisiveMetrics  # for a model with a verdict band (calibration.band)


RESULTS_FILE = "results.json"
# Where a model folder keeps its evaluations, in this order: its own results.json, one folder per set beside the
# weights (`--output_dir <model>/eval_ood`), and eval/<set>/ as a pushed model holds them (hub/card.py's repo_dir).
RESULTS_PATTERNS = (RESULTS_FILE, f"*/{RESULTS_FILE}", f"eval/*/{RESULTS_FILE}")


def write_results(path: str | Path, results: EvaluationResults) -> Path:
    path = Path(path)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def read_results(path: str | Path) -> EvaluationResults:
    return json.loads(Path(path).read_text())


def list_results(model_dir: str | Path) -> list[Path]:
    """Every results.json a model folder holds (RESULTS_PATTERNS' order, sorted within each)."""
    model_dir, found = Path(model_dir), []
    for pattern in RESULTS_PATTERNS:
        found += [p for p in sorted(model_dir.glob(pattern)) if p.is_file() and p not in found]
    return found


def find_results(model_dir: str | Path) -> Path | None:
    """The evaluation to quote first: a set whose folder is named ood (generators the model never saw) if the folder
    holds one, else the first of list_results; None without any."""
    paths = list_results(model_dir)
    return next((p for p in paths if "ood" in p.parent.name), paths[0] if paths else None)


# ---- training_config.json of train/run.py -------------------------------------------------------------------------

TRAINING_RECORD_FILE = "training_config.json"
# Argument groups of the record; their keys are read as settings of the run (TrainingRecord.settings).
ARGUMENT_GROUPS = ("model_args", "data_args", "training_args")


@dataclass
class TrainingRecord:
    """training_config.json: what train/run.py records of a run, before training starts (so an interrupted run
    still says what it was). Every field is optional: a record read from an older or hand-written file may lack
    any of them, and its readers (the card's recipe, the patch map's window, seen-in-training) then say "unknown"."""
    phase: str | None = None  # "initial" or "continual"
    model_args: dict = field(default_factory=dict)  # train/run.py's ModelArguments, as given
    data_args: dict = field(default_factory=dict)  # DataArguments
    training_args: dict = field(default_factory=dict)  # DetectorTrainingArguments.to_dict()
    epochs: float | None = None
    max_steps: int | None = None
    per_device_train_batch_size: int | None = None
    total_train_batch_size: int | None = None
    image_size: int | None = None
    # train/data/build.py's summary: "train", "rehearsal", "validation", "test" (one dict per source: path or hub,
    # profile, n, n_real, n_fake, sources, generators), "profiles", "source_balance"
    data: dict = field(default_factory=dict)
    augmentation_profiles: dict = field(default_factory=dict)  # profile key -> its settings (train/transforms.py)

    @classmethod
    def from_dict(cls, record: dict) -> "TrainingRecord":
        """Keys this version does not know are left out: a newer record still reads."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known and v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def settings(self) -> dict:
        """Every setting of the run in one flat dict: the argument groups' keys (the first group that has a key
        wins), then the record's own top-level values (phase, epochs, image_size, ...) over them. data and
        augmentation_profiles are not settings: read them from their fields."""
        flat: dict = {}
        for group in ARGUMENT_GROUPS:
            for key, value in getattr(self, group).items():
                flat.setdefault(key, value)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and not isinstance(value, dict):
                flat[f.name] = value
        return flat

    def training_generators(self) -> list[str] | None:
        """The fake generators the model was trained on (training and replayed sources); None when any of those
        sources has no generator list (unknown, not "none")."""
        parts = [*self.data.get("train", []), *self.data.get("rehearsal", [])]
        if not parts or any("generators" not in part for part in parts):
            return None
        return sorted({g for part in parts for g in part["generators"]})

    def crop_sizes(self) -> list[int]:
        """The training crop size of each augmentation profile that has one."""
        profiles = self.augmentation_profiles.values()
        return [p["crop_size"] for p in profiles if isinstance(p, dict) and p.get("crop_size")]


def write_training_record(model_dir: str | Path, record: TrainingRecord) -> Path:
    path = Path(model_dir, TRAINING_RECORD_FILE)
    path.write_text(json.dumps(record.to_dict(), indent=2, default=str))  # default=str: enums, paths
    return path


def read_training_record(model_dir: str | Path) -> TrainingRecord | None:
    """The record of a model folder; None when it has none. A file that is not a JSON object raises ValueError."""
    path = Path(model_dir, TRAINING_RECORD_FILE)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a training record (a JSON object)")
    return TrainingRecord.from_dict(record)


# ---- Markdown tables (results.md and the model card) -------------------------------------------------------------

def format_cell(value, digits: int = 3) -> str:
    """A table cell: — for an undefined (None) metric, floats to `digits` decimals, anything else as text."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table; cells through format_cell."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
