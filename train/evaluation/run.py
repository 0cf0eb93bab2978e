"""Evaluate a saved detector on image folders: metrics overall, per source and per generator, an optional robustness
sweep, optional calibration (temperature + threshold fitted on a separate folder and saved with the model), plots.

    python -m train.evaluation --model runs/atto --data_dir ../shared/data/ood --output_dir runs/atto/eval_ood \
        --robustness --calibrate --calibration_dir ../shared/data/val --calibrated_model_dir runs/atto

Writes <output_dir>/results.json (read by the model card), results.md (the tables) and roc.png, scores.png,
reliability.png. Metric definitions: train/evaluation/metrics.py. The decision threshold is the model's own
(config.calibration["threshold"], 0.5 unless calibrated), the one pipeline users and the app apply.

With --calibrate the model is calibrated first and the evaluation measures the calibrated model, which is saved to
--calibrated_model_dir: a new folder by default (<output_dir>/model), or the --model folder itself, whose
calibration is then rewritten in place (what `hub.push` of that folder publishes).

Only the arguments are imported up front (the steps, with torch and datasets, load in main), so --help answers at
once.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from modeling.formats import (
    DEFAULT_BAND_ACCURACY,
    DEFAULT_TARGET_FPR,
    DEFAULT_THRESHOLD_POLICY,
    THRESHOLD_POLICIES,
    EvaluationResults,
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
                "blur, crop, re-share)."})
    perturbations: list[str] = field(default_factory=list, metadata={
        "help": "With --robustness: only these perturbations (names as in the sweep); default: every one.",
        "action": "extend"})
    calibrate: bool = field(default=False, metadata={
        "help": "Before evaluating, fit temperature scaling and a decision threshold on --calibration_dir, fold both "
                "into the model and save it to --calibrated_model_dir; the evaluation then measures that model."})
    calibration_dir: str | None = field(default=None, metadata={
        "help": "Held-out folder for --calibrate (e.g. the val split); must not overlap any --data_dir."})
    calibrated_model_dir: str | None = field(default=None, metadata={
        "help": "Where --calibrate saves the calibrated model. Default: <output_dir>/model, a new folder. Give the "
                "--model folder itself to rewrite its calibration in place."})
    threshold_policy: str = field(default=DEFAULT_THRESHOLD_POLICY, metadata={
        "help": "How --calibrate picks the decision threshold on --calibration_dir: fpr (flag at most "
                "--target_fpr of its reals) or balanced_accuracy (the best balanced accuracy on it).",
        "choices": list(THRESHOLD_POLICIES)})
    target_fpr: float = field(default=DEFAULT_TARGET_FPR, metadata={
        "help": "With --threshold_policy fpr: the threshold flags at most this fraction of the calibration folder's "
                "reals as fake."})
    band_accuracy: float = field(default=DEFAULT_BAND_ACCURACY, metadata={
        "help": "With --calibrate: the verdict band (Uncertain inside it) is the narrowest around the threshold "
                "outside which at least this share of --calibration_dir's verdicts is right."})
    native_crop_size: int | None = field(default=None, metadata={
        "help": "Score native pixels: a grid of crops of this size (e.g. the training crop) spread evenly over the "
                "unresized image, logits averaged (modeling/views.py). 0: the resized view of timm's eval "
                "transform. Default: the model's own view (config.scoring), else the resized one."})
    native_grid: int | None = field(default=None, metadata={
        "help": "With --native_crop_size: grid x grid crops per image (default 4)."})
    batch_size: int = field(default=64)
    num_workers: int = field(default=min(4, os.cpu_count() or 1), metadata={"help": "DataLoader worker processes."})
    device: str | None = field(default=None, metadata={"help": "Default: cuda if available, else cpu."})


def parse_args(argv: list[str] | None = None) -> EvalArguments:
    (args,) = HfArgumentParser(EvalArguments, prog="python -m train.evaluation").parse_args_into_dataclasses(args=argv)
    if args.calibrate:
        if not args.calibration_dir:
            raise SystemExit("--calibrate needs --calibration_dir (a held-out folder such as the val split)")
        from train.evaluation.calibration import check_not_evaluated

        check_not_evaluated(args.calibration_dir, args.data_dir)
    return args


def main(argv: list[str] | None = None) -> EvaluationResults:
    import sys

    from train.evaluation import compare
    if compare.is_comparison(sys.argv[1:] if argv is None else argv):  # several --model: side by side (compare.py)
        return compare.main(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from modeling.detector import fake_index
    from train.evaluation import steps
    from train.evaluation.metrics import fake_probs_from_logits
    from train.evaluation.predict import resolve_scoring, scoring_transform

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    start = time.perf_counter()
    batches = dict(batch_size=args.batch_size, num_workers=args.num_workers)

    model = steps.load_model(args.model, device)
    scoring = resolve_scoring(model, args.native_crop_size, args.native_grid)
    transform = scoring_transform(model, scoring)
    model_path, fit = args.model, None
    if args.calibrate:
        local = Path(args.model) if Path(args.model).is_dir() else None
        model_path = args.calibrated_model_dir or str(output_dir / "model")
        fit = steps.calibrate(model, args.calibration_dir, Path(model_path), local, args.target_fpr,
                              args.threshold_policy, args.band_accuracy, scoring, **batches)

    data = steps.load_data(args.data_dir)
    clean_start = time.perf_counter()
    logits = steps.score(model, data.files, transform, **batches)
    clean_seconds = time.perf_counter() - clean_start
    logger.info("Scored %d images in %.1f s", len(data.files), clean_seconds)
    probs = fake_probs_from_logits(logits, fake_index(model.config))

    results = steps.measure(asdict(args), model_path, model, data, probs, steps.training_generators(model_path),
                            scoring)
    probs_before = None
    if fit:
        probs_before = steps.calibration_measures(fit, data, logits, model, results["overall"]["ece"])
        results["calibration"] = fit
    if args.robustness:
        results["robustness"] = steps.robustness(model, data, transform, names=args.perturbations, **batches)
    results["runtime"] = {"seconds": time.perf_counter() - start, "device": str(device),
                          "images_per_second": len(data.files) / clean_seconds}
    steps.write_outputs(output_dir, results, data, probs, probs_before)
    return results


if __name__ == "__main__":
    main()
