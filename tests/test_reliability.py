"""Reliability and security of training and loading:
kill and resume, atomic checkpoints, dirty data, and pickles that must never be unpickled."""
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, ROOT, TINY_ARCH, encode_image, make_image_folder, png_bomb
from PIL import Image
from safetensors.torch import load_file
from transformers.trainer_utils import get_last_checkpoint

from modeling import load_detector
from train import run
from train.trainer import STAGING_DIR, DetectorTrainer

WEIGHT_ATOL = 1e-5  # resumed vs uninterrupted final weights (measured on CPU: bit-identical, max |diff| 0.0)


def tiny_run(data: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "32",
            "--train_dirs", str(data), "--per_device_train_batch_size", "4", "--seed", "7", *FAST, *extra]


def checkpoint_steps(folder: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))


def logs_by_step(log_history: list[dict]) -> dict[int, dict]:
    return {h["step"]: h for h in log_history if "loss" in h}


def assert_same_training(resumed: dict[int, dict], full: dict[int, dict], steps) -> None:
    """Same epoch position, LRs and loss at every step: the same batches with the same augmentations."""
    for step in steps:
        a, b = full[step], resumed[step]
        assert (b["epoch"], b["learning_rate"], b["lr_earliest"]) == (a["epoch"], a["learning_rate"], a["lr_earliest"])
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), f"step {step}"


def max_weight_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# ---- 1. kill and resume; atomic checkpoints -----------------------------------------------------------------

class SimulatedKill(Exception):
    pass


def test_interrupted_save_leaves_no_checkpoint_and_resume_takes_the_last_complete_one(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "data", n_per_class=6)  # 12 images, batch 4: 3 steps per epoch
    args = tiny_run(data, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2",
                    "--save_total_limit", "5")
    full = run.main([*args, "--output_dir", str(tmp_path / "full")])

    out = tmp_path / "out"
    saves = []

    def dies_during_second_save(self, output_dir):  # after the weights and optimizer of checkpoint-4 are written
        saves.append(output_dir)
        if len(saves) == 2:
            raise SimulatedKill
        return original(self, output_dir)

    original = DetectorTrainer._save_rng_state
    monkeypatch.setattr(DetectorTrainer, "_save_rng_state", dies_during_second_save)
    with pytest.raises(SimulatedKill):
        run.main([*args, "--output_dir", str(out)])
    monkeypatch.undo()

    half_written = out / STAGING_DIR / "checkpoint-4"
    assert (half_written / "model.safetensors").is_file() and not (half_written / "rng_state.pth").exists()
    assert checkpoint_steps(out) == [2]  # the Trainer alone would leave a checkpoint-4 without RNG or trainer state
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-2")

    resumed = run.main([*args, "--output_dir", str(out), "--resume_from_checkpoint", "true"])
    assert resumed.state.global_step == full.state.global_step == 6
    assert checkpoint_steps(out) == [2, 4, 6] and not (out / STAGING_DIR).exists()
    assert_same_training(logs_by_step(resumed.state.log_history), logs_by_step(full.state.log_history), range(3, 7))
    assert max_weight_diff(resumed.model.state_dict(), full.model.state_dict()) <= WEIGHT_ATOL
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # the re-done checkpoint is whole


