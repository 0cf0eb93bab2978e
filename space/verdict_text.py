"""The verdict as the page writes it: the file's own claim first when it declares a generator, then the pixel
detector's verdict (its score never mixed with metadata), then the stability line. Also the threshold as the page
shows it, so the slider and the text agree."""
from __future__ import annotations

from modeling.inference import Detector, verdict

VERDICT_TEXT = {"fake": "AI-generated", "real": "Real", "uncertain": "Uncertain"}
# The perturbations of the stability check (modeling.inference.Detector.stability), as the page names them.
CHANGES = {"jpeg_quality_75": "JPEG quality 75", "resized_half": "a 0.5x resize"}
THRESHOLD_DECIMALS = 3  # the slider's step and every threshold the page prints


def shown(threshold: float) -> str:
    """The threshold as the slider's box shows it: 0.617, 0.99, 0.5."""
    return f"{round(threshold, THRESHOLD_DECIMALS):g}"


def slider_value(detector: Detector) -> float:
    return round(detector.threshold, THRESHOLD_DECIMALS)


def threshold_from_slider(detector: Detector, value: float | None) -> float:
    """The slider at its default means the model's own threshold, unrounded, so the page's verdicts are the API's."""
    if value is None or round(value, THRESHOLD_DECIMALS) == slider_value(detector):
        return detector.threshold
    return float(value)


def stability_line(result: dict, band: tuple[float, float]) -> str:
    """Both perturbed scores, and which perturbation, if any, moves the verdict (an Uncertain verdict has nothing to
    hold, so it is never said to hold)."""
    stability = result["stability"]
    label = verdict(result["fake_probability"], band)
    scores = ", ".join(f"{stability[key]:.1%} after {name}" for key, name in CHANGES.items())
    moved = {name: verdict(stability[key], band) for key, name in CHANGES.items()
             if verdict(stability[key], band) != label}
    if not moved:
        tail = "verdict holds." if label != "uncertain" else "Uncertain after both as well."
    elif label == "uncertain":
        tail = " and ".join(f"after {name} it reads {VERDICT_TEXT[v]}" for name, v in moved.items()) + \
            ": no firm verdict either way."
    else:
        tail = "**the verdict changes after " + " and after ".join(
            f"{name} (to {VERDICT_TEXT[v]})" for name, v in moved.items()) + ": treat as uncertain.**"
    return f"**Stability:** {scores}: {tail}"


def render_verdict(result: dict, threshold: float, band: tuple[float, float]) -> str:
    p = result["fake_probability"]
    label = verdict(p, band)
    lines = []
    declared = result["provenance"]["declared_generator"]
    if declared:
        lines += [f"### The file's metadata says it was made by {declared}",
                  "Metadata is easy to strip or forge, so this is a claim, not proof; the detector below does not "
                  "read it and judges the pixels alone.", f"## Pixel detector: {VERDICT_TEXT[label]}"]
    else:
        lines.append(f"## {VERDICT_TEXT[label]}")
    low, high = band
    uncertain = f"; *Uncertain* from {low:.1%} to {high:.1%}" if high > low else ""
    lines.append(f"Probability AI-generated: **{p:.1%}** (threshold {shown(threshold)}{uncertain})")
    lines.append(stability_line(result, band))
    return "\n\n".join(lines)


def render_refusal(message: str) -> str:
    """A refused file's reason, kept on the page (a toast would vanish)."""
    return f"### This file was not analysed\n\n{message}"
