"""The steps of `python -m train.evaluation`, in the order run.py's main takes them: load the model, calibrate it
(optional), load the data, score it, measure, the robustness sweep (optional), write the outputs.

Kept apart from run.py so that `--help` answers from the argument dataclass alone: this module imports torch.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from modeling.detector import fake_index, get_calibration, load_detector, save_detector
from modeling.families import families_of, seen_in_training
from modeling.formats import (
    RESULTS_FILE,
    CalibrationFit,
    EvaluationResults,
    Scoring,
    read_training_record,
    write_results,
)
from train.data.folders import load_image_folder
from train.evaluation.calibration import decisive_metrics, fit_calibration
from train.evaluation.metrics import (
    detection_metrics,
    expected_calibration_error,
    fake_probs_from_logits,
    grouped_metrics,
)
from train.evaluation.perturbations import PERTURBATIONS
from train.evaluation.plots import plot_reliability, plot_roc, plot_score_histograms
from train.evaluation.predict import image_files, predict_logits
from train.evaluation.report import render_markdown

logger = logging.getLogger("train.evaluation")


@dataclass
class EvaluationData:
    """The pooled image folders: one entry per image in every array."""
    dirs: list[str]
    files: list  # paths or bytes, what modeling.imageio.read_image takes
    labels: np.ndarray  # real = 0, fake = 1
    sources: np.ndarray
    generators: np.ndarray  # "none" for reals
    families: np.ndarray  # modeling.families.family_of of each generator


def load_model(name_or_path: str, device: torch.device):
    return load_detector(name_or_path).eval().to(device)


def calibrate(model, calibration_dir: str, save_to: Path, model_dir: Path | None, target_fpr: float, policy: str,
              band_accuracy: float, scoring: Scoring | None, batch_size: int, num_workers: int) -> CalibrationFit:
    """Fit temperature, threshold and verdict band on `calibration_dir` (train/evaluation/calibration.py), fold both into `model`
    and save it to `save_to`. When save_to is the model's own folder its calibration is rewritten in place;
    otherwise save_to is a new folder holding the model's other files (training_config.json, notes) too."""
    fit = fit_calibration(model, calibration_dir, target_fpr, batch_size, num_workers, scoring, policy,
                          band_accuracy)
    in_place = model_dir is not None and save_to.resolve() == model_dir.resolve()
    if model_dir is not None and not in_place:
        save_to.mkdir(parents=True, exist_ok=True)
        for file in model_dir.iterdir():  # the record and notes; not checkpoints, nor a card of the uncalibrated model
            if file.is_file() and file.name != "README.md":
                shutil.copy2(file, save_to / file.name)
    device = next(model.parameters()).device
    save_detector(model.cpu(), save_to)
    model.to(device)
    logger.info("Calibration %s %s: %s", "rewritten in place in" if in_place else "saved with the model to", save_to,
                get_calibration(model.config))
    return fit


def load_data(dirs: list[str]) -> EvaluationData:
    ds = datasets.concatenate_datasets([load_image_folder(d) for d in dirs])
    generators = np.asarray(ds["generator"], dtype=object)
    return EvaluationData([str(d) for d in dirs], image_files(ds), np.asarray(ds["label"]),
                          np.asarray(ds["source"], dtype=object), generators,
                          np.asarray(families_of(generators), dtype=object))


def score(model, files: list, transform, batch_size: int, num_workers: int, perturb=None,
          desc: str = "scoring") -> np.ndarray:
    """The model's logits of every file (see predict.predict_logits)."""
    return predict_logits(model, files, transform, batch_size, num_workers, perturb, desc)


def _counts(values) -> dict[str, int]:
    names, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return {str(k): int(v) for k, v in zip(names, counts)}


def _against_reals(data: EvaluationData, probs, groups, threshold: float) -> dict:
    """Each group's fakes pooled with all the reals."""
    reals = data.labels == 0
    return {g: detection_metrics(data.labels[reals | (groups == g)], probs[reals | (groups == g)], threshold)
            for g in sorted(set(groups[data.labels == 1]))}


