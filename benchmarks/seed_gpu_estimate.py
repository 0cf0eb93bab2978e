"""The two numbers behind the README's "Reproduce the reference on a GPU": what one CPU core feeds (JPEG decode + the
`train` augmentation profile, images/s), and what one training image costs the GPU (FLOPs of a forward and backward
pass of the model, counted by torch.utils.flop_counter).

    python benchmarks/seed_gpu_estimate.py --data_dir ../shared/data/train [--n 300 --arch convnextv2_base --size 256]

The loader is timed in one process on one thread, images already in memory (no disk), in CPU seconds of this
process (so a busy neighbour does not lower the figure), which makes it a per-core rate: a DataLoader with W workers
on W free cores feeds about W times as much. Training FLOPs are 3 x the counted forward (the backward pass computes
gradients for both activations and weights, 2 x forward): torch's counter counts a grouped convolution's backward as
if it were dense (ConvNeXt's 7x7 depthwise convolutions), so its own backward figure is printed but not used.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling.imageio import IMAGE_SUFFIXES, read_image
from train.transforms import build_train_transform

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reencoded(blob: bytes, long_side: int) -> bytes:
    """The image resized (bicubic) to this long side and saved as a quality-90 JPEG: the pixel count of the sets
    the seed trained on (COCO 640 px, generators 512-1024 px) when the local files are smaller."""
    import io

    from PIL import Image

    img = read_image(blob)
    scale = long_side / max(img.size)
    buf = io.BytesIO()
    img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def loader_images_per_second(blobs: list[bytes], size: int, profile: str, rounds: int) -> dict:
    """Decode alone and decode + augmentation, images per CPU second on one thread; the best of `rounds` passes."""
    torch.set_num_threads(1)
    transform = build_train_transform(profile, size, IMAGENET_MEAN, IMAGENET_STD, "bicubic")
    decode, full = [], []
    for r in range(rounds):
        start = time.process_time()
        images = [read_image(b) for b in blobs]
        decode.append(len(blobs) / (time.process_time() - start))
        torch.manual_seed(r)
        start = time.process_time()
        for b in blobs:
            transform(read_image(b))
        full.append(len(blobs) / (time.process_time() - start))
    pixels = [im.width * im.height for im in images]
    return {"images": len(blobs), "mean_megapixels": statistics.mean(pixels) / 1e6,
            "mean_kb": statistics.mean(len(b) for b in blobs) / 1024,
            "decode_per_s": max(decode), "decode_augment_per_s": max(full),
            "decode_augment_per_s_median": statistics.median(full)}


def training_flops(arch: str, size: int) -> dict:
    """FLOPs of one image's forward; a training step costs about 3 x that per image (see the module docstring)."""
    model = timm.create_model(arch, pretrained=False, num_classes=2)
    x = torch.randn(1, 3, size, size)
    with FlopCounterMode(display=False) as forward:
        with torch.no_grad():
            model(x)
    with FlopCounterMode(display=False) as train_step:
        torch.nn.functional.cross_entropy(model(x), torch.tensor([1])).backward()
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "forward_gflops": forward.get_total_flops() / 1e9, "train_gflops": 3 * forward.get_total_flops() / 1e9,
            "counter_train_gflops": train_step.get_total_flops() / 1e9}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, required=True, help="JPEG/PNG files to decode (searched recursively)")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arch", default="convnextv2_base")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--profile", default="train")
    parser.add_argument("--long_side", type=int, default=None,
                        help="Resize every image to this long side and re-encode it (JPEG q90) before timing")
    args = parser.parse_args()

    files = sorted(p for p in args.data_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:args.n]]
    blobs = [f.read_bytes() for f in files]
    if args.long_side:
        blobs = [reencoded(b, args.long_side) for b in blobs]
    loader = loader_images_per_second(blobs, args.size, args.profile, args.rounds)
    resized = f", resized to {args.long_side} px JPEG q90" if args.long_side else ""
    print(f"loader, per CPU second of one core: {loader['images']} images from {args.data_dir}{resized} (mean {loader['mean_megapixels']:.2f} MP, "
          f"{loader['mean_kb']:.0f} KB): decode {loader['decode_per_s']:.1f} images/s; decode + '{args.profile}' "
          f"augmentation to {args.size} px {loader['decode_augment_per_s']:.1f} images/s "
          f"(median of {args.rounds} passes {loader['decode_augment_per_s_median']:.1f})")
    flops = training_flops(args.arch, args.size)
    print(f"model: {args.arch} at {args.size} px, {flops['params_m']:.1f} M parameters: forward "
          f"{flops['forward_gflops']:.1f} GFLOPs per image, training (3 x forward) {flops['train_gflops']:.1f} GFLOPs "
          f"(torch's counter, grouped-conv backward counted dense: {flops['counter_train_gflops']:.1f})")


if __name__ == "__main__":
    main()
