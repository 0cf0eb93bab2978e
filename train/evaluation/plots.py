"""PNG plots for the evaluation report: ROC curves, score histograms per class, reliability diagram."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from train.evaluation.metrics import reliability_bins  # noqa: E402


def _save(fig, path: Path) -> Path:
    # bbox_inches="tight" grows the image around whatever sticks out (a long legend); tight_layout would instead
    # try to shrink the axes to make room and give up, with a warning, once there are dozens of generators.
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_roc(labels, fake_probs, path: Path, generators=None) -> Path:
    """Overall ROC, plus one curve per generator (its fakes against all reals) when `generators` is given."""
    labels, probs = np.asarray(labels), np.asarray(fake_probs)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    curves = [("all", np.ones_like(labels, dtype=bool))]
    if generators is not None:
        generators = np.asarray(generators, dtype=object)
        curves += [(g, (labels == 0) | (generators == g)) for g in sorted(set(generators[labels == 1]), key=str)]
    for name, keep in curves:
        if len(np.unique(labels[keep])) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels[keep], probs[keep])
        ax.plot(fpr, tpr, lw=2.2 if name == "all" else 1.2, label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    for x in (0.01, 0.05):
        ax.axvline(x, ls="--", c="lightgrey", lw=0.8)
    ax.set(xlabel="false-positive rate (reals flagged fake)", ylabel="true-positive rate (fakes caught)",
           title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    if len(curves) > 8:  # one curve per generator: the legend goes beside the plot, in columns of at most 30
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7, ncol=(len(curves) + 29) // 30)
    else:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_score_histograms(labels, fake_probs, path: Path, threshold: float) -> Path:
    labels, probs = np.asarray(labels), np.asarray(fake_probs)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 41)
    for value, name, color in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
        if (labels == value).any():
            ax.hist(probs[labels == value], bins=bins, alpha=0.55, color=color,
                    label=f"{name} (n={(labels == value).sum()})")
    ax.axvline(threshold, c="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="p(fake)", ylabel="images", title="Scores per class")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reliability(labels, fake_probs, path: Path, before=None) -> Path:
    """Fraction of fakes against mean p(fake) per bin (the bins of the ECE). `before`: uncalibrated p(fake)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="perfect calibration")
    series = [("before temperature", before), ("calibrated", fake_probs)] if before is not None \
        else [("model", fake_probs)]
    for name, probs in series:
        b = reliability_bins(labels, probs)
        filled = b["count"] > 0
        ax.plot(b["confidence"][filled], b["frequency"][filled], marker="o", label=name)
    ax.set(xlabel="mean p(fake) in bin", ylabel="fraction fake in bin", title="Reliability (15 bins)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)
