"""Several detectors side by side on the same folders: one table of every metric, overall and per source, and one
ROC plot with a curve per model.

    python -m train.evaluation --model runs/convnext --model runs/effnet --data_dir data/ood --output_dir runs/cmp

(`--model` given more than once, or with several values, turns the evaluation into this comparison.) Writes
comparison.md and comparison.csv (one row per model and source, "all" first), comparison.json and roc.png. Each model
is scored with its own preprocessing and its own decision threshold, as `python -m train.evaluation` scores one.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from modeling.formats import METRIC_KEYS, markdown_table

logger = logging.getLogger(__name__)
# The table's columns: every scalar of train.evaluation.metrics.detection_metrics, then the confusion counts
METRICS = tuple(k for k in METRIC_KEYS if k != "confusion_matrix")
COUNTS = ("tn", "fp", "fn", "tp")


@dataclass
class CompareArguments:
    model: list[str] = field(metadata={"help": "Two or more detectors (folders or Hub ids).", "action": "extend"})
    data_dir: list[str] = field(metadata={"help": "Image folder(s) (real/ + fake/, optionally metadata.csv).",
                                          "action": "extend"})
    output_dir: str = field(metadata={"help": "Where comparison.md/.csv/.json and roc.png go."})
    batch_size: int = field(default=64)
    num_workers: int = field(default=min(4, os.cpu_count() or 1))
    device: str | None = field(default=None, metadata={"help": "Default: cuda if available, else cpu."})


def requested_models(argv: Sequence[str]) -> list[str]:
    """The values of every --model flag (repeated, or several after one flag)."""
    models, taking = [], False
    for token in argv:
        if token.startswith("--model="):
            models.append(token.split("=", 1)[1])
            taking = False
        elif token.startswith("-"):
            taking = token == "--model"
        elif taking:
            models.append(token)
    return models


def is_comparison(argv: Sequence[str]) -> bool:
    return len(requested_models(argv)) > 1


def model_names(models: Sequence[str]) -> list[str]:
    """Short names for the table: the folder's or repo's last part, made unique with its parent when needed."""
    short = [Path(m.rstrip("/")).name for m in models]
    return [str(Path(m.rstrip("/")).relative_to(Path(m.rstrip("/")).parent.parent)) if short.count(s) > 1 else s
            for m, s in zip(models, short)]


def table_rows(results: dict) -> list[dict]:
    """results: model name -> {"overall": metrics, "by_source": {source: metrics}} -> one flat row per model/source."""
    rows = []
    for name, result in results.items():
        for source, m in {"all": result["overall"], **result["by_source"]}.items():
            (tn, fp), (fn, tp) = m["confusion_matrix"]
            rows.append({"model": name, "source": source, **{k: m[k] for k in METRICS},
                         **dict(zip(COUNTS, (tn, fp, fn, tp))), "threshold": result["threshold"]})
    return rows


def render_markdown(rows: list[dict], info: dict) -> str:
    columns = ["model", "source", *METRICS, *COUNTS, "threshold"]
    lines = [f"# {len(info['models'])} detectors on {', '.join(f'`{d}`' for d in info['data_dir'])}", "",
             "Every metric of `python -m train.evaluation` (positive class = fake; each model at its own threshold; "
             "— where a metric is undefined for a one-class group). Models: "
             + "; ".join(f"{n} = `{m}` ({a}, {s} px)" for n, m, a, s in info["models"]) + ".", "",
             markdown_table(columns, ([row[c] for c in columns] for row in rows))]
    return "\n".join(lines + ["", "![ROC](roc.png)", ""])


def plot_models_roc(labels, probs_by_model: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, probs in probs_by_model.items():
        fpr, tpr, _ = roc_curve(labels, probs)
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} (AUC {roc_auc_score(labels, probs):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlabel="false-positive rate (reals flagged fake)", ylabel="true-positive rate (fakes caught)",
           title="ROC, one curve per model", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(CompareArguments, prog="python -m train.evaluation (several --model)")
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import datasets
    import numpy as np
    import torch

    from modeling.detector import fake_index, get_calibration, load_detector
    from train.data.folders import load_image_folder
    from train.evaluation.metrics import detection_metrics, fake_probs_from_logits, grouped_metrics
    from train.evaluation.predict import image_files, predict_logits, resolve_scoring, scoring_transform

    if len(args.model) < 2:
        raise SystemExit("a comparison needs two or more --model")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ds = datasets.concatenate_datasets([load_image_folder(d) for d in args.data_dir])
    labels, sources, files = np.asarray(ds["label"]), ds["source"], image_files(ds)
    if len(np.unique(labels)) < 2:
        raise SystemExit("the data needs real and fake images for a ROC curve")

    results, probs_by_model, info = {}, {}, {"data_dir": args.data_dir, "models": []}
    for name, path in zip(model_names(args.model), args.model):
        model = load_detector(path).eval().to(device)
        threshold = float(get_calibration(model.config)["threshold"])
        transform = scoring_transform(model, resolve_scoring(model))  # each model in its own view
        logits = predict_logits(model, files, transform, args.batch_size, args.num_workers)
        probs = fake_probs_from_logits(logits, fake_index(model.config))
        size = int(model.config.pretrained_cfg["input_size"][-1])
        results[name] = {"model": path, "architecture": model.config.architecture, "image_size": size,
                         "threshold": threshold, "overall": detection_metrics(labels, probs, threshold),
                         "by_source": grouped_metrics(labels, probs, sources, threshold)}
        probs_by_model[name] = probs
        info["models"].append((name, path, model.config.architecture, size))
        logger.info("%s: AUC %s", name, results[name]["overall"]["roc_auc"])
        del model

    rows = table_rows(results)
    with open(output_dir / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (output_dir / "comparison.md").write_text(render_markdown(rows, info))
    (output_dir / "comparison.json").write_text(json.dumps(results, indent=2))
    plot_models_roc(labels, probs_by_model, output_dir / "roc.png")
    logger.info("Wrote %s", ", ".join(str(output_dir / f) for f in ("comparison.md", "comparison.csv", "roc.png")))
    return results
