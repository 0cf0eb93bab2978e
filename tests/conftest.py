"""Test configuration: offline, deterministic, tiny.

HF_HUB_OFFLINE is set here (before any test imports huggingface_hub) so no test can reach, or wait for, the Hub.
"""
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

TINY_ARCH = "convnextv2_atto"
TINY_SIZE = 32


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
