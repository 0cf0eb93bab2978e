"""Downloaded sets (Kaggle, GitHub, unzipped Hub archives) in the layouts they ship in, read through an explicit
`label_map` instead of being rearranged into real/ + fake/ first:

- folder trees: an image's label comes from the folders on its path, e.g. train/REAL/x.jpg, 0_real/x.png,
  <generator>/train/ai/x.png. Every folder name the map names is looked up; one mapped to null skips the
  image (a split or class you leave out). Exactly one label must result, else the error lists the folder
  names found, so a layout nobody has seen yet fails on the first run, not after a silent mislabelling.
- CSV label files: one row per image, a path column and a label column whose values the map translates.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import datasets

from modeling.imageio import IMAGE_SUFFIXES
from train.data.folders import FEATURES, default_generator, label_id


def _images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _dataset(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({key: [row[key] for row in rows] for key in FEATURES}, features=FEATURES)


def _normalised_map(label_map: dict) -> dict[str, int | None]:
    """Keys as text (YAML reads 0: real as an int key); values real/fake/0/1, or null to skip."""
    return {str(key): None if value is None else label_id(value) for key, value in label_map.items()}


def tree_rows(root: Path, label_map: dict | None, label: str | None, source: str,
              generator: str | None = None, generator_folder: int | None = None) -> list[dict]:
    """Rows of every image under `root`, labelled by `label` (single-class sets) or by the folders on its path."""
    mapping = _normalised_map(label_map or {})
    rows, unmapped, conflicting = [], Counter(), Counter()
    for path in _images_under(root):
        folders = path.relative_to(root).parts[:-1]
        if label is not None:
            labels = {label_id(label)}
        else:
            hits = [mapping[f] for f in folders if f in mapping]
            if None in hits:
                continue  # a folder the map skips, e.g. val/ in a training source
            labels = set(hits)
            if not labels:
                unmapped["/".join(folders) or "(top level)"] += 1
                continue
            if len(labels) > 1:
                conflicting["/".join(folders)] += 1
                continue
        lab = labels.pop()
        if lab and generator_folder is not None and len(folders) > generator_folder:
            gen = folders[generator_folder]
        else:
            gen = (generator if lab else None) or default_generator(lab)
        rows.append(dict(image=str(path), label=lab, source=source, generator=gen))
    if unmapped or conflicting:
        found = sorted({f for p in _images_under(root) for f in p.relative_to(root).parts[:-1]})
        problems = [f"{n} images in {folder}/" for folder, n in sorted(unmapped.items())]
        problems += [f"{n} images in {folder}/ (two labels)" for folder, n in sorted(conflicting.items())]
        raise ValueError(
            f"{source}: label_map {label_map} gives no single label to {'; '.join(problems[:10])}. "
            f"Folder names found under {root}: {found}. Map each label folder to real or fake "
            "(null skips a folder, e.g. a split you do not train on).")
    return rows


def csv_rows(root: Path, csv_name: str, image_column: str, label_column: str, label_map: dict | None,
             source: str, generator_column: str | None = None) -> list[dict]:
    """Rows of a CSV label file; image paths are relative to the CSV's folder or to `root`."""
    table = root / csv_name
    mapping = _normalised_map(label_map) if label_map else None
    rows, unmapped, missing = [], Counter(), 0
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        absent = {image_column, label_column, generator_column} - set(reader.fieldnames or []) - {None}
        if absent:
            raise ValueError(f"{table}: no column {sorted(absent)}; columns: {reader.fieldnames}")
        for record in reader:
            value = record[label_column].strip()
            if mapping is None:
                lab = label_id(value)
            elif value not in mapping:
                unmapped[value] += 1
                continue
            elif (lab := mapping[value]) is None:
                continue
            path = table.parent / record[image_column]
            if not path.is_file():  # some sets list paths from the set's root instead of the CSV's folder
                path = root / record[image_column]
            if not path.is_file():
                missing += 1
                continue
            gen = record[generator_column] if generator_column and lab else default_generator(lab)
            rows.append(dict(image=str(path), label=lab, source=source, generator=gen))
    if unmapped:
        raise ValueError(f"{source}: values of {label_column!r} in {table} not in label_map {label_map}: "
                         f"{dict(unmapped)}")
    if missing and not rows:
        raise FileNotFoundError(f"{table}: none of the {missing} files it lists exist under {table.parent}")
    return rows


def load_layout(path: str | Path, source: str, label_map: dict | None = None, label: str | None = None,
                csv_name: str | None = None, image_column: str = "image", label_column: str = "label",
                generator: str | None = None, generator_column: str | None = None,
                generator_folder: int | None = None) -> datasets.Dataset:
    """A downloaded set as rows of the shared schema (images referenced by path, not decoded)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{source}: folder {root} does not exist")
    if csv_name:
        rows = csv_rows(root, csv_name, image_column, label_column, label_map, source, generator_column)
    else:
        rows = tree_rows(root, label_map, label, source, generator, generator_folder)
    if not rows:
        raise ValueError(f"{source}: no images under {root} after applying label_map {label_map}")
    return _dataset(rows)