def test_best_checkpoint_is_named_by_its_final_folder(tmp_path):
    """The Trainer names the best checkpoint while it is still staged; the rename must not orphan that name
    (load_best_model_at_end reads it, and rotation keeps that folder)."""
    data = make_image_folder(tmp_path / "data", n_per_class=2)
    out = tmp_path / "out"
    trainer = run.main(tiny_run(data, "--validation_dirs", str(data), "--output_dir", str(out), "--max_steps", "3",
                                "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps",
                                "--save_steps", "1", "--save_total_limit", "1", "--load_best_model_at_end",
                                "--metric_for_best_model", "loss"))
    best = Path(trainer.state.best_model_checkpoint)
    assert best.parent == out and best.is_dir() and not (out / STAGING_DIR).exists()
    assert 3 in checkpoint_steps(out) and best.name in {f"checkpoint-{s}" for s in checkpoint_steps(out)}
    saved = json.loads((best / "trainer_state.json").read_text())
    assert saved["best_model_checkpoint"] == str(best)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    """A real `python train/run.py` killed with SIGKILL once a checkpoint exists, resumed with
    --resume_from_checkpoint true, against the same command run without interruption."""
    data = make_image_folder(tmp_path / "data", n_per_class=14)  # 28 images, batch 4: 7 steps per epoch
    # checkpoints every 5 steps up to 30: none falls on an epoch end (7, 14, 21, 28), so the resume is mid-epoch
    args = tiny_run(data, "--max_steps", "34", "--save_strategy", "steps", "--save_steps", "5",
                    "--save_total_limit", "10")
    command = [sys.executable, str(ROOT / "train" / "run.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out, full_out = tmp_path / "out", tmp_path / "full"

    with open(tmp_path / "killed.log", "w") as log:
        killed = subprocess.Popen([*command, "--output_dir", str(out)], cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 600
        while not (out / "checkpoint-5").is_dir() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert killed.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    last = checkpoint_steps(out)[-1]
    assert 5 <= last < 34 and last % 7 != 0

    for cmd, steps_run in (([*command, "--output_dir", str(out), "--resume_from_checkpoint", "true"], 34 - last),
                           ([*command, "--output_dir", str(full_out)], 34)):
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("{'loss'") == steps_run  # the Trainer prints one log line per step

    resumed, full = (json.loads((o / "trainer_state.json").read_text()) for o in (out, full_out))
    assert resumed["global_step"] == full["global_step"] == 34
    assert_same_training(logs_by_step(resumed["log_history"]), logs_by_step(full["log_history"]), range(1, 35))
    diff = max_weight_diff(load_file(out / "model.safetensors"), load_file(full_out / "model.safetensors"))
    print(f"resumed from checkpoint-{last}; max |weight diff| vs uninterrupted: {diff:.3g}")
    assert diff <= WEIGHT_ATOL


# ---- 2. dirty data --------------------------------------------------------------------------------------------

def write_odd_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(bad files, good files in odd formats) added to an image folder."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    jpeg = encode_image(photo, "JPEG", quality=90)
    bad = {
        root / "fake" / "truncated.jpg": jpeg[: len(jpeg) // 2],
        root / "fake" / "empty.jpg": b"",
        root / "real" / "notes.jpg": b"a text file renamed to .jpg\n" * 10,
        root / "real" / "bomb.png": png_bomb(9000),  # 81 megapixels in 10 KB, over --max_image_pixels (64 MP)
    }
    gradient = np.tile(np.linspace(0, 65535, 48).astype(np.uint16), (40, 1))  # 8-bit clipping would turn it white
    odd = {
        root / "real" / "cmyk.jpg": encode_image(photo.convert("CMYK"), "JPEG"),
        root / "real" / "deep.png": encode_image(Image.fromarray(gradient), "PNG"),
    }
    for path, content in {**bad, **odd}.items():
        path.write_bytes(content)
    return list(bad), list(odd)


def test_dirty_data_trains_to_the_end_and_counts_the_bad_files(tmp_path, caplog):
    data = make_image_folder(tmp_path / "dirty", n_per_class=37)
    bad, odd = write_odd_files(data)
    n_files = sum(1 for p in data.rglob("*") if p.is_file())
    assert (n_files, len(bad)) == (80, 4)  # 5% bad files

    with caplog.at_level("WARNING", logger="train.data"):
        trainer = run.main(tiny_run(data, "--validation_dirs", str(data), "--output_dir", str(tmp_path / "out"),
                                    "--per_device_train_batch_size", "16", "--num_train_epochs", "1"))
    assert trainer.state.global_step == 5  # the whole epoch: 80 files in batches of 16
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert train_logs[-1]["skipped_images"] == len(bad) and all(np.isfinite(h["loss"]) for h in train_logs)
    eval_results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert eval_results["eval_skipped_images"] == len(bad) and eval_results["eval_n"] == 76
    # the files skipped are exactly the bad ones, each 3 times: the training epoch, the epoch's and the final eval
    warnings = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    skipped = Counter(p.name for m in warnings for p in data.rglob("*") if f", {p}): " in m)
    assert len(warnings) == 3 * len(bad) and skipped == {p.name: 3 for p in bad}

    # the CMYK and 16-bit files are real training samples, not placeholders
    paths = [row["path"] for row in trainer.train_dataset.rows["image"]]
    for path in odd:
        sample = trainer.train_dataset[(paths.index(str(path)), 0)]
        assert sample["labels"] == 0  # a real image, not IGNORE_INDEX
        assert sample["pixel_values"].shape == (3, 32, 32) and sample["pixel_values"].std() > 0.1


# ---- 3. safe loading ------------------------------------------------------------------------------------------

class Payload:
    """Unpickling this runs code: it creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def write_payload(path: Path, marker: Path) -> Path:
    torch.save({"state": Payload(marker)}, path)
    return path


def test_the_payload_runs_when_unpickled(tmp_path):
    """The control: what the tests below prove never happens does happen with a plain unpickle."""
    evil = write_payload(tmp_path / "evil.bin", tmp_path / "ran")
    torch.load(evil, weights_only=False)
    assert (tmp_path / "ran").exists()


def folder_with(tmp_path: Path, detector_dir: Path, keep: tuple[str, ...], evil: dict[str, str]) -> Path:
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    for name in keep:
        shutil.copy(detector_dir / name, folder / name)
    for name in evil:
        write_payload(folder / name, tmp_path / "ran")
    return folder


@pytest.mark.parametrize("keep, evil, refusal", [
    (("config.json",), ["pytorch_model.bin"], "no safetensors weights (found pickle files: pytorch_model.bin)"),
    (("config.json",), ["model.safetensors"], "the weights file is not valid safetensors"),  # a renamed pickle
    (("config.json",), ["adapter.safetensors", "pytorch_model.bin"], "no file named model.safetensors"),  # no .bin
    (("config.json", "model.safetensors"), ["pytorch_model.bin", "optimizer.pt", "training_args.bin"], None),
], ids=["bin_only", "pickle_named_safetensors", "other_safetensors_and_bin", "safetensors_plus_evil_bins"])
def test_load_detector_never_unpickles(tmp_path, tiny_detector_dir, keep, evil, refusal):
    folder = folder_with(tmp_path, tiny_detector_dir, keep, evil)
    if refusal is None:
        model = load_detector(folder)  # the safetensors weights, and nothing else
        assert max_weight_diff(model.state_dict(), load_detector(tiny_detector_dir).state_dict()) == 0
    else:
        with pytest.raises((ValueError, OSError), match=re.escape(refusal)):
            load_detector(folder)
    assert not (tmp_path / "ran").exists()


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """checkpoint-1 of a one-step run, and the run's arguments."""
    root = tmp_path_factory.mktemp("resume")
    args = tiny_run(make_image_folder(root / "data", n_per_class=2), "--max_steps", "2",
                    "--save_strategy", "steps", "--save_steps", "1")
    run.main([*args, "--output_dir", str(root / "out"), "--max_steps", "1"])
    return root / "out" / "checkpoint-1", args


@pytest.mark.parametrize("evil_file", ["rng_state.pth", "optimizer.pt", "scheduler.pt", "pytorch_model.bin",
                                       "training_args.bin"])
def test_resume_never_unpickles_a_payload(tmp_path, trained_checkpoint, evil_file):
    source, args = trained_checkpoint
    checkpoint = shutil.copytree(source, tmp_path / "checkpoint-1")
    if evil_file == "pytorch_model.bin":
        (checkpoint / "model.safetensors").unlink()  # the Trainer's fallback to .bin weights
    write_payload(checkpoint / evil_file, tmp_path / "ran")
    resume = [*args, "--output_dir", str(tmp_path / "out"), "--resume_from_checkpoint", str(checkpoint)]
    if evil_file == "training_args.bin":  # written by the Trainer, never read back: the resume just works
        assert run.main(resume).state.global_step == 2
    else:
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            run.main(resume)
    assert not (tmp_path / "ran").exists()
