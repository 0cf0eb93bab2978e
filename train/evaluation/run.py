"""Evaluate a saved detector on image folders: metrics overall, per source and per generator, an optional robustness
sweep, optional calibration (temperature + threshold fitted on a separate folder and stored in the model), plots.

    python -m train.evaluation --model runs/atto --data_dir ../shared/data/ood --output_dir runs/atto/eval_ood \
        --robustness --fit_temperature --calibration_dir ../shared/data/val

Writes <output_dir>/results.json (read by the model card), results.md (the tables) and roc.png, scores.png,
reliability.png. Metric definitions: train/evaluation/metrics.py. The decision threshold is the model's own
(config.calibration["threshold"], 0.5 unless calibrated), the one pipeline users and the app apply.

Only the arguments are imported up front (torch, datasets and the plots load in main), so --help answers at once.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from modeling.formats import (
    DEFAULT_TARGET_FPR,
    DEFAULT_THRESHOLD_POLICY,
    RESULTS_FILE,
    THRESHOLD_POLICIES,
    EvaluationResults,
    write_results,
)

logger = logging.getLogger(__name__)


@dataclass
class EvalArguments:
    model: str = field(metadata={"help": "A detector folder (save_detector) or a Hub model id."})
    data_dir: list[str] = field(metadata={
        "help": "Image folder(s) to evaluate (real/ + fake/, optionally metadata.csv with source and generator). "
                "Repeat the flag or list several.", "action": "extend"})
    output_dir: str = field(metadata={"help": "Where results.json, results.md and the plots go."})
    robustness: bool = field(default=False, metadata={
        "help": "Also evaluate after each perturbation in train/evaluation/perturbations.py (JPEG, down-up scaling, "
                "blur, crop)."})
    fit_temperature: bool = field(default=False, metadata={
        "help": "Fit temperature scaling and a decision threshold on --calibration_dir and store both in the model "
                "(re-saved in place for a local folder, else into <output_dir>/model) before evaluating."})
    calibration_dir: str | None = field(default=None, metadata={
        "help": "Held-out folder for --fit_temperature (e.g. the val split); must not overlap any --data_dir."})
    threshold_policy: str = field(default=DEFAULT_THRESHOLD_POLICY, metadata={
        "help": "How --fit_temperature picks the decision threshold on --calibration_dir: fpr (flag at most "
                "--target_fpr of its reals) or balanced_accuracy (the best balanced accuracy on it).",
        "choices": list(THRESHOLD_POLICIES)})
    target_fpr: float = field(default=DEFAULT_TARGET_FPR, metadata={
        "help": "With --threshold_policy fpr: the threshold flags at most this fraction of the calibration folder's "
                "reals as fake."})
    native_crop_size: int | None = field(default=None, metadata={
        "help": "Score native pixels instead of the model's resize: a grid of crops of this size (e.g. the training "
                "crop) spread evenly over the unresized image, logits averaged. Default: the model's eval transform."})
    native_grid: int = field(default=3, metadata={"help": "With --native_crop_size: grid x grid crops per image."})
    batch_size: int = field(default=64)
    num_workers: int = field(default=min(4, os.cpu_count() or 1), metadata={"help": "DataLoader worker processes."})
    device: str | None = field(default=None, metadata={"help": "Default: cuda if available, else cpu."})


def _counts(values) -> dict[str, int]:
    import numpy as np

    names, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return {str(k): int(v) for k, v in zip(names, counts)}


def main(argv: list[str] | None = None) -> EvaluationResults:
    import sys

    from train.evaluation import compare
    if compare.is_comparison(sys.argv[1:] if argv is None else argv):  # several --model: side by side (compare.py)
        return compare.main(argv)
    parser = HfArgumentParser(EvalArguments, prog="python -m train.evaluation")
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import datasets
    import numpy as np
    import torch

    from modeling.detector import fake_index, get_calibration, load_detector, save_detector
    from train.data.folders import load_image_folder
    from train.evaluation.calibration import check_not_evaluated, fit_calibration
    from train.evaluation.metrics import (
        detection_metrics,
        expected_calibration_error,
        fake_probs_from_logits,
        grouped_metrics,
    )
    from train.evaluation.perturbations import PERTURBATIONS
    from train.evaluation.plots import plot_reliability, plot_roc, plot_score_histograms
    from train.evaluation.predict import image_files, predict_logits, scoring_transform
    from train.evaluation.report import render_markdown
    from train.families import families_of, seen_in_training, training_generators

    if args.fit_temperature:
        if not args.calibration_dir:
            raise SystemExit("--fit_temperature needs --calibration_dir (a held-out folder such as the val split)")
        check_not_evaluated(args.calibration_dir, args.data_dir)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    start = time.perf_counter()

    model = load_detector(args.model).eval().to(device)
    transform = scoring_transform(model, args.native_crop_size, args.native_grid)
    calibration = None
    if args.fit_temperature:
        calibration = fit_calibration(model, args.calibration_dir, args.target_fpr, args.batch_size, args.num_workers,
                                      transform, args.threshold_policy)
        model_dir = Path(args.model) if Path(args.model).is_dir() else output_dir / "model"
        save_detector(model.cpu(), model_dir)
        model.to(device)
        logger.info("Calibrated model saved to %s: %s", model_dir, get_calibration(model.config))

    ds = datasets.concatenate_datasets([load_image_folder(d) for d in args.data_dir])
    labels, sources, generators = np.asarray(ds["label"]), ds["source"], ds["generator"]
    files = image_files(ds)
    cal = get_calibration(model.config)
    threshold, fake = float(cal["threshold"]), fake_index(model.config)
    loader_args = dict(batch_size=args.batch_size, num_workers=args.num_workers)

    clean_start = time.perf_counter()
    logits = predict_logits(model, files, transform, **loader_args)
    probs = fake_probs_from_logits(logits, fake)
    clean_seconds = time.perf_counter() - clean_start
    logger.info("Scored %d images in %.1f s", len(files), clean_seconds)

    results: EvaluationResults = {
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
            logger.info("%s: AUC %s", name, results["robustness"][name]["roc_auc"])

    results["runtime"] = {"seconds": time.perf_counter() - start, "device": str(device),
                          "images_per_second": len(files) / clean_seconds}
    plot_roc(labels, probs, output_dir / "roc.png", generators=generators)
    plot_score_histograms(labels, probs, output_dir / "scores.png", threshold)
    plot_reliability(labels, probs, output_dir / "reliability.png",
                     before=probs_before if calibration else None)
    write_results(output_dir / RESULTS_FILE, results)
    (output_dir / "results.md").write_text(render_markdown(results))
    logger.info("Wrote %s and %s", output_dir / RESULTS_FILE, output_dir / "results.md")
    return results


if __name__ == "__main__":
    main()
