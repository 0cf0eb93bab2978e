"""Test configuration: offline, deterministic, tiny.

HF_HUB_OFFLINE is set here (before any test imports huggingface_hub) so no test can reach, or wait for, the Hub.
"""
import os
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Converted models (app.py, hub/push.py) go to one temporary cache per session, never into the repo.
os.environ["MODEL_CACHE_DIR"] = tempfile.mkdtemp(prefix="test-model-cache-")

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

TINY_ARCH = "convnextv2_atto"
TINY_SIZE = 32
# train/run.py flags for a test run: in this process, on the CPU, logging every step, no TensorBoard.
FAST = ["--dataloader_num_workers", "0", "--report_to", "none", "--use_cpu", "--logging_steps", "1"]


def free_port() -> int:
    """A local TCP port nothing listens on (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_probabilities(model_dir, img: Image.Image) -> dict[str, float]:
    """label -> probability of a saved detector on one image, through the project's own loader and eval transform
    (what pipeline() must agree with)."""
    from modeling import load_detector
    from modeling.detector import eval_transform

    model = load_detector(model_dir).eval()
    with torch.no_grad():
        probs = model(pixel_values=eval_transform(model)(img.convert("RGB"))[None]).logits.softmax(-1)[0]
    return {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}


def make_image(path: Path, seed: int, size=(48, 40), fake: bool = False, fmt: str = "JPEG") -> Path:
    """A random image; 'fake' ones are smooth, 'real' ones noisy, so a tiny model can tell them apart."""
    rng = np.random.default_rng(seed)
    w, h = size
    if fake:
        base = rng.integers(0, 255, (4, 4, 3)).astype(np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt)
    return path


def make_image_folder(root: Path, n_per_class: int = 6, seed: int = 0, size=(48, 40)) -> Path:
    """real/ and fake/ subfolders of small generated JPEGs."""
    for i in range(n_per_class):
        make_image(root / "real" / f"r{i}.jpg", seed * 1000 + i, size, fake=False)
        make_image(root / "fake" / f"f{i}.jpg", seed * 1000 + 500 + i, size, fake=True)
    return root


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_detector_dir(tmp_path_factory):
    """A saved random convnextv2_atto detector at 32 px."""
    from modeling import build_detector, save_detector

    folder = tmp_path_factory.mktemp("tiny_detector")
    save_detector(build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE), folder)
    return folder


# --- image files the app must answer or refuse (appended by the app owner) ----------------------------------------
def encode_image(img: Image.Image, fmt: str, **save_kwargs) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, fmt, **save_kwargs)
    return buf.getvalue()


def png_bomb(side: int) -> bytes:
    """A complete, valid 1-bit PNG of side x side black pixels, built row by row (no giant image in memory)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def odd_image_cases() -> dict[str, tuple[str, bytes, str | None]]:
    """name -> (file name, bytes, None if it must be answered else a fragment of the expected error message).
    One of each bad input the app must refuse and each odd format it must read."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    jpeg = encode_image(photo, "JPEG", quality=90)
    frames = [Image.new("RGB", (48, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    return {
        "not_an_image": ("notes.jpg", b"this is a text file renamed to .jpg\n" * 20, "not an image"),
        "truncated": ("cut.jpg", jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "zero_bytes": ("empty.png", b"", "empty"),
        "over_20_mb": ("huge.png", encode_image(photo, "PNG") + bytes(21 * 2**20), "too large"),
        "over_16_megapixels": ("wide.png", encode_image(Image.new("1", (5000, 4000)), "PNG"), "megapixels"),
        "decompression_bomb": ("bomb.png", png_bomb(20_000), "too large"),
        "jpeg": ("photo.jpg", jpeg, None),
        "animated_gif": ("anim.gif", encode_image(frames[0], "GIF", save_all=True, append_images=frames[1:]), None),
        "animated_webp": ("anim.webp", encode_image(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
                          None),
        "cmyk": ("cmyk.jpg", encode_image(photo.convert("CMYK"), "JPEG"), None),
        "16_bit": ("deep.png", encode_image(Image.fromarray(
            rng.integers(0, 65535, (40, 48), dtype=np.uint16)), "PNG"), None),
        "palette": ("pal.png", encode_image(photo.quantize(32), "PNG"), None),
        "alpha": ("alpha.png", encode_image(photo.convert("RGBA"), "PNG"), None),
        "grayscale": ("gray.jpg", encode_image(photo.convert("L"), "JPEG"), None),
    }


def hub_cache_with(repo_id: str, model_dir: Path, cache: Path) -> Path:
    """A huggingface_hub cache (HF_HUB_CACHE layout: models--owner--name/{refs/main, snapshots/<commit>/}) holding
    model_dir's files as repo_id, so offline loading by repo id can be tested without the Hub."""
    import shutil

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return cache
