"""Training speed: train/run.py's Trainer step against a plain PyTorch loop, and the data pipeline.

    python benchmarks/train_throughput.py [--arch convnextv2_atto --image_size 128 --batch_size 32 --steps 20]

Both training measurements use the same model, batch, crop, optimizer groups (layer decay), label-smoothed loss
and gradient clipping, on tensors already in memory, so the ratio is the Trainer's overhead alone (target >= 0.9).
The data pipeline is timed separately (decode + `train` augmentation profile, DataLoader with --workers), to show
which of the two limits training.

On a shared machine a neighbour's burst lengthens some steps, never shortens one. So rounds alternate (plain,
Trainer, plain, ...), every step is timed, and speeds come from the fast steps (10th percentile of step time), the
closest estimate of each loop's own cost; the medians are printed beside them.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import TrainerCallback

from modeling.detector import build_detector, data_config
from train.data import SourceSpec, build_training_data, collate
from train.trainer import (
    DetectorTrainer,
    DetectorTrainingArguments,
    layer_decay_param_groups,
    warmup_cosine_schedule,
)
from train.transforms import build_train_transform


class InMemory(torch.utils.data.Dataset):
    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor):
        self.pixels, self.labels = pixels, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.pixels[i], "labels": int(self.labels[i]), "source_ids": 0}


class StepClock(TrainerCallback):
    def __init__(self):
        self.times = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def step_durations(times: list[float], warmup: int) -> list[float]:
    """Durations of the steps after the warmup, from the clock readings at each step's end."""
    return np.diff(times[warmup:]).tolist()


def images_per_second(durations: list[float], batch: int, q: float) -> float:
    return batch / float(np.quantile(durations, q))


def trainer_speed(a, pixels, labels, out_dir) -> list[float]:
    torch.manual_seed(0)
    model = build_detector(a.arch, pretrained=False, image_size=a.image_size)
    args = DetectorTrainingArguments(
        output_dir=out_dir, use_cpu=True, report_to="none", max_steps=a.warmup + a.steps + 1,
        per_device_train_batch_size=a.batch_size, eval_strategy="no", save_strategy="no", logging_steps=10**6,
        dataloader_num_workers=0, disable_tqdm=True, mixed_precision=a.precision)
    clock = StepClock()
    trainer = DetectorTrainer(model=model, args=args, train_dataset=InMemory(pixels, labels), data_collator=collate,
                              callbacks=[clock])
    trainer.train()
    return step_durations(clock.times, a.warmup)


def plain_speed(a, pixels, labels) -> list[float]:
    torch.manual_seed(0)
    model = build_detector(a.arch, pretrained=False, image_size=a.image_size).train()
    total = a.warmup + a.steps + 1
    optimizer = torch.optim.AdamW(layer_decay_param_groups(model.timm_model, 2e-4, 0.02, 0.8), lr=2e-4)
    scheduler = warmup_cosine_schedule(optimizer, max(1, total // 20), total)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16")
    times, n = [], len(labels)
    for step in range(total):
        start = (step * a.batch_size) % n
        x, y = pixels[start:start + a.batch_size], labels[start:start + a.batch_size]
        with autocast:
            loss = F.cross_entropy(model(pixel_values=x).logits.float(), y, label_smoothing=0.05)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    return step_durations(times, a.warmup)


def data_speed(a, folder: Path) -> float:
    model = build_detector(a.arch, pretrained=False, image_size=a.image_size)
    cfg = data_config(model)

    def make_transform(profile):
        return build_train_transform(profile, a.image_size, cfg["mean"], cfg["std"], cfg["interpolation"])

    dataset, sampler, _ = build_training_data([SourceSpec.parse(str(folder), profile="train")], make_transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=a.batch_size, sampler=sampler, collate_fn=collate,
                                         num_workers=a.workers, persistent_workers=a.workers > 0)
    times = []
    for i, _ in enumerate(loader):
        times.append(time.perf_counter())
        if i == a.warmup + a.data_batches:
            break
    return a.data_batches * a.batch_size / (times[-1] - times[a.warmup])  # throughput: workers overlap batches


def generated_folder(root: Path, n: int, size: int = 256) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        label = "fake" if i % 2 else "real"
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / label / f"{i}.jpg",
                                                                                     quality=90)
    return root


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="convnextv2_atto")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", choices=["no", "bf16"], default="no")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on a shared machine, "
                                                          "where extra threads spin-wait for busy cores)")
    p.add_argument("--data_dir", default=None, help="image folder for the data pipeline (default: 512 generated "
                                                    "256-px JPEGs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data_batches", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    g = torch.Generator().manual_seed(0)
    n = a.batch_size * 4
    pixels = torch.randn(n, 3, a.image_size, a.image_size, generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        plain, trainer = [], []
        for _ in range(a.rounds):
            plain += plain_speed(a, pixels, labels)
            trainer += trainer_speed(a, pixels, labels, tmp)
        folder = Path(a.data_dir) if a.data_dir else generated_folder(Path(tmp) / "images", 512)
        data = data_speed(a, folder)

    speed = {name: (images_per_second(d, a.batch_size, 0.1), images_per_second(d, a.batch_size, 0.5))
             for name, d in (("plain", plain), ("trainer", trainer))}
    print(f"setup: {a.arch}, {a.image_size}px, batch {a.batch_size}, precision {a.precision}, "
          f"torch threads {torch.get_num_threads()}, {a.rounds} alternating rounds x {a.steps} timed steps")
    print(f"plain PyTorch loop : {speed['plain'][0]:7.1f} images/s  (median step: {speed['plain'][1]:.1f})")
    print(f"DetectorTrainer    : {speed['trainer'][0]:7.1f} images/s  (median step: {speed['trainer'][1]:.1f})")
    print(f"ratio Trainer/plain: {speed['trainer'][0] / speed['plain'][0]:7.3f}  "
          f"(medians: {speed['trainer'][1] / speed['plain'][1]:.3f})")
    print(f"data pipeline      : {data:7.1f} images/s  ('train' profile, {a.workers} workers, "
          f"{'generated 256-px JPEGs' if not a.data_dir else a.data_dir})")


if __name__ == "__main__":
    main()
