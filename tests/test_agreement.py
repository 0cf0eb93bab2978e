"""train/evaluation/agreement.py: the learning-curve / val-vs-ood agreement table."""
import json

import pytest

from modeling.formats import RESULTS_FILE, write_results
from train.evaluation.agreement import main, rank_correlation, read_row


def _scored(folder, val_auc, ood_auc, state=None):
    for name, auc in (("eval_val", val_auc), ("eval_ood", ood_auc)):
        (folder / name).mkdir(parents=True)
        write_results(folder / name / RESULTS_FILE, {"overall": {"roc_auc": auc, "balanced_accuracy": auc - 0.1}})
    if state:
        (folder / "trainer_state.json").write_text(json.dumps(state))
    return folder


def test_checkpoint_row_has_step_and_the_loss_since_the_previous_save(tmp_path):
    state = {"global_step": 1000, "save_steps": 500, "log_history": [
        {"step": 450, "loss": 0.9}, {"step": 500, "loss": 0.7}, {"step": 750, "loss": 0.5},
        {"step": 1000, "loss": 0.3}, {"step": 1000, "eval_roc_auc": 0.8}]}
    row = read_row(_scored(tmp_path / "run" / "checkpoint-1000", 0.8, 0.7, state))
    assert (row.name, row.step, row.val_auc, row.ood_auc) == ("run/checkpoint-1000", 1000, 0.8, 0.7)
    assert row.train_loss == pytest.approx(0.4)


def test_rank_correlation_says_whether_val_orders_models_as_ood_does(tmp_path):
    agree = [read_row(_scored(tmp_path / f"a{i}", v, o)) for i, (v, o) in enumerate([(.6, .5), (.7, .6), (.8, .9)])]
    disagree = [read_row(_scored(tmp_path / f"d{i}", v, o)) for i, (v, o) in enumerate([(.6, .9), (.7, .6), (.8, .5)])]
    assert rank_correlation(agree) == pytest.approx(1.0)
    assert rank_correlation(disagree) == pytest.approx(-1.0)
    assert rank_correlation(agree[:2]) is None  # too few models to say


def test_command_writes_one_row_per_model_in_order(tmp_path):
    folders = [str(_scored(tmp_path / name, v, o)) for name, v, o in (("base", .6, .7), ("long", .7, .8))]
    table = main([*folders, "--output", str(tmp_path / "t.md")])
    rows = [line for line in table.splitlines() if line.startswith("| base") or line.startswith("| long")]
    assert [r.split(" | ")[0] for r in rows] == ["| base", "| long"]
    assert "| 0.700 | 0.800 |" in rows[1]
    assert (tmp_path / "t.md").read_text() == table


def test_checkpoint_without_val_results_takes_the_trainers_evaluation_at_its_step(tmp_path):
    state = {"global_step": 1000, "save_steps": 500, "log_history": [
        {"step": 500, "eval_roc_auc": 0.9, "eval_balanced_accuracy": 0.8}, {"step": 1000, "loss": 0.3},
        {"step": 1000, "eval_roc_auc": 0.75, "eval_balanced_accuracy": 0.6}]}
    folder = tmp_path / "run" / "checkpoint-1000"
    (folder / "eval_ood").mkdir(parents=True)
    write_results(folder / "eval_ood" / RESULTS_FILE, {"overall": {"roc_auc": 0.7, "balanced_accuracy": 0.65}})
    (folder / "trainer_state.json").write_text(json.dumps(state))
    row = read_row(folder)
    assert (row.val_auc, row.val_balanced_accuracy, row.ood_auc) == (0.75, 0.6, 0.7)


def test_model_without_any_val_figures_is_an_error(tmp_path):
    folder = tmp_path / "model"
    (folder / "eval_ood").mkdir(parents=True)
    write_results(folder / "eval_ood" / RESULTS_FILE, {"overall": {"roc_auc": 0.7, "balanced_accuracy": 0.65}})
    with pytest.raises(FileNotFoundError, match="eval_val"):
        read_row(folder)
