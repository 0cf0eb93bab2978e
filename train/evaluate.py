"""Evaluate a saved detector on image folders: metrics overall, per source and per generator, an optional robustness
sweep, optional calibration (temperature + threshold fitted on a separate folder and stored in the model), plots.

    python -m train.evaluate --model runs/atto --data_dir ../shared/data/ood --output_dir runs/atto/eval_ood \
        --robustness --fit_temperature --calibration_dir ../shared/data/val

Writes <output_dir>/results.json (read by the model card), results.md (the tables) and roc.png, scores.png,
reliability.png. Metric definitions: train/metrics.py. The decision threshold is the model's own
(config.calibration["threshold"], 0.5 unless calibrated), the one pipeline users and the app apply.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from torchvision.transforms import v2 as transforms_v2
from transformers import HfArgumentParser

from modeling import get_calibration, load_detector, save_detector
from modeling.detector import fake_index
from modeling.imageio import ImageReadError, read_image
from train.calibration import (THRESHOLD_POLICIES, calibrate, check_not_evaluated, choose_threshold, fit_temperature,
                               nll)
from train.data import load_image_folder
from train.families import families_of, seen_in_training
from train.eval_plots import plot_reliability, plot_roc, plot_score_histograms
from train.metrics import detection_metrics, expected_calibration_error, fake_probs_from_logits, grouped_metrics
from train.perturbations import PERTURBATIONS

logger = logging.getLogger(__name__)


@dataclass
class EvalArguments:
    model: str = field(metadata={"help": "A detector folder (save_detector) or a Hub model id."})
    data_dir: list[str] = field(metadata={
        "help": "Image folder(s) to evaluate (real/ + fake/, optionally metadata.csv with source and generator). "
                "Repeat the flag or list several.", "action": "extend"})
    output_dir: str = field(metadata={"help": "Where results.json, results.md and the plots go."})
    robustness: bool = field(default=False, metadata={
        "help": "Also evaluate after each perturbation in train/perturbations.py (JPEG, down-up scaling, blur, crop)."})
    fit_temperature: bool = field(default=False, metadata={
        "help": "Fit temperature scaling and a decision threshold on --calibration_dir and store both in the model "
                "(re-saved in place for a local folder, else into <output_dir>/model) before evaluating."})
    calibration_dir: str | None = field(default=None, metadata={
        "help": "Held-out folder for --fit_temperature (e.g. the val split); must not overlap any --data_dir."})
    threshold_policy: str = field(default="fpr", metadata={
        "help": "How --fit_temperature picks the decision threshold on --calibration_dir: fpr (flag at most "
                "--target_fpr of its reals) or balanced_accuracy (the best balanced accuracy on it).",
        "choices": list(THRESHOLD_POLICIES)})
    target_fpr: float = field(default=0.05, metadata={
        "help": "With --threshold_policy fpr: the threshold flags at most this fraction of the calibration folder's "
                "reals as fake."})
    native_crop_size: int | None = field(default=None, metadata={
        "help": "Score native pixels instead of the model's resize: a grid of crops of this size (e.g. the training "
                "crop) spread evenly over the unresized image, logits averaged. Default: the model's eval transform."})
    native_grid: int = field(default=3, metadata={"help": "With --native_crop_size: grid x grid crops per image."})
    batch_size: int = field(default=64)
    num_workers: int = field(default=min(4, os.cpu_count() or 1), metadata={"help": "DataLoader worker processes."})
    device: str | None = field(default=None, metadata={"help": "Default: cuda if available, else cpu."})


class _Images(torch.utils.data.Dataset):
    """Files (paths or bytes) -> tensors: decoded as the app decodes uploads, optionally perturbed, then the
    model's eval transform. An unreadable file stops the run (naming it) instead of being skipped: skipping would
    quietly change what the reported numbers were measured on."""

    def __init__(self, files, transform, perturb=None):
        self.files, self.transform, self.perturb = files, transform, perturb

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            img = read_image(self.files[i])
        except ImageReadError as e:
            raise ImageReadError(f"{self.files[i] if isinstance(self.files[i], str) else f'image {i}'}: {e}") from e
        if self.perturb is not None:
            img = self.perturb(img)
        return self.transform(img)


def eval_transform(model):
    """The model's own eval preprocessing from its config (what TimmWrapperImageProcessor applies).
    Not resolve_data_config(model=model.timm_model): after loading, that holds timm's defaults, not our config."""
    return create_transform(**resolve_data_config(pretrained_cfg=model.config.pretrained_cfg))


