"""Post-hoc calibration: temperature scaling (Guo et al., 2017) and a decision threshold for a target false-positive
rate, both fitted on a held-out folder (never the one being evaluated) and stored in the model's config.

Temperature scaling divides the logits by one scalar T chosen to minimise the negative log-likelihood; it changes
the probabilities but never the ranking, so AUC is untouched and only ECE/NLL (and the meaning of 0.5) move.
The threshold is then chosen on the calibrated probabilities of the folder, by one of two policies: "fpr" flags at
most `target_fpr` of its real images (a bound on false accusations, on data like this folder), "balanced_accuracy"
takes the best balanced accuracy on it (the cut that best separates the two classes there).

The verdict band is fitted last, on the same calibrated probabilities: the narrowest band around the threshold
outside which the folder's verdicts are at least `band_accuracy` right (fit_band). Inside it the app says
"Uncertain"; decisive_metrics measures what the band does on any set (the share of decisive verdicts and their
accuracy), which `python -m train.evaluation` writes to results.json and the app's headline states.

The whole procedure is here (fit_calibration: score the folder, fit, fold into the model, measure the fit); its
defaults (DEFAULT_CALIBRATION, DEFAULT_TARGET_FPR, DEFAULT_THRESHOLD_POLICY) and the results.json format are
modeling.formats'.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.metrics import roc_curve

from modeling.detector import apply_temperature, fake_index, set_calibration
from modeling.formats import (
    DEFAULT_BAND_ACCURACY,
    DEFAULT_TARGET_FPR,
    DEFAULT_THRESHOLD_POLICY,
    THRESHOLD_POLICIES,
    CalibrationFit,
    DecisiveMetrics,
    Scoring,
    class_counts,
    false_positive_rate,
)
from train.data.folders import load_image_folder
from train.evaluation.metrics import detection_metrics, expected_calibration_error, fake_probs_from_logits
from train.evaluation.predict import class_targets, image_files, predict_logits, scoring_transform

logger = logging.getLogger(__name__)

# T outside this range would mean the model is broken, not mis-calibrated.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def nll(logits, targets, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature) at the target class indices."""
    log_probs = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-log_probs[np.arange(len(log_probs)), np.asarray(targets, dtype=int)].mean())


def fit_temperature(logits, targets) -> float:
    """The temperature minimising NLL. One-dimensional and smooth, so a bounded Brent search over log T suffices."""
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(lambda log_t: nll(logits, targets, np.exp(log_t)), bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-5})
    temperature = float(np.exp(result.x))
    if not TEMPERATURE_BOUNDS[0] * 1.01 < temperature < TEMPERATURE_BOUNDS[1] / 1.01:
        logger.warning("Fitted temperature %.3g is at the search bound %s: the scores carry almost no information "
                       "about the labels (an untrained model?) or the labels are perfectly separated.",
                       temperature, TEMPERATURE_BOUNDS)
    return temperature


def threshold_for_fpr(labels, fake_probs, target_fpr: float = DEFAULT_TARGET_FPR) -> float:
    """A threshold (predict fake when p >= threshold) that flags at most `target_fpr` of the reals (label 0).

    It sits halfway between the highest real score that must stay below it and the next higher score in the set,
    so on this folder it behaves like the tightest such threshold but does not flip with float noise from a rerun.
    """
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(fake_probs, dtype=np.float64)
    reals = np.sort(probs[labels == 0])[::-1]
    if reals.size == 0:
        raise ValueError("choosing a threshold for a false-positive rate needs real images (label 0)")
    allowed = int(np.floor(target_fpr * reals.size + 1e-9))  # reals allowed at or above the threshold
    if allowed >= reals.size:
        return 0.0
    below = reals[allowed]  # the highest real score that must fall below the threshold
    above = probs[probs > below]
    return float((below + above.min()) / 2) if above.size else float((below + 1.0) / 2)


def threshold_for_balanced_accuracy(labels, fake_probs) -> float:
    """The threshold with the best balanced accuracy (Youden's J = TPR - FPR) on this folder, halfway between the
    lowest score it calls fake and the next lower score, for the same reason as threshold_for_fpr."""
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(fake_probs, dtype=np.float64)
    if not (labels == 0).any() or not (labels == 1).any():
        raise ValueError("choosing a threshold for balanced accuracy needs both real and fake images")
    fpr, tpr, cuts = roc_curve(labels, probs, drop_intermediate=False)  # cuts descend; cuts[0] is +inf
    best = int(np.argmax(tpr[1:] - fpr[1:])) + 1
    lower = probs[probs < cuts[best]]
    return float((cuts[best] + lower.max()) / 2) if lower.size else float(cuts[best] / 2)


def choose_threshold(labels, fake_probs, policy: str = DEFAULT_THRESHOLD_POLICY,
                     target_fpr: float = DEFAULT_TARGET_FPR) -> float:
    if policy == "fpr":
        return threshold_for_fpr(labels, fake_probs, target_fpr)
    if policy == "balanced_accuracy":
        return threshold_for_balanced_accuracy(labels, fake_probs)
    raise ValueError(f"unknown threshold policy {policy!r}; known: {THRESHOLD_POLICIES}")


