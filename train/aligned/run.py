"""Aligned training data: real photos and their latent-autoencoder reconstructions ("fake twins").

Each real crop goes through encode -> decode; the reconstruction has the same content, so a detector trained on
(real, twin) pairs can only separate them by the decoder's traces, not by subject matter.

    python -m train.aligned --input_dir ../shared/data/train --output_dir aligned --crops_per_image 2 --write_reals

Output is a Hugging Face imagefolder: fake/<name>.jpg, optionally real/<name>.jpg (the very crop that was
reconstructed), and metadata.csv. metadata.csv is appended batch by batch, so an interrupted run resumes where it
stopped when started again with the same arguments.
"""
import csv
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import HfArgumentParser

from modeling.imageio import IMAGE_SUFFIXES, ImageReadError, read_image
from train.aligned.autoencoders import load_autoencoder
from train.data.samples import DataLimits

BUNDLED_TAEF2 = Path(__file__).resolve().parent / "weights" / "taef2"
COLUMNS = ["file_name", "label", "source", "generator", "origin", "license"]


@dataclass
class Args:
    input_dir: str = field(metadata={"help": "imagefolder with metadata.csv (rows with label=real are used), "
                                             "a folder with a real/ subfolder, or a plain folder of images"})
    output_dir: str = field(metadata={"help": "where fake/, real/ and metadata.csv go"})
    autoencoder: str = field(default=str(BUNDLED_TAEF2), metadata={
        "help": "TAESD-style folder (<name>_encoder.pth, <name>_decoder.pth) or a diffusers AutoencoderKL name/path"})
    crops_per_image: int = field(default=1, metadata={"help": "distinct random crops per image (fewer if the "
                                                              "image has fewer distinct positions)"})
    crop_size: int = field(default=256)
    seed: int = field(default=0)
    limit: int = field(default=0, metadata={"help": "use only the first N input images (0: all)"})
    write_reals: bool = field(default=False, metadata={"help": "also write the real crop of each pair"})
    batch_size: int = field(default=8)
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    jpeg_quality: int = field(default=90, metadata={"help": "90 matches the shared data's processing"})
    resume: bool = field(default=True, metadata={"help": "skip crops already listed in output metadata.csv"})
    max_image_pixels: int = field(default=DataLimits.max_pixels, metadata={
        "help": "images with more pixels are skipped as bad files (decompression bombs), as in training"})
    encoder_bf16: bool = field(default=False, metadata={
        "help": "run the encoder under bf16 autocast (faster on a CPU with native bf16: benchmarks/README.md). The "
                "decoder, whose traces the detector learns, always runs in fp32; the encoder only chooses the content"})


def list_inputs(input_dir):
    """[(relative path, license)] of the real images in input_dir, sorted."""
    meta = input_dir / "metadata.csv"
    if meta.is_file():
        with open(meta, newline="") as f:
            return [(r["file_name"], r.get("license") or "unknown") for r in csv.DictReader(f) if r["label"] == "real"]
    # imagefolder without metadata: the label is the folder name, so only real/ holds photos
    root = input_dir / "real" if (input_dir / "real").is_dir() else input_dir
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p.relative_to(input_dir).as_posix(), "unknown") for p in files]


def load_rgb(path, size, max_pixels: int = DataLimits.max_pixels):
    """The image as training reads it (modeling.imageio.read_image: size limits, EXIF orientation, colour-managed
    RGB), its short side bicubic-upscaled to `size` if smaller. Raises ImageReadError for a file it cannot read."""
    img = read_image(path, max_bytes=DataLimits.max_bytes, max_pixels=max_pixels)
    if min(img.size) < size:
        scale = size / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BICUBIC)
    return img


