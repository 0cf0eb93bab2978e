"""Evaluation throughput of `train.evaluation` on this machine: images/s for decode + eval transform + forward, the
path `python -m train.evaluation` runs, with random weights (speed does not depend on them).

    python benchmarks/eval_throughput.py                       # convnextv2_atto and convnextv2_base at 256 px
    python benchmarks/eval_throughput.py --archs convnextv2_tiny --image_size 384 --n_images 128

The images are random 320x320 JPEGs, the size of the ood split. "forward only" times the model on one
preprocessed batch, so the gap to the end-to-end number is decoding and preprocessing.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import HfArgumentParser

from modeling.detector import build_detector, eval_transform
from train.evaluation.predict import predict_logits


@dataclass
class BenchmarkArguments:
    archs: list[str] = field(default_factory=lambda: ["convnextv2_atto", "convnextv2_base"])
    image_size: int = 256
    n_images: int = 64
    batch_size: int = 32
    num_workers: int = 2
    source_size: int = 320


def write_images(folder: Path, n: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def main(argv=None):
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        files = write_images(Path(tmp), args.n_images, args.source_size)
        for arch in args.archs:
            model = build_detector(arch, pretrained=False, image_size=args.image_size).eval().to(device)
            transform = eval_transform(model)
            loader_args = dict(batch_size=args.batch_size, num_workers=args.num_workers)
            predict_logits(model, files[: args.batch_size], transform, **loader_args)  # warm-up
            start = time.perf_counter()
            predict_logits(model, files, transform, **loader_args)
            end_to_end = args.n_images / (time.perf_counter() - start)

            batch = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
            with torch.inference_mode():
                start = time.perf_counter()
                model(pixel_values=batch)
                forward = args.batch_size / (time.perf_counter() - start)
            print(f"{arch} @ {args.image_size}px: {end_to_end:.1f} images/s end to end, {forward:.1f} images/s "
                  f"forward only ({args.n_images} images, batch {args.batch_size}, {args.num_workers} workers, "
                  f"{device}, {torch.get_num_threads()} torch threads)", flush=True)


if __name__ == "__main__":
    main()