def fit_band(labels, fake_probs, threshold: float, accuracy: float = DEFAULT_BAND_ACCURACY) -> list[float]:
    """[low, high] with low <= threshold <= high: the narrowest band outside which verdicts ("fake" at or above high,
    "real" below low) are at least `accuracy` right on this folder; of equally narrow bands, the one with the most
    decisive verdicts. Edges sit halfway between neighbouring scores (as the thresholds do), or on the threshold.
    If no band reaches `accuracy`, [0, 1]: every verdict is Uncertain (a warning says so)."""
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(fake_probs, dtype=np.float64)
    scores = np.unique(probs)
    mids = (scores[1:] + scores[:-1]) / 2
    lows = np.concatenate([[threshold], mids[mids < threshold][::-1], [0.0]])  # 0.0: no "real" verdict at all
    highs = np.concatenate([[threshold], mids[mids > threshold], [1.0]])
    # Decisive verdicts and right ones for each candidate edge, then for every (low, high) pair at once.
    real_calls = (probs[None, :] < lows[:, None]).sum(1)
    real_right = ((probs[None, :] < lows[:, None]) & (labels == 0)).sum(1)
    fake_calls = (probs[None, :] >= highs[:, None]).sum(1)
    fake_right = ((probs[None, :] >= highs[:, None]) & (labels == 1)).sum(1)
    calls = real_calls[:, None] + fake_calls[None, :]
    right = real_right[:, None] + fake_right[None, :]
    feasible = (calls > 0) & (right >= accuracy * calls - 1e-9)
    if not feasible.any():
        logger.warning("No verdict band reaches %.0f%% accuracy on this folder: every verdict will be Uncertain.",
                       100 * accuracy)
        return [0.0, 1.0]
    width = np.where(feasible, highs[None, :] - lows[:, None], np.inf)
    best = np.flatnonzero(width == width.min())
    i, j = np.unravel_index(best[np.argmax(calls.ravel()[best])], width.shape)
    return [float(lows[i]), float(highs[j])]


def decisive_metrics(labels, fake_probs, band) -> DecisiveMetrics:
    """What the band does on a set: how many images get a decisive verdict, and how often those are right."""
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(fake_probs, dtype=np.float64)
    low, high = band
    fake_calls, real_calls = probs >= high, probs < low
    decisive = fake_calls | real_calls
    right = (fake_calls & (labels == 1)) | (real_calls & (labels == 0))

    def share(part, whole) -> float | None:
        return float(part.sum() / whole.sum()) if whole.sum() else None

    return {"band": [float(low), float(high)], "n": int(labels.size), "share": share(decisive, labels >= 0),
            "accuracy": share(right, decisive), "fake_share": share(fake_calls & (labels == 1), labels == 1),
            "real_share": share(real_calls & (labels == 0), labels == 0)}


def check_not_evaluated(calibration_dir: str | Path, data_dirs: list[str | Path]) -> None:
    """Refuse a calibration folder that is, contains or lies inside an evaluation folder: fitting on the data
    being measured would make the reported calibration and false-positive rate look better than they are."""
    cal = Path(calibration_dir).resolve()
    for d in data_dirs:
        d = Path(d).resolve()
        if cal == d or d in cal.parents or cal in d.parents:
            raise ValueError(f"Refusing to fit calibration on {calibration_dir}: it overlaps the evaluation folder "
                             f"{d}. Fit on a held-out validation folder (e.g. the val split), never on the test data.")


def calibrate(model, temperature: float, threshold: float, target_fpr: float | None, fitted_on: str,
              policy: str = DEFAULT_THRESHOLD_POLICY, band: list[float] | None = None) -> dict:
    """Fold the temperature into the model's classifier and record the calibration in its config."""
    apply_temperature(model, temperature)
    fields = dict(threshold=threshold, target_fpr=target_fpr, fitted_on=fitted_on, threshold_policy=policy)
    return set_calibration(model, **fields, **({"band": band} if band is not None else {}))


def fit_calibration(model, calibration_dir: str | Path, target_fpr: float = DEFAULT_TARGET_FPR, batch_size: int = 64,
                    num_workers: int = 0, scoring: Scoring | None = None, policy: str = DEFAULT_THRESHOLD_POLICY,
                    band_accuracy: float = DEFAULT_BAND_ACCURACY) -> CalibrationFit:
    """Score the held-out folder in the view `scoring` (None: the resized view; see predict.resolve_scoring), fit
    temperature, threshold (by `policy`, see choose_threshold) and verdict band (fit_band), fold them into the model
    and record the view as its config.scoring: a threshold holds only for the view it was fitted on, so the
    app serves that one. Returns the numbers for results.json."""
    ds = load_image_folder(calibration_dir)
    labels = np.asarray(ds["label"])
    logits = predict_logits(model, image_files(ds), scoring_transform(model, scoring), batch_size, num_workers)
    model.config.scoring = scoring
    targets = class_targets(labels, model.config)
    temperature = fit_temperature(logits, targets)
    probs_before = fake_probs_from_logits(logits, fake_index(model.config))
    probs = fake_probs_from_logits(logits / temperature, fake_index(model.config))
    target_fpr = target_fpr if policy == "fpr" else None
    threshold = choose_threshold(labels, probs, policy, target_fpr)
    band = fit_band(labels, probs, threshold, band_accuracy)
    cal = calibrate(model, temperature, threshold, target_fpr, fitted_on=str(calibration_dir), policy=policy,
                    band=band)
    at_threshold = detection_metrics(labels, probs, threshold)
    n_real, n_fake = class_counts(at_threshold)
    return {
        "temperature": cal["temperature"], "temperature_fitted": temperature, "threshold": threshold,
        "target_fpr": target_fpr, "threshold_policy": policy, "fitted_on": str(calibration_dir),
        "calibration_set": {
            "n": int(labels.size), "n_real": n_real, "n_fake": n_fake,
            "nll_before": nll(logits, targets), "nll_after": nll(logits, targets, temperature),
            "ece_before": expected_calibration_error(labels, probs_before),
            "ece_after": expected_calibration_error(labels, probs),
            "fpr": false_positive_rate(at_threshold), "tpr": at_threshold["recall"],
        },
    }
