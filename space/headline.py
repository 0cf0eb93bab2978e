"""What the page says about the served model, from its evaluation's results.json: how often it catches generated
images and flags photos on images from sources it never saw, and, for a model with a fitted verdict band, how many
images get a decisive verdict and how often those are right, so what the headline promises is what the page does."""
from __future__ import annotations

from pathlib import Path

from modeling.formats import false_positive_rate, find_results, read_results
from modeling.inference import Detector

# Below this ROC AUC on images from unseen generators the page calls the model what it is.
PRODUCTION_AUC = 0.9
# Below this share of fakes called AI-generated, the headline says plainly that most fakes get Uncertain.
MOSTLY_UNCERTAIN = 0.5


def evaluation_summary(model_dir: Path | None) -> dict | None:
    """The headline numbers of the model's evaluation: results.json beside the weights (`*/results.json`, or
    `eval/*/results.json` as published on the Hub), preferring a set named ood (sources the model never saw)."""
    path = find_results(model_dir) if model_dir is not None else None
    if path is None:
        return None
    results = read_results(path)
    overall = results["overall"]
    return {"set": path.parent.name, "unseen": "ood" in path.parent.name, "n": overall["n"],
            "caught": overall["recall"], "false_alarms": false_positive_rate(overall) or 0.0,
            "roc_auc": overall["roc_auc"], "decisive": results.get("decisive")}


def decisive_sentence(decisive: dict, where: str) -> str:
    """The share of images with a decisive verdict and how often those are right; plainly, when most
    AI-generated images get Uncertain."""
    text = (f"On {where}, **{decisive['share']:.0%} of images get a decisive verdict, {decisive['accuracy']:.0%} "
            f"of those are right**; the rest get *Uncertain*.")
    if decisive["fake_share"] < MOSTLY_UNCERTAIN:
        share = decisive["fake_share"]
        called = ("none of them was" if share == 0 else "under 1% of them were" if share < 0.005 else
                  f"only {share:.0%} of them were")
        text += f" Most AI-generated images get *Uncertain*, not *AI-generated*: {called} called AI-generated there."
    return text


def model_headline(detector: Detector) -> str:
    arch = detector.config.get("architecture", "")
    lines = [f"**Model:** `{detector.name}` ({arch}), decision threshold {detector.threshold:.3f}."]
    summary = evaluation_summary(detector.model_dir)
    if summary is None:
        lines.append("No evaluation results ship with this model, so how often it is right is unknown.")
        return " ".join(lines)
    where = ("our out-of-distribution test set" if summary["unseen"] else f"the evaluation set `{summary['set']}`")
    if summary["decisive"]:
        lines.append(decisive_sentence(summary["decisive"], where))
    where = (f"{summary['n']:,} images from sources and generators it never saw in training" if summary["unseen"]
             else f"{summary['n']:,} images of the evaluation set `{summary['set']}`")
    lines.append(f"On {where}, it scores **{summary['caught']:.1%} of AI-generated images and "
                 f"{summary['false_alarms']:.1%} of real photos at or above its threshold** (ROC AUC "
                 f"{summary['roc_auc']:.3f}).")
    if summary["roc_auc"] < PRODUCTION_AUC:
        lines.append("A demo model, not a production detector: treat its verdicts as weak evidence.")
    return " ".join(lines)
