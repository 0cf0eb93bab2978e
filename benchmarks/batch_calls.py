"""Batch mode in the native view: one runtime call per image, as modeling.inference.Detector makes them, against
one call for the whole chunk of BATCH_CHUNK images (grid*grid crops each), same weights, same inputs, timed
alternately chunk by chunk so that load from other processes hits both alike.

    python benchmarks/batch_calls.py --model checkpoints/demo [--backend auto|openvino|onnx|torch] [--n 64]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from modeling.imageio import read_image
from modeling.inference import BATCH_CHUNK, Detector

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ood"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "demo"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=64, help="images (chunks of BATCH_CHUNK)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    detector = Detector.from_pretrained(args.model, backend=args.backend)
    if not detector.scoring:
        raise SystemExit(f"{args.model} is served in the resized view: one input per image either way")
    per_image = detector.scoring["native_grid"] ** 2
    files = sorted(p for p in Path(args.data).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    images = [read_image(f) for f in files[:args.n]]
    chunks = [images[i:i + BATCH_CHUNK] for i in range(0, len(images), BATCH_CHUNK)]

    def one_call_per_image(chunk):
        x = detector.preprocess(chunk)
        return np.concatenate([detector.runtime(x[i:i + per_image]) for i in range(0, len(x), per_image)])

    def one_call_per_chunk(chunk):
        return detector.runtime(detector.preprocess(chunk))

    np.testing.assert_allclose(one_call_per_image(chunks[0]), one_call_per_chunk(chunks[0]), rtol=1e-3, atol=1e-3)
    times = {one_call_per_image: [], one_call_per_chunk: []}  # the check above also compiled both shapes
    for _ in range(args.repeats):
        for chunk in chunks:
            for run, spent in times.items():
                start = time.perf_counter()
                run(chunk)
                spent.append(time.perf_counter() - start)
    per, whole = (statistics.median(t) * 1000 for t in times.values())
    print(f"{detector.backend}, {len(images)} images in chunks of {BATCH_CHUNK}, {per_image} crops each (median per "
          f"chunk): one call per image {per:.0f} ms, one call per chunk {whole:.0f} ms, ratio {per / whole:.2f}")


if __name__ == "__main__":
    main()
