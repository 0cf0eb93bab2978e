"""train/run.py end to end: the interface command, resume, distributed training, push."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import FAST, ROOT, TINY_ARCH, make_image_folder
from safetensors.torch import load_file

from modeling import load_detector
from modeling.formats import read_training_record
from train import run


def interface_args(data: Path, out: Path, *extra: str) -> list[str]:
    """The documented training command (sizes and steps aside)."""
    return ["--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "32",
            "--train_dirs", str(data), "--validation_dirs", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", "10", "--layer_decay", "0.8", "--learning_rate", "2e-4", *extra]


def test_main_end_to_end_with_bad_files(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "data", n_per_class=8)
    (data / "fake" / "empty.jpg").write_bytes(b"")
    (data / "real" / "text.jpg").write_text("not an image")
    (data / "real" / "cut.jpg").write_bytes((data / "real" / "r0.jpg").read_bytes()[:300])
    out = tmp_path / "out"
    # 19 files, batch 10: two steps are exactly one epoch, so training meets every bad file once
    monkeypatch.setattr(sys, "argv", ["run.py", *interface_args(data, out, "--max_steps", "2", *FAST)])
    trainer = run.main()

    assert trainer.state.global_step == 2
    weights = load_file(out / "model.safetensors")
    assert "head.fc.weight" in weights  # save_detector's timm key names, loadable by timm and transformers
    model = load_detector(out)
    assert model.config.pretrained_cfg["input_size"] == [3, 32, 32]

    record = read_training_record(out)
    assert record.phase == "initial" and record.image_size == 32
    assert record.data["train"][0]["n"] == 19 and record.data["train"][0]["profile"] == "train"
    assert record.augmentation_profiles["train"]["jpeg_p"] == 0.3
    assert record.training_args["layer_decay"] == 0.8 and record.training_args["label_smoothing_factor"] == 0.05

    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_skipped_images"] == 3 and results["eval_n"] == 16
    assert results["eval_data/n"] == 16 and results["eval_data/roc_auc"] == results["eval_roc_auc"]  # one source
    assert results["eval_tn"] + results["eval_fp"] + results["eval_fn"] + results["eval_tp"] == 16

    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert train_logs[-1]["skipped_images"] == 3
    ratio = train_logs[0]["lr_earliest"] / train_logs[0]["lr_head"]
    assert ratio == pytest.approx(0.8 ** 13, rel=1e-4)  # the earliest block really trains slower


def test_resume_continues_at_same_step_lr_and_data(tmp_path):
    data = make_image_folder(tmp_path / "data", n_per_class=6)  # 12 images, batch 4: 3 steps per epoch
    common = ["--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "32",
              "--train_dirs", str(data), "--per_device_train_batch_size", "4", "--max_steps", "5",
              "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "5", "--seed", "7", *FAST]
    full = run.main([*common, "--output_dir", str(tmp_path / "full")])
    checkpoint = tmp_path / "full" / "checkpoint-2"  # mid-epoch
    resumed = run.main([*common, "--output_dir", str(tmp_path / "resumed"),
                        "--resume_from_checkpoint", str(checkpoint)])

    assert resumed.state.global_step == full.state.global_step == 5
    by_step = lambda t: {h["step"]: h for h in t.state.log_history if "loss" in h}  # noqa: E731
    a, b = by_step(full), by_step(resumed)
    assert {3, 4, 5} <= set(b)  # (steps 1-2 come from the checkpoint's state)
    for step in (3, 4, 5):
        assert b[step]["learning_rate"] == a[step]["learning_rate"]
        assert b[step]["lr_earliest"] == a[step]["lr_earliest"]
        # same batches with the same augmentations: the same loss
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-4)
    wa, wb = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_continual_phase_and_push(tmp_path, monkeypatch, tiny_detector_dir):
    new = make_image_folder(tmp_path / "new", n_per_class=2)
    old = make_image_folder(tmp_path / "old", n_per_class=4, seed=1)
    pushed = {}
    import hub.push

    monkeypatch.setattr(hub.push, "push", lambda model_dir, repo_id, **kw: pushed.update(dir=model_dir, repo=repo_id))
    trainer = run.main(["--init_from", str(tiny_detector_dir), "--train_dirs", str(new),
                        "--rehearsal_sources", str(old), "--rehearsal_ratio", "1", "--train_profile", "continual",
                        "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
                        "--per_device_train_batch_size", "8", "--push_to_hub", "--hub_model_id", "me/detector",
                        *FAST])
    record = read_training_record(tmp_path / "out")
    assert record.phase == "continual" and record.data["replay"]["per_epoch"] == 4
    assert record.augmentation_profiles["continual"]["jpeg_quality"] == [88, 98]
    assert len(trainer.train_sampler) == 8
    assert pushed == {"dir": str(tmp_path / "out"), "repo": "me/detector"}


def test_input_filter_constraint_holds_after_training(tmp_path):
    data = make_image_folder(tmp_path / "data", n_per_class=4)
    trainer = run.main(["--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "32",
                        "--input_filter", "npr", "--train_dirs", str(data), "--output_dir", str(tmp_path / "out"),
                        "--max_steps", "2", "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", *FAST])
    stem = trainer.model.timm_model.stem[0].weight  # 4x4 patchify conv
    blocks = stem.view(*stem.shape[:2], 2, 2, 2, 2)
    assert blocks.sum(dim=(3, 5)).abs().max() < 1e-5  # still zero-sum over every 2x2 block
    assert load_detector(tmp_path / "out").config.input_filter == "npr"


def test_input_filter_refuses_low_precision_autocast(tmp_path):
    data = make_image_folder(tmp_path / "data", n_per_class=2)
    with pytest.raises(ValueError, match="fp32"):
        run.main(["--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "32",
                  "--input_filter", "npr", "--train_dirs", str(data), "--output_dir", str(tmp_path / "out"),
                  "--max_steps", "1", *FAST, "--mixed_precision", "bf16"])


@pytest.mark.slow
def test_torchrun_two_processes_agree_on_weights(tmp_path):
    data = make_image_folder(tmp_path / "data", n_per_class=8)
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(f"""
        import os, sys
        from safetensors.torch import save_file
        from train.run import main
        trainer = main(sys.argv[1:])
        state = {{k: v.contiguous() for k, v in trainer.model.state_dict().items()}}
        save_file(state, os.path.join({str(tmp_path)!r}, "rank" + os.environ["RANK"] + ".safetensors"))
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(worker),
           "--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "32",
           "--train_dirs", str(data), "--output_dir", str(tmp_path / "out"), "--max_steps", "3",
           "--per_device_train_batch_size", "4", "--ddp_backend", "gloo", *FAST]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = load_detector(tmp_path / "out").state_dict()  # written by rank 0 after training
    assert all(torch.equal(saved[k], rank0[k]) for k in saved)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    # really distributed: 16 images in global batches of 2 x 4, so an epoch is 2 steps, not 4
    assert state["global_step"] == 3 and [h["epoch"] for h in state["log_history"] if "loss" in h] == [0.5, 1, 1.5]
    # and each rank took its own half of each global batch: the same weights as one process with batch 8
    single = run.main(["--model_name_or_path", TINY_ARCH, "--pretrained", "false", "--image_size", "32",
                       "--train_dirs", str(data), "--output_dir", str(tmp_path / "single"), "--max_steps", "3",
                       "--per_device_train_batch_size", "8", *FAST]).model.state_dict()
    assert all(torch.allclose(single[k], rank0[k], atol=1e-5) for k in single)
