"""The seed's phase files (train/configs/seed/) run as written, each source replaced by a generated fixture of the
layout its entry declares: the same columns and label values for Hub sets (streamed where the entry streams), the
same folder names, data_dir, generator folders or CSV file for downloaded sets."""
import csv
import json
import sys
from pathlib import Path

import datasets
import pytest
import yaml
from conftest import ROOT, TINY_ARCH, make_image

from train import run

PHASES = ROOT / "train" / "configs" / "seed"
N = 2  # images per class and source


def _label_values(entry: dict) -> list:
    """Values of the label column or folder names that stand for real and fake (skipped ones left out)."""
    mapping = entry.get("label_map") or {"real": "real", "fake": "fake"}
    kept = {}
    for key, value in mapping.items():
        if value is not None:
            kept.setdefault(str(value) in ("1", "fake"), key)
    return [kept[False], kept[True]]


def _images(folder: Path, n: int, fake: bool, seed: int) -> list[Path]:
    return [make_image(folder / f"{seed}_{i}.png", seed + i, size=(40, 36), fake=fake, fmt="PNG") for i in range(n)]


def hub_fixture(entry: dict, root: Path) -> dict:
    """A local parquet dataset with the entry's columns, in 2 shards named after its split."""
    image_col, label_col = entry.get("image_column", "image"), entry.get("label_column", "label")
    columns = {image_col: [], "caption": []}
    if not entry.get("label"):
        columns[label_col] = []
    if entry.get("generator_column"):
        columns[entry["generator_column"]] = []
    for fake, value in enumerate(_label_values(entry)):
        for path in _images(root / "img", N, bool(fake), 100 * fake):
            columns[image_col].append(str(path))
            columns["caption"].append("a photo")
            if label_col in columns:
                columns[label_col].append(value)
            if entry.get("generator_column"):
                columns[entry["generator_column"]].append(3 * fake)
    ds = datasets.Dataset.from_dict(columns).cast_column(image_col, datasets.Image())
    data = root / "data"
    data.mkdir(parents=True)
    for k in range(2):
        ds.shard(2, k, contiguous=True).to_parquet(str(data / f"{entry.get('split', 'train')}-{k:05d}-of-00002.parquet"))
    local = {key: value for key, value in entry.items() if key not in ("hub", "config", "revision")}
    return {**local, "hub": str(root)}


def path_fixture(entry: dict, root: Path) -> dict:
    """The folder tree or CSV file the entry declares."""
    base = root / (entry.get("data_dir") or "")
    if entry.get("csv"):
        rows = []
        for fake, value in enumerate(_label_values(entry)):
            rows += [(p.relative_to(base).as_posix(), value)
                     for p in _images(base / "images", N, bool(fake), 100 * fake)]
        with open(base / entry["csv"], "w", newline="") as f:
            csv.writer(f).writerows([[entry.get("image_column", "image"), entry.get("label_column", "label")], *rows])
    elif entry.get("label"):
        generators = ["genA", "genB"] if entry.get("generator_folder") is not None else ["", ""]
        for g, generator in enumerate(generators):
            _images(base / generator, N, entry["label"] == "fake", 10 * g)
    else:
        prefix = "genA/" if entry.get("generator_folder") is not None else ""
        for fake, folder in enumerate(_label_values(entry)):
            _images(base / f"{prefix}{folder}", N, bool(fake), 100 * fake)
        for skipped in [k for k, v in (entry.get("label_map") or {}).items() if v is None]:
            _images(base / skipped / "anything", 1, False, 7)  # must stay out
    return {**entry, "path": str(root)}


def phase_on_fixtures(phase: str, tmp_path: Path) -> tuple[Path, dict]:
    """The phase file with every source pointing at a fixture of its layout."""
    config = yaml.safe_load((PHASES / phase).read_text())
    n = 0
    for key in ("train_sources", "validation_sources", "test_sources", "rehearsal_sources"):
        entries = []
        for entry in config.get(key, []):
            n += 1
            make = hub_fixture if "hub" in entry else path_fixture
            entries.append(make(entry, tmp_path / "sets" / f"{n}"))
        config[key] = entries
    path = tmp_path / phase
    path.write_text(yaml.safe_dump(config))
    return path, config


TINY = ["--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "32", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--dataloader_num_workers", "0",
        "--dataloader_persistent_workers", "false", "--report_to", "none", "--use_cpu", "--mixed_precision", "no"]


@pytest.mark.parametrize("phase", ["phase1.yaml", "phase2.yaml", "phase3.yaml"])
def test_phase_file_runs_two_steps_on_fixtures_of_its_layouts(phase, tmp_path, monkeypatch, tiny_detector_dir):
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    config_path, config = phase_on_fixtures(phase, tmp_path)
    out = tmp_path / "out"
    init = ["--init_from", str(tiny_detector_dir)] if config.get("init_from") else []
    monkeypatch.setattr(sys, "argv", ["run.py", str(config_path), *TINY, *init, "--output_dir", str(out)])
    trainer = run.main()

    assert trainer.state.global_step == 2
    record = json.loads((out / "training_config.json").read_text())
    named = {s["name"] for s in config["train_sources"]}
    assert {s["source"] for s in record["data"]["train"]} == named
    for block in ("train", "rehearsal", "validation", "test"):
        for summary in record["data"][block]:
            if "n" in summary:  # map-style sources are counted; streamed ones are not known before reading
                assert summary["n"] == 2 * N, summary["source"]  # every fixture image, none of a skipped folder
    streamed = [s for s in config["train_sources"] if s.get("streaming")]
    assert bool(streamed) == bool(record["data"].get("streaming"))
    validation = json.loads((out / "eval_results.json").read_text())
    for spec in config["validation_sources"]:
        assert validation[f"eval_{spec['name']}/n"] == 2 * N
    assert (out / "test_results.json").is_file()