def measure(args: dict, name_or_path: str, model, data: EvaluationData, probs, training_generators,
            scoring: Scoring | None = None) -> EvaluationResults:
    """results.json's measurements (modeling.formats.EvaluationResults) at the model's own threshold: overall, per
    source, generator and family, each generator and family against all reals, and, when the model's record names
    its training generators, which ones it saw and how it does on the never-seen ones."""
    cal = get_calibration(model.config)
    threshold, labels = float(cal["threshold"]), data.labels
    results: EvaluationResults = {
        "args": args,
        "model": {"name_or_path": name_or_path, "architecture": model.config.architecture,
                  "image_size": int(model.config.pretrained_cfg["input_size"][-1]),
                  "num_parameters": sum(p.numel() for p in model.parameters()),
                  "temperature": float(cal["temperature"]), "threshold": threshold, "calibration": cal,
                  "scoring": scoring},
        "data": {"dirs": data.dirs, "n": int(labels.size), "n_real": int((labels == 0).sum()),
                 "n_fake": int((labels == 1).sum()), "sources": _counts(data.sources),
                 "generators": _counts(data.generators)},
        "overall": detection_metrics(labels, probs, threshold),
        "by_source": grouped_metrics(labels, probs, list(data.sources), threshold),
        "by_generator": grouped_metrics(labels, probs, list(data.generators), threshold),
        "by_family": grouped_metrics(labels, probs, data.families, threshold),
    }
    if cal.get("band"):
        results["decisive"] = decisive_metrics(labels, probs, cal["band"])
    if (labels == 0).any():
        results["by_generator_vs_real"] = _against_reals(data, probs, data.generators, threshold)
        results["by_family_vs_real"] = _against_reals(data, probs, data.families, threshold)
    if training_generators is not None:
        status = {g: seen_in_training(g, training_generators) for g in sorted(set(data.generators[labels == 1]))}
        never = np.isin(data.generators, [g for g, v in status.items() if v == "never seen"])
        results["seen_in_training"] = status
        if never.any() and (labels == 0).any():
            keep = (labels == 0) | never
            results["never_seen_vs_real"] = {"generators": sorted(set(data.generators[never])),
                                             **detection_metrics(labels[keep], probs[keep], threshold)}
    return results


def training_generators(name_or_path: str) -> list[str] | None:
    """The fake generators the model was trained on, from its folder's training_config.json (None if unknown)."""
    record = read_training_record(name_or_path) if Path(name_or_path).is_dir() else None
    return record.training_generators() if record else None


def calibration_measures(fit: CalibrationFit, data: EvaluationData, logits, model, calibrated_ece) -> np.ndarray:
    """Add the ECE on the evaluated data before and after the fit to `fit`; the uncalibrated p(fake)."""
    # The temperature divides the logits, so the uncalibrated ones are these times it.
    probs_before = fake_probs_from_logits(logits * fit["temperature_fitted"], fake_index(model.config))
    fit.update(ece_before=expected_calibration_error(data.labels, probs_before), ece_after=calibrated_ece)
    return probs_before


def robustness(model, data: EvaluationData, transform, batch_size: int, num_workers: int,
               names: list[str] | None = None) -> dict:
    """The metrics after each perturbation of train/evaluation/perturbations.py (those named, or every one)."""
    if unknown := sorted(set(names or ()) - set(PERTURBATIONS)):
        raise ValueError(f"unknown perturbations {unknown}; known: {', '.join(PERTURBATIONS)}")
    threshold, fake = float(get_calibration(model.config)["threshold"]), fake_index(model.config)
    sweep = {}
    for name, perturb in PERTURBATIONS.items():
        if names and name not in names:
            continue
        logits = score(model, data.files, transform, batch_size, num_workers, perturb, desc=name)
        sweep[name] = detection_metrics(data.labels, fake_probs_from_logits(logits, fake), threshold)
        logger.info("%s: AUC %s", name, sweep[name]["roc_auc"])
    return sweep


def write_outputs(output_dir: Path, results: EvaluationResults, data: EvaluationData, probs,
                  probs_before=None) -> None:
    """results.json, results.md and the three plots."""
    threshold = results["model"]["threshold"]
    plot_roc(data.labels, probs, output_dir / "roc.png", generators=data.generators)
    plot_score_histograms(data.labels, probs, output_dir / "scores.png", threshold)
    plot_reliability(data.labels, probs, output_dir / "reliability.png", before=probs_before)
    write_results(output_dir / RESULTS_FILE, results)
    (output_dir / "results.md").write_text(render_markdown(results))
    logger.info("Wrote %s and %s", output_dir / RESULTS_FILE, output_dir / "results.md")

