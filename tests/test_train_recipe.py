"""The recipe inside DetectorTrainer: real layer decay, weight decay groups, warmup + cosine, label smoothing,
mixed-precision choice. No training loop: the Trainer's pieces are called directly."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_ARCH, TINY_SIZE

from modeling import build_detector
from train.trainer import (
    DetectorTrainer,
    DetectorTrainingArguments,
    resolve_mixed_precision,
    warmup_cosine_schedule,
)

LR, DECAY, STEPS = 2e-4, 0.8, 100


def warmup_cosine_factor(step, warmup_steps, total_steps, start_factor=0.01, floor=0.0):
    """The recipe in closed form: linear from start_factor to 1 over the warmup, then cosine from 1 down to floor."""
    if step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@pytest.mark.parametrize("warmup, total, eta_min", [(5, 100, 0.0), (10, 100, 1e-6), (0, 40, 0.0), (1, 3, 1e-7)])
def test_torch_schedulers_give_the_recipe_per_group(warmup, total, eta_min):
    """torch's LinearLR + CosineAnnealingLR reproduce the closed form for every group, eta_min an absolute floor."""
    lrs = [LR, LR * DECAY, LR * DECAY**12]
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs], lr=LR)
    schedule = warmup_cosine_schedule(optimizer, warmup, total, 0.01, eta_min)
    for step in range(total):
        for group, lr in zip(optimizer.param_groups, lrs):
            assert group["lr"] == pytest.approx(lr * warmup_cosine_factor(step, warmup, total, 0.01, eta_min / lr),
                                                rel=1e-12, abs=0)
        optimizer.step()
        schedule.step()


def make_trainer(tmp_path, **overrides):
    args = DetectorTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none",
                                     learning_rate=LR, layer_decay=DECAY, dataloader_num_workers=0, eval_strategy="no",
                                     **overrides)
    model = build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE)
    trainer = DetectorTrainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=STEPS)
    return trainer


def run_steps(trainer, n):
    for _ in range(n):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()


def test_groups_really_train_at_layer_decayed_rates(tmp_path):
    trainer = make_trainer(tmp_path)
    run_steps(trainer, 30)  # past warmup, into the cosine
    groups = trainer.optimizer.param_groups
    head = max(groups, key=lambda g: g["lr_scale"])
    earliest = min(groups, key=lambda g: g["lr_scale"])
    depth = round(math.log(earliest["lr_scale"]) / math.log(DECAY))
    assert depth >= 10  # convnextv2_atto: stem + 12 blocks/downsamples below the head
    assert earliest["lr"] / head["lr"] == pytest.approx(DECAY ** depth, rel=1e-6)
    for g in groups:  # every group at its own scale, not the head's LR
        assert g["lr"] == pytest.approx(head["lr"] * g["lr_scale"], rel=1e-6)
    assert head["lr"] == pytest.approx(LR * warmup_cosine_factor(30, 5, STEPS), rel=1e-6)
    logged = trainer.lr_by_depth()
    assert logged == {"lr_head": head["lr"], "lr_earliest": earliest["lr"]}


def test_no_weight_decay_on_biases_and_norms(tmp_path):
    trainer = make_trainer(tmp_path)
    names = {id(p): n for n, p in trainer.model.timm_model.named_parameters()}
    decayed, plain = set(), set()
    for g in trainer.optimizer.param_groups:
        (decayed if g["weight_decay"] > 0 else plain).update(names[id(p)] for p in g["params"])
        assert g["weight_decay"] in (0.0, 0.02)
    assert len(decayed) + len(plain) == len(names)  # every parameter is optimised, once
    norms = {f"{m}.{n}" if m else n for m, module in trainer.model.timm_model.named_modules()
             if "Norm" in type(module).__name__ for n, _ in module.named_parameters(recurse=False)}
    biases = {n for n in names.values() if n.endswith(".bias")}
    assert plain == norms | biases  # LayerNorms, GRN gamma/beta, biases: no decay; everything else decays
    assert "head.fc.weight" in decayed and "stem.0.weight" in decayed and len(norms) > 20


def test_warmup_then_cosine_shape(tmp_path):
    trainer = make_trainer(tmp_path, warmup_steps=0.1, eta_min=1e-6)
    head = max(trainer.optimizer.param_groups, key=lambda g: g["lr_scale"])
    lrs = []
    for _ in range(STEPS):
        lrs.append(head["lr"])
        run_steps(trainer, 1)
    assert lrs[0] == pytest.approx(0.01 * LR)               # warmup starts at 0.01x
    assert lrs[5] == pytest.approx(LR * (0.01 + 0.99 * 0.5))  # linear: half-way at step 5 of 10
    assert max(lrs) == pytest.approx(LR) and lrs.index(max(lrs)) == 10
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))   # rising during warmup
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))   # falling after
    mid = 10 + (STEPS - 10) // 2
    assert lrs[mid] == pytest.approx(1e-6 + (LR - 1e-6) * 0.5, rel=1e-3)  # cosine half-way
    assert head["lr"] == pytest.approx(1e-6)  # ends at eta_min
    earliest = min(trainer.optimizer.param_groups, key=lambda g: g["lr_scale"])
    assert earliest["lr"] == pytest.approx(1e-6)  # eta_min is the same floor for every group


