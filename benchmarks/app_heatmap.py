"""Which map to show beside the verdict: Grad-CAM of the last stage, or the per-patch map the app ships.

    python benchmarks/app_heatmap.py [--model checkpoints/demo] [--data ../shared/data/val] [--n 40]

Two questions, on held-out validation images (never ood):
- Does the map point at generated pixels? Splices: a real image with a window-sized crop of a generated image pasted
  at a random place; the pixel-level ROC AUC of the map's "towards AI-generated" value against the pasted region's
  mask (0.5 = no localisation), and how often the map's strongest point lies inside the pasted region.
- Does the map agree with the verdict? On whole images with a Real or AI-generated verdict: the share of the map
  that points the verdict's way (Grad-CAM: its sign; patch map: the patch's side of the threshold).
Plus the milliseconds each map costs per image.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from modeling import load_detector
from modeling.imageio import read_image
from modeling.inference import Detector

ROOT = Path(__file__).resolve().parents[1]


def grad_cam(net, pixels: np.ndarray, fake_index: int) -> np.ndarray:
    """Signed Grad-CAM of the last stage (> 0 towards "fake"), upsampled to the input size."""
    acts = {}
    handle = net.stages[-1].register_forward_hook(lambda m, i, out: acts.update(a=out))
    try:
        logits = net(torch.from_numpy(pixels[None]))
    finally:
        handle.remove()
    others = [i for i in range(logits.shape[-1]) if i != fake_index]
    log_odds = logits[0, fake_index] - logits[0, others].logsumexp(-1)
    (grads,) = torch.autograd.grad(log_odds, acts["a"])
    cam = (grads.mean((2, 3), keepdim=True) * acts["a"]).sum(1, keepdim=True).detach()
    return torch.nn.functional.interpolate(cam, size=pixels.shape[1:], mode="bilinear")[0, 0].numpy()


def images(data: Path, label: str, n: int, seed: int) -> list[Path]:
    with (data / "metadata.csv").open(newline="") as f:
        files = [data / r["file_name"] for r in csv.DictReader(f) if r["label"] == label]
    rng = np.random.default_rng(seed)
    return [files[i] for i in rng.choice(len(files), size=min(n, len(files)), replace=False)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "demo"))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "val")
    parser.add_argument("--n", type=int, default=40, help="splices, and whole images of each label")
    parser.add_argument("--cache_dir", default=str(ROOT / "model_cache"))
    args = parser.parse_args()

    detector = Detector.from_pretrained(args.model, cache_dir=args.cache_dir)
    net = load_detector(args.model).timm_model.eval()
    side, window = detector.input_size[0], detector.window
    rng = np.random.default_rng(0)
    print(f"model {args.model} ({detector.backend}), input {side} px, patch map window {window} px; "
          f"load average at start {os.getloadavg()[0]:.2f}")

    results = {"gradcam": {"auc": [], "peak_inside": [], "agree": [], "ms": []},
               "patches": {"auc": [], "peak_inside": [], "agree": [], "ms": []}}

    def maps(image: Image.Image) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        cam = grad_cam(net, detector.preprocess([image])[0], detector.fake_index)
        results["gradcam"]["ms"].append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        patch = detector.patch_map(image).pixel_map() - detector.threshold
        results["patches"]["ms"].append(1000 * (time.perf_counter() - start))
        return {"gradcam": cam, "patches": patch}

    reals, fakes = images(args.data, "real", args.n, 1), images(args.data, "fake", args.n, 2)
    for real_path, fake_path in zip(reals, fakes):
        # The model's view of each (resize + centre crop), back as an image, so the splice is in its own pixels.
        real = Image.fromarray(crop_pixels(detector, read_image(real_path)))
        fake = crop_pixels(detector, read_image(fake_path))
        y, x = rng.integers(0, side - window + 1, size=2)
        fy, fx = rng.integers(0, side - window + 1, size=2)
        spliced = np.asarray(real).copy()
        spliced[y:y + window, x:x + window] = fake[fy:fy + window, fx:fx + window]
        mask = np.zeros((side, side), dtype=bool)
        mask[y:y + window, x:x + window] = True
        for name, value in maps(Image.fromarray(spliced)).items():
            results[name]["auc"].append(roc_auc_score(mask.ravel(), value.ravel()))
            results[name]["peak_inside"].append(bool(mask.flat[np.argmax(value)]))
    for path in reals + fakes:
        image = read_image(path)
        label = detector.predict(image).label
        if label == "uncertain":
            continue
        for name, value in maps(image).items():
            results[name]["agree"].append(float(np.mean(value >= 0 if label == "fake" else value < 0)))

    print(f"{args.n} splices ({window}-px generated patch in a real image), {len(results['patches']['agree'])} "
          f"whole images with a Real/AI-generated verdict, from {args.data}")
    for name, r in results.items():
        print(f"{name:8s} localisation AUC {statistics.mean(r['auc']):.3f} (median {statistics.median(r['auc']):.3f}); "
              f"strongest point inside the pasted patch {np.mean(r['peak_inside']):.0%} "
              f"(chance {window ** 2 / side ** 2:.0%}); map agrees with the verdict {statistics.mean(r['agree']):.0%} "
              f"of its area; {statistics.median(r['ms']):.0f} ms/image")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


def crop_pixels(detector: Detector, image: Image.Image) -> np.ndarray:
    """The model's input crop as uint8 RGB (the eval transform before normalising)."""
    pixels = detector.preprocess([image])[0] * detector.std + detector.mean
    return np.clip(np.rint(pixels.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)


if __name__ == "__main__":
    main()
