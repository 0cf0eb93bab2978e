"""The slowest file modeling.imageio.read_image and modeling.provenance.read_provenance meet among mutated images
(the fuzz tests' kind of input): the requirement is under one second per file, on any machine that serves the app.

    python benchmarks/imageio_worst_case.py [--cases 5000]

Prints the median and the slowest case in ms. A timing, so it lives here and not in tests/test_fuzz_imageio.py.
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

from modeling.imageio import ImageReadError, read_image
from modeling.provenance import read_provenance


def seeds() -> list[bytes]:
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    out = []
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"):
        buffer = io.BytesIO()
        photo.save(buffer, fmt)
        out.append(buffer.getvalue())
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(data)
    for _ in range(rng.integers(0, 9)):
        data[rng.integers(0, len(data))] = rng.integers(0, 256)
    return bytes(data[: rng.integers(len(data) // 2, len(data) + 1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    args = parser.parse_args()
    rng, files, times = np.random.default_rng(1), seeds(), []
    for i in range(args.cases):
        data = mutate(files[i % len(files)], rng)
        start = time.perf_counter()
        try:
            read_image(data)
        except ImageReadError:
            pass
        read_provenance(data)
        times.append(time.perf_counter() - start)
    print(f"{args.cases} mutated files: median {np.median(times) * 1000:.1f} ms, slowest {max(times) * 1000:.1f} ms "
          "(requirement: under 1000 ms)")


if __name__ == "__main__":
    main()
