"""Detection metrics: the one implementation shared by training (compute_metrics), evaluation and the model card.

Definitions (binary, positive class = fake = label 1; `fake_probs` is the predicted probability of "fake"):
- prediction: fake when p_fake >= threshold.
- confusion_matrix: [[tn, fp], [fn, tp]] (rows = true real/fake, columns = predicted real/fake), as sklearn prints it.
- accuracy: (tp + tn) / n.
- balanced_accuracy: mean of TPR = tp / (tp + fn) and TNR = tn / (tn + fp) at the threshold.
- precision = tp / (tp + fp), recall = TPR, f1 = 2 tp / (2 tp + fp + fn).
- roc_auc, average_precision: sklearn's, threshold-free.
- tpr_at_1pct_fpr / tpr_at_5pct_fpr: the largest TPR among the ROC points (all of them, sklearn's roc_curve with
  drop_intermediate=False) whose FPR <= 1% / 5%. The point (0, 0) always qualifies, so the value is at least 0.
- ece: expected calibration error over 15 equal-width bins of p_fake itself (not of the top-label confidence):
  sum over bins of (bin size / n) * |mean p_fake - fraction of fakes|. Bin k holds k/15 <= p < (k+1)/15, the last
  bin also holds p = 1. Binning p_fake over [0, 1] keeps the two kinds of over-confidence (on reals and on fakes)
  apart in the reliability diagram, reads directly as "when it says 80% fake, is it fake 80% of the time?", and is
  torchmetrics' BinaryCalibrationError(n_bins=15, norm="l1"), so others can reproduce our number.

A metric that is undefined for the data is None (null in JSON), never an exception or NaN: ROC-AUC, AP and the TPR
at FPR need both classes (AP needs a fake); a ratio whose denominator is 0 (e.g. precision when nothing is
predicted fake, TNR in a group of fakes only, hence balanced accuracy there) is None. Per-generator groups hold
only fakes (or only reals), so there recall (= detection rate) or accuracy is the number to read.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

from modeling.formats import METRIC_KEYS, DetectionMetrics

ECE_BINS = 15
__all__ = ["ECE_BINS", "METRIC_KEYS", "confusion", "detection_metrics", "expected_calibration_error",
           "fake_probs_from_logits", "grouped_metrics", "load_detection_metric", "reliability_bins", "tpr_at_fpr"]


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def fake_probs_from_logits(logits, fake_index: int = 1) -> np.ndarray:
    """Softmax over the classes (in float64), column `fake_index` (see modeling.detector.fake_index)."""
    return softmax(np.asarray(logits, dtype=np.float64), axis=-1)[..., fake_index]


def confusion(labels, fake_probs, threshold: float = 0.5) -> list[list[int]]:
    """[[tn, fp], [fn, tp]] at the threshold, as plain ints (labels=[0, 1]: both rows even if a class is absent;
    sklearn refuses an empty set, whose matrix is all zeros)."""
    labels = np.asarray(labels, dtype=int)
    if labels.size == 0:
        return [[0, 0], [0, 0]]
    pred = (np.asarray(fake_probs, dtype=np.float64) >= threshold).astype(int)
    return confusion_matrix(labels, pred, labels=[0, 1]).tolist()


def tpr_at_fpr(labels, fake_probs, max_fpr: float) -> float | None:
    """Largest TPR among ROC points with FPR <= max_fpr; None unless both classes are present."""
    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        return None
    fpr, tpr, _ = roc_curve(labels, fake_probs, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def reliability_bins(labels, fake_probs, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin of p_fake: count, mean p_fake and fraction of fakes (NaN in empty bins)."""
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(fake_probs, dtype=np.float64)
    idx = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(idx, weights=probs, minlength=n_bins) / count
        frequency = np.bincount(idx, weights=labels, minlength=n_bins) / count
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "count": count, "confidence": confidence,
            "frequency": frequency}


def expected_calibration_error(labels, fake_probs, n_bins: int = ECE_BINS) -> float | None:
    if len(labels) == 0:
        return None
    b = reliability_bins(labels, fake_probs, n_bins)
    filled = b["count"] > 0
    gaps = np.abs(b["confidence"][filled] - b["frequency"][filled])
    return float(np.sum(b["count"][filled] * gaps) / len(labels))


def detection_metrics(labels: Sequence[int], fake_probs: Sequence[float], threshold: float = 0.5) -> DetectionMetrics:
    """All metrics of one set of predictions (labels: 1 = fake). Keys: METRIC_KEYS; undefined ones are None."""
    labels = np.asarray(labels, dtype=int).reshape(-1)
    probs = np.asarray(fake_probs, dtype=np.float64).reshape(-1)
    if labels.shape != probs.shape:
        raise ValueError(f"{labels.size} labels but {probs.size} probabilities")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    (tn, fp), (fn, tp) = cm = confusion(labels, probs, threshold)
    n = int(labels.size)
    tpr, tnr = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    both_classes = tp + fn > 0 and tn + fp > 0
    return {
        "n": n,
        "accuracy": _ratio(tp + tn, n),
        "balanced_accuracy": (tpr + tnr) / 2 if both_classes else None,
        "precision": _ratio(tp, tp + fp),
        "recall": tpr,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": float(roc_auc_score(labels, probs)) if both_classes else None,
        "average_precision": float(average_precision_score(labels, probs)) if tp + fn > 0 else None,
        "tpr_at_1pct_fpr": tpr_at_fpr(labels, probs, 0.01),
        "tpr_at_5pct_fpr": tpr_at_fpr(labels, probs, 0.05),
        "ece": expected_calibration_error(labels, probs),
        "confusion_matrix": cm,
    }


def grouped_metrics(labels, fake_probs, groups, threshold: float = 0.5) -> dict[str, DetectionMetrics]:
    """detection_metrics per distinct value of `groups` (e.g. source or generator), sorted by group name."""
    labels, probs, groups = np.asarray(labels), np.asarray(fake_probs), np.asarray(groups, dtype=object)
    return {str(g): detection_metrics(labels[groups == g], probs[groups == g], threshold)
            for g in sorted(set(groups.tolist()), key=str)}


def load_detection_metric(**kwargs):
    """The same metrics as a Hugging Face `evaluate` module (loaded from this repo, no Hub access):
    `load_detection_metric().compute(predictions=fake_probs, references=labels, threshold=0.5)`."""
    import evaluate

    return evaluate.load(str(Path(__file__).resolve().parent / "detection_metric"), **kwargs)