class NativeCrops:
    """PIL image -> (grid*grid, 3, size, size): crops of native pixels at evenly spread offsets (an image smaller
    than `size` is first enlarged, bicubic, until its short side is `size`), normalised like the model's input."""

    def __init__(self, size: int, grid: int, mean, std):
        self.size, self.grid = size, grid
        self.normalize = transforms_v2.Compose([transforms_v2.PILToTensor(),
                                                transforms_v2.ToDtype(torch.float32, scale=True),
                                                transforms_v2.Normalize(mean, std)])

    def __call__(self, img):
        if min(img.size) < self.size:
            scale = self.size / min(img.size)
            img = img.resize((max(self.size, round(img.width * scale)), max(self.size, round(img.height * scale))),
                             Image.BICUBIC)
        x = self.normalize(img)
        offsets = [np.linspace(0, n - self.size, self.grid).round().astype(int) for n in x.shape[1:]]
        return torch.stack([x[:, top:top + self.size, left:left + self.size]
                            for top in offsets[0] for left in offsets[1]])


def scoring_transform(model, args: EvalArguments):
    if args.native_crop_size is None:
        return eval_transform(model)
    cfg = model.config.pretrained_cfg
    return NativeCrops(args.native_crop_size, args.native_grid, cfg["mean"], cfg["std"])


def image_files(ds: datasets.Dataset) -> list:
    return [x["bytes"] or x["path"] for x in ds.cast_column("image", datasets.Image(decode=False))["image"]]


