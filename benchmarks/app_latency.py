"""Single-image latency: eager fp32 transformers `pipeline()` against the app's inference path, same model; and the
app's verdict alone against the verdict with its patch map (one forward pass, plus painting the map).

    python benchmarks/app_latency.py [--architecture convnextv2_base] [--image_size 256] [--data ../shared/data/ood]

The model has random weights (latency does not depend on them). Both paths start from the image file and end
with p(fake): the pipeline decodes with transformers' load_image, the app with modeling.imageio.read_image, and
both use the same timm eval transform. The two paths are timed alternately, image by image, so that load from
other processes on a shared machine hits both alike. Accuracy: the largest |p_app - p_eager| over --n_check
images of --data (default: the project's out-of-distribution images when the shared data folder is present,
else generated images).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, pipeline

ROOT = Path(__file__).resolve().parents[1]
from modeling import build_detector, save_detector  # noqa: E402
from modeling.imageio import read_image  # noqa: E402
from modeling.inference import BACKENDS, Detector, heatmap_overlay  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ood"


def image_files(data: Path | None, n: int, tmp: Path) -> list[Path]:
    """n images spread evenly over the sorted folder (so every source is represented), or generated ones."""
    if data and data.is_dir():
        files = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
        if files:
            return [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = tmp / f"generated_{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (320, 400, 3), dtype=np.uint8)).save(path, quality=90)
        out.append(path)
    return out


def eager_p_fake(clf, path: Path) -> float:
    return next(o["score"] for o in clf(str(path), top_k=None) if o["label"] == "fake")


def app_p_fake(detector: Detector, path: Path, with_map: bool = False) -> float:
    """The verdict, or (with_map) the verdict and its patch map painted as the page shows them."""
    image = read_image(path)
    if not with_map:
        return detector.predict(image).fake_probability
    prediction, patches = detector.predict_with_map(image)
    heatmap_overlay(image, patches, detector.band())
    return prediction.fake_probability


def timed(fn) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="convnextv2_base")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n_timed", type=int, default=12, help="images timed (each by both paths, interleaved)")
    parser.add_argument("--n_check", type=int, default=48, help="images compared for |p_app - p_eager|")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    args = parser.parse_args()

    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    model_dir = save_detector(build_detector(args.architecture, pretrained=False, image_size=args.image_size),
                              tmp / "model")
    # Eager fp32, as users run it (README), with the PIL image processor named so transformers does not look for a
    # torchvision one first.
    clf = pipeline("image-classification", model=str(model_dir), device="cpu",
                   image_processor=AutoImageProcessor.from_pretrained(model_dir, backend="pil"))
    load_s, detector = timed(lambda: Detector.from_pretrained(model_dir, backend=args.backend))
    files = image_files(args.data, max(args.n_timed, args.n_check), tmp)
    print(f"model: {args.architecture} at {args.image_size} px, random weights; torch threads "
          f"{torch.get_num_threads()}; app backend: {detector.backend} (load + warm-up {load_s:.1f} s)")
    print(f"images: {len(files)} from {args.data if args.data.is_dir() else 'generated'}; "
          f"load average at start: {os.getloadavg()[0]:.2f}")

    # Warm-up both paths (first calls allocate, pick kernels).
    eager_p_fake(clf, files[0]), app_p_fake(detector, files[0])

    eager_s, app_s, map_s = [], [], []
    for i, path in enumerate(files[: args.n_timed]):
        runs = [("eager", lambda: eager_p_fake(clf, path)), ("app", lambda: app_p_fake(detector, path)),
                ("map", lambda: app_p_fake(detector, path, with_map=True))]
        if i % 2:
            runs.reverse()  # alternate the order as well
        for name, fn in runs:
            seconds, _ = timed(fn)
            {"eager": eager_s, "app": app_s, "map": map_s}[name].append(seconds)

    diffs = [abs(app_p_fake(detector, p) - eager_p_fake(clf, p)) for p in files[: args.n_check]]
    eager_ms, app_ms, map_ms = (1000 * statistics.median(s) for s in (eager_s, app_s, map_s))
    print(f"eager fp32 pipeline(): median {eager_ms:.0f} ms/image (min {1000 * min(eager_s):.0f})")
    print(f"app inference path:    median {app_ms:.0f} ms/image (min {1000 * min(app_s):.0f}); "
          f"with the patch map {map_ms:.0f} ms (min {1000 * min(map_s):.0f})")
    print(f"verdict + map / verdict alone (medians): {map_ms / app_ms:.2f}x")
    print(f"speed-up (median eager / median app): {eager_ms / app_ms:.2f}x")
    print(f"max |p_fake(app) - p_fake(eager)| over {len(diffs)} images: {max(diffs):.2e} "
          f"({'within' if max(diffs) <= 0.01 else 'OUTSIDE'} the 0.01 tolerance)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