def crop_boxes(width, height, size, k, rng):
    """k distinct native-pixel crop boxes; a crop-sized image has one position, and duplicates would only
    duplicate the same reconstruction."""
    nx, ny = width - size + 1, height - size + 1
    picks = rng.sample(range(nx * ny), min(k, nx * ny))
    return [(i % nx, i // nx, i % nx + size, i // nx + size) for i in picks]


def output_name(rel):
    parts = list(Path(rel).with_suffix("").parts)
    if len(parts) > 1 and parts[0] == "real":
        parts = parts[1:]
    return "__".join(parts)


def reconstruct(model, images, encoder_bf16=False):
    """uint8 HWC crops -> uint8 HWC reconstructions of the same size."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    h, w = x.shape[-2:]
    # latents are 1/8 resolution: pad to a multiple of 8 so the decoder gives back exactly h x w
    x = F.pad(x, (0, -w % 8, 0, -h % 8), mode="replicate")
    y = model(x.contiguous(memory_format=torch.channels_last), encoder_bf16=encoder_bf16)[..., :h, :w]
    return y.mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def iter_crops(args, inputs, input_dir, skip):
    for rel, license in inputs:
        try:
            img = load_rgb(input_dir / rel, args.crop_size, args.max_image_pixels)
        except ImageReadError as e:  # one bad file among thousands must not stop the run
            print(f"skipped {rel}: {e}", flush=True)
            continue
        # seeded per file so the crops do not depend on --limit, the order or a resume
        rng = random.Random(f"{args.seed}:{rel}")
        for x0, y0, x1, y1 in crop_boxes(*img.size, args.crop_size, args.crops_per_image, rng):
            name = f"{output_name(rel)}_c{x0}-{y0}"
            if name not in skip:
                yield name, f"{rel}#crop={x0},{y0}", license, np.asarray(img.crop((x0, y0, x1, y1)))


def batched(it, n):
    batch = []
    for item in it:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def main(argv=None):
    (args,) = HfArgumentParser(Args, prog="python -m train.aligned").parse_args_into_dataclasses(args=argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    input_dir, out = Path(args.input_dir), Path(args.output_dir)
    inputs = list_inputs(input_dir)[: args.limit or None]
    if not inputs:
        raise SystemExit(f"no real images found in {input_dir}")

    model = load_autoencoder(args.autoencoder).eval().to(memory_format=torch.channels_last)
    generator, source = model.name, f"aligned-{model.name}"
    for sub in ["fake"] + ["real"] * args.write_reals:
        (out / sub).mkdir(parents=True, exist_ok=True)

    meta = out / "metadata.csv"
    done = set()
    if args.resume and meta.is_file():
        with open(meta, newline="") as f:
            done = {Path(r["file_name"]).stem for r in csv.DictReader(f) if r["label"] == "fake"}
    mode = "a" if done else "w"
    print(f"{len(inputs)} input images from {input_dir}, autoencoder {generator}, {len(done)} crops already done",
          flush=True)

    n, t0 = 0, time.time()
    with open(meta, mode, newline="") as f, torch.inference_mode():
        writer = csv.writer(f)
        if mode == "w":
            writer.writerow(COLUMNS)
        for batch in batched(iter_crops(args, inputs, input_dir, done), args.batch_size):
            recons = reconstruct(model, [crop for *_, crop in batch], args.encoder_bf16)
            for (name, origin, license, crop), recon in zip(batch, recons):
                if args.write_reals:
                    Image.fromarray(crop).save(out / "real" / f"{name}.jpg", quality=args.jpeg_quality)
                    writer.writerow([f"real/{name}.jpg", "real", source, "none", origin, license])
                Image.fromarray(recon).save(out / "fake" / f"{name}.jpg", quality=args.jpeg_quality)
                writer.writerow([f"fake/{name}.jpg", "fake", source, generator, origin, license])
            f.flush()  # rows only for images on disk, so a killed run resumes cleanly
            n += len(batch)
            rate = n / (time.time() - t0)
            print(f"{n} crops, {rate:.2f} images/s", flush=True)
    print(f"wrote {n} reconstructions to {out} in {time.time() - t0:.0f} s", flush=True)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
