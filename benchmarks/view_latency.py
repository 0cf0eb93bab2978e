"""The app's latency in the native view (config.scoring: a grid of native-pixel crops) against the resized view, same
weights: one request (decode, preprocess, forward, verdict with its patch map painted), timed alternately image by
image so that load from other processes hits both alike.

    python benchmarks/view_latency.py --model checkpoints/demo [--native_crop_size 96 --native_grid 4] [--n 40]

The two views are two copies of the model folder, one with and one without `scoring` in config.json; each is served
by the app's default backend (modeling.inference.Detector, "auto").
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from modeling.imageio import read_image
from modeling.inference import Detector, heatmap_overlay

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ood"


def copy_with_scoring(model: Path, folder: Path, scoring: dict | None) -> Path:
    shutil.copytree(model, folder, ignore=shutil.ignore_patterns("eval_*", "checkpoint-*", "README.md"))
    config = json.loads((folder / "config.json").read_text())
    config["scoring"] = scoring
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def request(detector: Detector, path: Path) -> float:
    start = time.perf_counter()
    image = read_image(path)
    prediction, patches = detector.predict_with_map(image)
    heatmap_overlay(image, patches, detector.band(prediction.threshold))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--native_crop_size", type=int, default=None, help="default: the model's config.scoring")
    parser.add_argument("--native_grid", type=int, default=4)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()

    stored = json.loads((args.model / "config.json").read_text()).get("scoring")
    scoring = ({"native_crop_size": args.native_crop_size, "native_grid": args.native_grid}
               if args.native_crop_size else stored)
    if not scoring:
        raise SystemExit("the model has no config.scoring: give --native_crop_size")
    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    files = [files[i] for i in np.linspace(0, len(files) - 1, min(args.n, len(files))).round().astype(int)]
    with tempfile.TemporaryDirectory() as tmp:
        views = {name: Detector.from_pretrained(copy_with_scoring(args.model, Path(tmp) / name, s))
                 for name, s in (("resized", None), ("native", scoring))}
        for detector in views.values():
            request(detector, files[0])  # compile each input shape once, as the app's first request does
        times = {name: [] for name in views}
        for path in files:
            for name, detector in views.items():
                times[name].append(request(detector, path))
    median = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"{args.model} ({views['native'].backend}), {len(files)} images of {args.data}")
    print(f"resized view: {median['resized']:.0f} ms/request (median)")
    print(f"native view ({scoring['native_grid'] ** 2} crops of {scoring['native_crop_size']} px): "
          f"{median['native']:.0f} ms/request, {median['native'] / median['resized']:.2f}x the resized view")


if __name__ == "__main__":
    main()
