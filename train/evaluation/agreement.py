"""Does val track ood? The learning curve and agreement tables of several scored models.

    python -m train.evaluation.agreement runs/r3_baseline runs/r3_long/checkpoint-500 ... [--output table.md]

Each model folder must hold `eval_ood/results.json` and `eval_val/results.json` (written by `python -m
train.evaluation --output_dir <model>/eval_val`, ...). A Trainer checkpoint's `trainer_state.json` adds its step
and the mean training loss since the previous checkpoint; without `eval_val/`, the val figures are the Trainer's
own evaluation at that step (the same metrics on its validation set, so a checkpoint need not be scored twice).
The table has one row per model, in the order given, and the Spearman rank correlation of val AUC against ood AUC
over all rows: whether picking on val picks well on ood.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import spearmanr

from modeling.formats import RESULTS_FILE, format_cell, markdown_table, read_results


@dataclass
class Row:
    name: str
    val_auc: float | None
    ood_auc: float | None
    val_balanced_accuracy: float | None
    ood_balanced_accuracy: float | None
    step: int | None = None
    train_loss: float | None = None


def read_trainer_state(folder: Path) -> dict | None:
    """A Trainer checkpoint's `trainer_state.json`, or None for a folder that is not one."""
    state_file = folder / "trainer_state.json"
    return json.loads(state_file.read_text()) if state_file.is_file() else None


def training_progress(state: dict | None) -> tuple[int | None, float | None]:
    """(global step, mean training loss over the logs since the previous save) of a Trainer checkpoint's state."""
    if state is None:
        return None, None
    step, every = state["global_step"], state.get("save_steps") or state["global_step"]
    losses = [e["loss"] for e in state["log_history"] if "loss" in e and step - every < e["step"] <= step]
    return step, sum(losses) / len(losses) if losses else None


def trainer_evaluation(state: dict | None) -> dict | None:
    """The Trainer's evaluation metrics logged at a checkpoint's own step (prefix dropped), or None."""
    if state is None:
        return None
    logged = [e for e in state["log_history"] if e.get("step") == state["global_step"] and "eval_roc_auc" in e]
    return {k.removeprefix("eval_"): v for k, v in logged[-1].items()} if logged else None


def read_row(folder: str | Path, val_name: str = "eval_val", ood_name: str = "eval_ood") -> Row:
    folder = Path(folder)
    state = read_trainer_state(folder)
    val_file = folder / val_name / RESULTS_FILE
    val = read_results(val_file)["overall"] if val_file.is_file() else trainer_evaluation(state)
    if val is None:
        raise FileNotFoundError(f"{val_file} is missing and {folder} has no Trainer evaluation at its step")
    ood = read_results(folder / ood_name / RESULTS_FILE)["overall"]
    step, loss = training_progress(state)
    name = f"{folder.parent.name}/{folder.name}" if folder.name.startswith("checkpoint-") else folder.name
    return Row(name, val["roc_auc"], ood["roc_auc"], val["balanced_accuracy"], ood["balanced_accuracy"], step, loss)


def rank_correlation(rows: list[Row]) -> float | None:
    pairs = [(r.val_auc, r.ood_auc) for r in rows if r.val_auc is not None and r.ood_auc is not None]
    if len(pairs) < 3:
        return None
    rho = spearmanr(*zip(*pairs)).statistic
    return None if rho != rho else float(rho)  # NaN when one side is constant


def render(rows: list[Row]) -> str:
    header = ("model", "step", "train loss", "val AUC", "ood AUC", "val bal. acc", "ood bal. acc")
    table = markdown_table(header, ((r.name, r.step, r.train_loss, r.val_auc, r.ood_auc, r.val_balanced_accuracy,
                                     r.ood_balanced_accuracy) for r in rows))
    rho = format_cell(rank_correlation(rows), digits=2)
    return f"{table}\n\nSpearman rank correlation of val AUC with ood AUC over {len(rows)} models: {rho}\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m train.evaluation.agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model folders holding eval_val/ and eval_ood/ results")
    parser.add_argument("--val_name", default="eval_val")
    parser.add_argument("--ood_name", default="eval_ood")
    parser.add_argument("--output", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    table = render([read_row(m, args.val_name, args.ood_name) for m in args.models])
    if args.output:
        Path(args.output).write_text(table)
    print(table, end="")
    return table


if __name__ == "__main__":
    main()