def test_label_smoothing_is_active(tmp_path):
    trainer = make_trainer(tmp_path)
    model = trainer.model.eval()
    torch.manual_seed(0)
    inputs = {"pixel_values": torch.randn(4, 3, TINY_SIZE, TINY_SIZE), "labels": torch.tensor([0, 1, 1, 0]),
              "source_ids": torch.zeros(4, dtype=torch.long)}
    with torch.no_grad():
        logits = model(pixel_values=inputs["pixel_values"]).logits
        loss = trainer.compute_loss(model, dict(inputs))
    expected = F.cross_entropy(logits, inputs["labels"], label_smoothing=0.05)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(loss.item() - F.cross_entropy(logits, inputs["labels"]).item()) > 1e-4


def test_placeholders_of_bad_images_are_ignored_and_counted(tmp_path):
    trainer = make_trainer(tmp_path)
    model = trainer.model.train()
    x = torch.randn(3, 3, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        mixed = trainer.compute_loss(model, {"pixel_values": x, "labels": torch.tensor([1, -100, 0]),
                                             "source_ids": torch.zeros(3, dtype=torch.long)})
        logits = model(pixel_values=x).logits
        only_bad = trainer.compute_loss(model, {"pixel_values": x[:2], "labels": torch.tensor([-100, -100])})
    expected = F.cross_entropy(logits[[0, 2]], torch.tensor([1, 0]), label_smoothing=0.05)
    assert mixed.item() == pytest.approx(expected.item(), rel=1e-5)
    assert only_bad.item() == 0.0 and not torch.isnan(only_bad)
    assert trainer.skipped_images == 3


@pytest.mark.parametrize("requested, cuda, cc, bf16_ok, expected", [
    ("auto", False, None, False, "no"),     # CPU: fp32
    ("fp16", False, None, False, "no"),     # fp16 asked on CPU: fp32, no error
    ("bf16", False, None, False, "bf16"),   # bf16 autocast on CPU
    ("auto", True, (8, 0), True, "fp16"),   # tensor cores: fp16 + GradScaler
    ("auto", True, (6, 1), False, "no"),    # Pascal: fp32
    ("fp16", True, (6, 1), False, "no"),
    ("bf16", True, (8, 0), True, "bf16"),
    ("bf16", True, (7, 5), False, "fp16"),  # Turing has no bf16: fp16 instead
    ("no", True, (9, 0), True, "no"),
])
def test_mixed_precision_choice(requested, cuda, cc, bf16_ok, expected):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_mixed_precision(requested, cuda, cc, bf16_ok) == expected
    assert bool(caught) == (requested in ("fp16", "bf16") and expected != requested)  # a fallback says so


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_precision_flags_on_cpu(tmp_path):
    with pytest.warns(UserWarning):
        args = DetectorTrainingArguments(output_dir=str(tmp_path), use_cpu=True, fp16=True, report_to="none")
    assert (args.fp16, args.bf16, args.mixed_precision) == (False, False, "no")
    args = DetectorTrainingArguments(output_dir=str(tmp_path), mixed_precision="bf16", report_to="none")
    assert args.bf16 and args.use_cpu  # bf16 autocast on CPU, which transformers wants said with use_cpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_training_without_a_gpu_does_not_pin_memory(tmp_path):
    """Pinned memory only speeds up copies to a GPU; asking for it without one makes torch warn at every start
    (transformers turns it off for --use_cpu only, not for a machine that simply has no GPU)."""
    args = DetectorTrainingArguments(output_dir=str(tmp_path), report_to="none")
    assert args.dataloader_pin_memory is False


def test_the_private_transformers_methods_the_recipe_overrides_still_exist():
    """DetectorTrainer overrides private Trainer methods, and save_detector sets the private _weight_conversions
    that transformers' save reads, where the installed transformers has no public hook. A rename in an upgrade would
    silently skip that code (no sampler, non-atomic checkpoints, transformers' key names): fail here instead."""
    import inspect

    from transformers import Trainer
    from transformers.core_model_loading import revert_weight_conversion

    from train.trainer import PRIVATE_TRAINER_OVERRIDES, DetectorTrainer

    for name in PRIVATE_TRAINER_OVERRIDES:
        assert callable(getattr(Trainer, name, None)), f"transformers' Trainer no longer has {name}"
        ours, theirs = (inspect.signature(getattr(cls, name)).parameters for cls in (DetectorTrainer, Trainer))
        assert list(ours) == list(theirs), f"Trainer.{name} changed its parameters: {list(theirs)}"
    assert "_weight_conversions" in inspect.getsource(revert_weight_conversion)
