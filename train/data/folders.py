"""Image folders (real/ + fake/, or the imagefolder layout with metadata.csv) as a Dataset with the one schema every
source shares: image, label (real=0 / fake=1), source, generator ("none" for reals)."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import datasets

from modeling.formats import LABELS
from modeling.imageio import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

FEATURES = datasets.Features({
    "image": datasets.Image(),
    "label": datasets.ClassLabel(names=list(LABELS)),
    "source": datasets.Value("string"),
    "generator": datasets.Value("string"),
})


def default_generator(label: int) -> str:
    return "none" if label == 0 else "unknown"


def label_id(value) -> int:
    """'real'/'fake' (any case), 0/1 or '0'/'1' -> 0/1."""
    text = str(value).strip().lower()
    if text in LABELS:
        return LABELS.index(text)
    if text in ("0", "1"):
        return int(text)
    raise ValueError(f"label {value!r} is neither real/fake nor 0/1")


def _rows_from_metadata(root: Path, default_source: str) -> list[dict]:
    """The imagefolder layout: metadata.csv with file_name and optional label/source/generator columns.
    A missing label is read from the first folder of file_name (real/ or fake/)."""
    rows, missing = [], 0
    with open(root / "metadata.csv", newline="", encoding="utf-8") as f:
        for record in csv.DictReader(f):
            path = root / record["file_name"]
            if not path.is_file():
                missing += 1
                continue
            label = label_id(record.get("label") or Path(record["file_name"]).parts[0])
            rows.append(dict(
                image=str(path), label=label,
                source=record.get("source") or default_source,
                generator=record.get("generator") or default_generator(label),
            ))
    if missing:
        logger.warning("%s: %d files listed in metadata.csv do not exist; skipped", root, missing)
    return rows


def _rows_from_subfolders(root: Path, source: str) -> list[dict]:
    rows = []
    for label, name in enumerate(LABELS):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                rows.append(dict(image=str(path), label=label, source=source, generator=default_generator(label)))
    return rows


def load_image_folder(path: str | Path, source: str | None = None) -> datasets.Dataset:
    """A folder with real/ and fake/ subfolders, or the imagefolder layout with metadata.csv, as a Dataset with
    columns image, label (real=0, fake=1), source, generator.

    source: name for the rows whose metadata does not give one (default: the folder's name). Images are
    referenced by path, not copied or decoded here; datasets decodes them on access (or not, after
    `cast_column("image", Image(decode=False))`, which the training pipeline uses to skip bad files).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    source = source or root.resolve().name
    if (root / "metadata.csv").is_file():
        rows = _rows_from_metadata(root, source)
    else:
        rows = _rows_from_subfolders(root, source)
    if not rows:
        raise ValueError(f"{root} holds no images: expected real/ and fake/ subfolders or a metadata.csv")
    columns = {key: [row[key] for row in rows] for key in FEATURES}
    return datasets.Dataset.from_dict(columns, features=FEATURES)
