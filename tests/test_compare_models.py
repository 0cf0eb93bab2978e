"""Several detectors side by side: `python -m train.evaluation --model A --model B` writes one table and one ROC plot."""
import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY_ARCH, TINY_SIZE, make_image_folder

from modeling import build_detector, save_detector
from train.evaluation.compare import METRICS, model_names, requested_models

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, expected", [
    (["--model", "a", "--model", "b", "--data_dir", "d"], ["a", "b"]),
    (["--model", "a", "b", "--output_dir", "o"], ["a", "b"]),
    (["--model=a", "--data_dir", "d", "--model", "b"], ["a", "b"]),
    (["--model", "a", "--data_dir", "d", "e"], ["a"]),
])
def test_every_model_flag_is_collected(argv, expected):
    assert requested_models(argv) == expected


def test_model_names_are_short_and_unique():
    assert model_names(["runs/a/model", "runs/b/model", "runs/c"]) == ["a/model", "b/model", "c"]


def test_command_writes_one_table_and_one_roc_plot_for_two_backbones(tmp_path, tiny_detector_dir):
    other = tmp_path / "resnet"
    save_detector(build_detector("resnet10t", pretrained=False, image_size=TINY_SIZE + 16), other)
    data = [make_image_folder(tmp_path / name, n_per_class=4, seed=i) for i, name in enumerate(["faces", "art"])]
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "train.evaluation", "--model", str(tiny_detector_dir), "--model", str(other),
           "--data_dir", *map(str, data), "--output_dir", str(out), "--num_workers", "0", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, timeout=300)

    with open(out / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    names = model_names([str(tiny_detector_dir), str(other)])
    assert [(r["model"], r["source"]) for r in rows] == [(m, s) for m in names for s in ("all", "art", "faces")]
    assert set(METRICS) <= set(rows[0]) and all(r["roc_auc"] != "" for r in rows)
    assert [int(r["n"]) for r in rows] == [16, 8, 8] * 2
    results = json.loads((out / "comparison.json").read_text())
    assert [results[m]["architecture"] for m in names] == [TINY_ARCH, "resnet10t"]
    table = (out / "comparison.md").read_text()
    assert all(f"| {m} | all |" in table for m in names)
    assert (out / "roc.png").read_bytes().startswith(PNG_MAGIC)