@torch.inference_mode()
def predict_logits(model, files, transform, batch_size=64, num_workers=0, perturb=None) -> np.ndarray:
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(_Images(files, transform, perturb), batch_size=batch_size,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    outputs = []
    for pixels in loader:
        crops = pixels.shape[1] if pixels.ndim == 5 else 0  # NativeCrops: average the logits of each image's crops
        pixels = pixels.flatten(0, 1) if crops else pixels
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            logits = model(pixel_values=pixels.to(device, non_blocking=True)).logits.float().cpu()
        outputs.append(logits.unflatten(0, (-1, crops)).mean(1) if crops else logits)
    return torch.cat(outputs).numpy()


def training_generators(model: str) -> list[str] | None:
    """The fake generators a saved detector was trained on, from its training_config.json (None if unknown)."""
    record = Path(model, "training_config.json")
    if not record.is_file():
        return None
    data = json.loads(record.read_text()).get("data", {})
    parts = [*data.get("train", []), *data.get("rehearsal", [])]
    if not parts or any("generators" not in part for part in parts):
        return None
    return sorted({g for part in parts for g in part["generators"]})


def class_targets(labels, config) -> np.ndarray:
    """Data labels (real=0, fake=1) -> the model's class indices (its label order may differ)."""
    fake = fake_index(config)
    real = int(config.label2id.get("real", 1 - fake))
    return np.where(np.asarray(labels) == 1, fake, real)


def fit_calibration(model, args: EvalArguments) -> dict:
    """Fit on args.calibration_dir, fold into the model, return the numbers for results.json."""
    ds = load_image_folder(args.calibration_dir)
    labels = np.asarray(ds["label"])
    logits = predict_logits(model, image_files(ds), scoring_transform(model, args), args.batch_size,
                            args.num_workers)
    targets = class_targets(labels, model.config)
    temperature = fit_temperature(logits, targets)
    probs_before = fake_probs_from_logits(logits, fake_index(model.config))
    probs = fake_probs_from_logits(logits / temperature, fake_index(model.config))
    target_fpr = args.target_fpr if args.threshold_policy == "fpr" else None
    threshold = choose_threshold(labels, probs, args.threshold_policy, args.target_fpr)
    cal = calibrate(model, temperature, threshold, target_fpr, fitted_on=str(args.calibration_dir),
                    policy=args.threshold_policy)
    at_threshold = detection_metrics(labels, probs, threshold)
    (tn, fp), _ = at_threshold["confusion_matrix"]
    return {
        "temperature": cal["temperature"], "temperature_fitted": temperature, "threshold": threshold,
        "target_fpr": target_fpr, "threshold_policy": args.threshold_policy, "fitted_on": str(args.calibration_dir),
        "calibration_set": {
            "n": int(labels.size), "n_real": int((labels == 0).sum()), "n_fake": int((labels == 1).sum()),
            "nll_before": nll(logits, targets), "nll_after": nll(logits, targets, temperature),
            "ece_before": expected_calibration_error(labels, probs_before),
            "ece_after": expected_calibration_error(labels, probs),
            "fpr": fp / (tn + fp), "tpr": at_threshold["recall"],
        },
    }


def _counts(values) -> dict[str, int]:
    names, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return {str(k): int(v) for k, v in zip(names, counts)}


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _metrics_table(blocks: dict[str, dict], first_column: str) -> list[str]:
    """One row per block. Error rates per class instead of precision/F1, which mean nothing in a one-class group:
    a source of reals is judged by how many it flags, a generator's fakes by how many are caught."""
    columns = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "tpr_at_1pct_fpr",
               "tpr_at_5pct_fpr", "ece")
    header = [first_column, "n", "real", "fake", "reals flagged (FPR)", "fakes caught (TPR)", "acc", "bal. acc",
              "AUC", "AP", "TPR@1%FPR", "TPR@5%FPR", "ECE"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in blocks.items():
        (tn, fp), (fn, tp) = m["confusion_matrix"]
        fpr = fp / (tn + fp) if tn + fp else None
        cells = [name, m["n"], tn + fp, fn + tp, fpr, m["recall"]] + [m[c] for c in columns]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return lines


def render_markdown(results: dict) -> str:
    model, data, overall = results["model"], results["data"], results["overall"]
    (tn, fp), (fn, tp) = overall["confusion_matrix"]
    lines = [
        f"# Evaluation of `{model['name_or_path']}`", "",
        f"Model: {model['architecture']} at {model['image_size']} px, temperature {_fmt(model['temperature'])}, "
        f"decision threshold {_fmt(model['threshold'])} (fake when p(fake) >= threshold).  ",
        f"Data: {', '.join(f'`{d}`' for d in data['dirs'])}: {data['n']} images ({data['n_real']} real, "
        f"{data['n_fake']} fake).  ",
        f"Runtime: {results['runtime']['seconds']:.0f} s on {results['runtime']['device']} "
        f"({results['runtime']['images_per_second']:.1f} images/s on the clean pass).", "",
        "Positive class = fake. TPR@x%FPR is the share of fakes caught when at most x% of reals are flagged; "
        "ECE uses 15 equal-width bins of p(fake). — marks a metric that is undefined for that group "
        "(e.g. AUC or balanced accuracy where all images are one class: read recall for a generator's fakes, "
        "accuracy for a source of reals).", "",
        "## Overall", "", *_metrics_table({"all": overall}, ""), "",
        f"Precision {_fmt(overall['precision'])}, F1 {_fmt(overall['f1'])}. Confusion matrix (rows true real/fake, "
        f"columns predicted real/fake): [[{tn}, {fp}], [{fn}, {tp}]]", "",
        "## By source", "", *_metrics_table(results["by_source"], "source"), "",
        "## By generator", "", *_metrics_table(results["by_generator"], "generator"), "",
    ]
    if results.get("by_generator_vs_real"):
        lines += ["## Each generator against all reals", "",
                  "Every generator's fakes pooled with all the real images: how well the detector separates that "
                  "generator from real photos.", "",
                  *_metrics_table(results["by_generator_vs_real"], "generator"), ""]
    if results.get("robustness"):
        clean_auc, clean_bacc = overall["roc_auc"], overall["balanced_accuracy"]

        def delta(value, ref):
            return "—" if value is None or ref is None else f"{value - ref:+.3f}"

        lines += ["## Robustness", "",
                  "The same images after each perturbation (applied to the file before the model's preprocessing).",
                  "", "| perturbation | AUC | Δ AUC | bal. acc | Δ bal. acc | recall | TPR@5%FPR | ECE |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| none | {_fmt(clean_auc)} | | {_fmt(clean_bacc)} | | {_fmt(overall['recall'])} | "
                  f"{_fmt(overall['tpr_at_5pct_fpr'])} | {_fmt(overall['ece'])} |"]
        for name, m in results["robustness"].items():
            lines.append(f"| {name} | {_fmt(m['roc_auc'])} | {delta(m['roc_auc'], clean_auc)} | "
                         f"{_fmt(m['balanced_accuracy'])} | {delta(m['balanced_accuracy'], clean_bacc)} | "
                         f"{_fmt(m['recall'])} | {_fmt(m['tpr_at_5pct_fpr'])} | {_fmt(m['ece'])} |")
        lines.append("")
    if results.get("calibration"):
        c, s = results["calibration"], results["calibration"]["calibration_set"]
        lines += ["## Calibration", "",
                  f"Fitted on `{c['fitted_on']}` ({s['n_real']} real, {s['n_fake']} fake), stored in the model's "
                  f"config: temperature {c['temperature']:.3f}, threshold {c['threshold']:.4f} "
                  + (f"for a target FPR of {c['target_fpr']:.0%}" if c.get("target_fpr") is not None
                     else f"by policy {c.get('threshold_policy')}")
                  + f" (on that folder: FPR {_fmt(s['fpr'])}, TPR {_fmt(s['tpr'])}; NLL "
                  f"{s['nll_before']:.3f} -> {s['nll_after']:.3f}).  ",
                  f"ECE on the evaluated data: {_fmt(c['ece_before'])} before, {_fmt(c['ece_after'])} after.", ""]
    lines += ["## Plots", "", "![ROC](roc.png) ![scores](scores.png) ![reliability](reliability.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(EvalArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.fit_temperature:
        if not args.calibration_dir:
            raise SystemExit("--fit_temperature needs --calibration_dir (a held-out folder such as the val split)")
        check_not_evaluated(args.calibration_dir, args.data_dir)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    start = time.perf_counter()

    model = load_detector(args.model).eval().to(device)
    calibration = None
    if args.fit_temperature:
        calibration = fit_calibration(model, args)
        model_dir = Path(args.model) if Path(args.model).is_dir() else output_dir / "model"
        save_detector(model.cpu(), model_dir)
        model.to(device)
        logger.info("Calibrated model saved to %s: %s", model_dir, get_calibration(model.config))

    ds = datasets.concatenate_datasets([load_image_folder(d) for d in args.data_dir])
    labels, sources, generators = np.asarray(ds["label"]), ds["source"], ds["generator"]
    files, transform = image_files(ds), scoring_transform(model, args)
    cal = get_calibration(model.config)
    threshold, fake = float(cal["threshold"]), fake_index(model.config)
    loader_args = dict(batch_size=args.batch_size, num_workers=args.num_workers)

    clean_start = time.perf_counter()
    logits = predict_logits(model, files, transform, **loader_args)
    probs = fake_probs_from_logits(logits, fake)
    clean_seconds = time.perf_counter() - clean_start
    logger.info("Scored %d images in %.1f s", len(files), clean_seconds)

    results = {
        "args": asdict(args),
        "model": {"name_or_path": args.model, "architecture": model.config.architecture,
                  "image_size": int(model.config.pretrained_cfg["input_size"][-1]),
                  "num_parameters": sum(p.numel() for p in model.parameters()),
                  "temperature": float(cal["temperature"]), "threshold": threshold,
                  "calibration": cal},
        "data": {"dirs": [str(d) for d in args.data_dir], "n": int(labels.size), "n_real": int((labels == 0).sum()),
                 "n_fake": int((labels == 1).sum()), "sources": _counts(sources), "generators": _counts(generators)},
        "overall": detection_metrics(labels, probs, threshold),
        "by_source": grouped_metrics(labels, probs, sources, threshold),
        "by_generator": grouped_metrics(labels, probs, generators, threshold),
    }
    families = np.asarray(families_of(generators), dtype=object)
    results["by_family"] = grouped_metrics(labels, probs, families, threshold)
    generators = np.asarray(generators, dtype=object)
    if (labels == 0).any():
        for key, groups in (("by_generator_vs_real", generators), ("by_family_vs_real", families)):
            results[key] = {g: detection_metrics(labels[(labels == 0) | (groups == g)],
                                                 probs[(labels == 0) | (groups == g)], threshold)
                            for g in sorted(set(groups[labels == 1]))}
    trained_on = training_generators(args.model)
    if trained_on is not None:
        status = {g: seen_in_training(g, trained_on) for g in sorted(set(generators[labels == 1]))}
        never = np.isin(generators, [g for g, v in status.items() if v == "never seen"])
        results["seen_in_training"] = status
        if never.any() and (labels == 0).any():
            keep = (labels == 0) | never
            results["never_seen_vs_real"] = {"generators": sorted(set(generators[never])),
                                             **detection_metrics(labels[keep], probs[keep], threshold)}
    if calibration:
        # The temperature divides the logits, so the uncalibrated ones are these times it.
        probs_before = fake_probs_from_logits(logits * calibration["temperature_fitted"], fake)
        calibration.update(ece_before=expected_calibration_error(labels, probs_before),
                           ece_after=results["overall"]["ece"])
        results["calibration"] = calibration
    if args.robustness:
        results["robustness"] = {}
        for name, perturb in PERTURBATIONS.items():
            p = fake_probs_from_logits(predict_logits(model, files, transform, perturb=perturb, **loader_args), fake)
            results["robustness"][name] = detection_metrics(labels, p, threshold)
            logger.info("%s: AUC %s", name, _fmt(results["robustness"][name]["roc_auc"]))

    results["runtime"] = {"seconds": time.perf_counter() - start, "device": str(device),
                          "images_per_second": len(files) / clean_seconds}
    plot_roc(labels, probs, output_dir / "roc.png", generators=generators)
    plot_score_histograms(labels, probs, output_dir / "scores.png", threshold)
    plot_reliability(labels, probs, output_dir / "reliability.png",
                     before=probs_before if calibration else None)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / "results.md").write_text(render_markdown(results))
    logger.info("Wrote %s and %s", output_dir / "results.json", output_dir / "results.md")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
