"""modeling/formats.py: where a model folder keeps its evaluations, the record of a training run, the tables."""
import json

import pytest

from modeling.formats import (
    TrainingRecord,
    find_results,
    format_cell,
    list_results,
    markdown_table,
    read_training_record,
    write_training_record,
)


def _results(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


def test_results_are_found_beside_the_weights_in_set_folders_and_as_pushed(tmp_path):
    own = _results(tmp_path / "results.json")
    val = _results(tmp_path / "eval_val" / "results.json")
    pushed = _results(tmp_path / "eval" / "holdout" / "results.json")
    (tmp_path / "eval_empty").mkdir()
    assert list_results(tmp_path) == [own, val, pushed]
    assert find_results(tmp_path) == own  # no set named ood: the first


def test_the_headline_evaluation_is_the_ood_set_when_there_is_one(tmp_path):
    _results(tmp_path / "eval_val" / "results.json")
    ood = _results(tmp_path / "eval" / "ood" / "results.json")
    assert find_results(tmp_path) == ood
    assert find_results(tmp_path / "eval_empty") is None


def test_training_record_round_trips_and_reads_older_and_newer_files(tmp_path):
    record = TrainingRecord(phase="initial", model_args={"image_size": 64}, training_args={"image_size": 32},
                            image_size=48, augmentation_profiles={"a": {"crop_size": 40}, "b": {"crop": "resized"}},
                            data={"train": [{"generators": ["b", "a"]}], "rehearsal": [{"generators": ["c"]}]})
    write_training_record(tmp_path, record)
    assert read_training_record(tmp_path) == record
    assert record.settings()["image_size"] == 48  # the record's own number over its argument groups'
    assert record.training_generators() == ["a", "b", "c"]
    assert record.crop_sizes() == [40]
    (tmp_path / "training_config.json").write_text(json.dumps({"data": {"train": [{"n": 3}]}, "new_key": 1}))
    older = read_training_record(tmp_path)
    assert older.training_generators() is None  # a source without its generator list: unknown, not none
    assert older.phase is None and older.settings() == {}
    assert read_training_record(tmp_path / "missing") is None
    (tmp_path / "training_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a training record"):
        read_training_record(tmp_path)


def test_markdown_table_formats_floats_and_marks_undefined_metrics():
    assert markdown_table(["set", "n", "AUC", "ECE"], [["ood", 12, 0.98765, None]]) == (
        "| set | n | AUC | ECE |\n|---|---|---|---|\n| ood | 12 | 0.988 | — |")
    assert format_cell(0.61686, 4) == "0.6169" and format_cell(True) == "True"
