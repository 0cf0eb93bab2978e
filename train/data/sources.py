"""Data sources as a config file names them (SourceSpec): image folders and Hub datasets, each turned into rows of
the shared schema (train/data/folders.py), capped and not decoded."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from train.data.folders import FEATURES, default_generator, label_id, load_image_folder
from train.data.layouts import load_layout


@dataclass
class SourceSpec:
    """One data source, as written in a config file (a plain folder path is the short form)."""
    path: str | None = None            # image folder: real/ + fake/, imagefolder with metadata.csv, or any tree
                                       # read through label_map / label / csv (train/data/layouts.py)
    hub: str | None = None             # anything datasets.load_dataset takes: a Hub name or a local dataset folder
    name: str | None = None            # source name for rows without one (default: folder name / Hub name)
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_dir: str | None = None        # Hub: load_dataset's data_dir; path: the subfolder to read (e.g. train)
    image_column: str = "image"
    label_column: str = "label"
    label_map: dict | None = None      # label value (Hub, CSV) or folder name (path) -> real / fake / null (skip)
    label: str | None = None           # every row has this label (single-class sets, e.g. a generator's output)
    source_column: str | None = None
    generator_column: str | None = None
    generator: str | None = None       # generator for all fakes of this source
    generator_folder: int | None = None  # path: the folder at this depth under the root names the generator
    csv: str | None = None             # path: a CSV label file (relative to the folder) with image_column and
                                       # label_column, paths relative to the CSV's folder or the root
    streaming: bool = False            # iterate from the Hub instead of downloading (sets too big for the disk)
    profile: str | dict = "train"      # augmentation profile (train/transforms.py), name or {base: ..., overrides}
    max_samples: int | None = None     # cap, drawn at random with the run's seed

    @classmethod
    def parse(cls, spec: str | dict | SourceSpec, **defaults) -> SourceSpec:
        """A folder path or a dict; `defaults` fill the keys the spec leaves out (profile, max_samples)."""
        if isinstance(spec, SourceSpec):
            return spec
        fields = {"path": str(spec)} if isinstance(spec, (str, Path)) else dict(spec)
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(fields) - known:
            raise ValueError(f"unknown keys {sorted(unknown)} in data source {spec!r}; known: {sorted(known)}")
        if (fields.get("path") is None) == (fields.get("hub") is None):
            raise ValueError(f"data source {spec!r} needs exactly one of 'path' (an image folder) or 'hub'")
        for key, value in defaults.items():
            if fields.get(key) is None and value is not None:
                fields[key] = value
        return cls(**fields)

    @property
    def display_name(self) -> str:
        return self.name or (Path(self.path).name if self.path else self.hub)

    @property
    def profile_key(self) -> str:
        return self.profile if isinstance(self.profile, str) else json.dumps(self.profile, sort_keys=True)


def _label_ids(values: Sequence, spec: SourceSpec, feature) -> list[int]:
    if spec.label is not None:
        return [label_id(spec.label)] * len(values)
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    label_map = {str(k): v for k, v in (spec.label_map or {}).items()}
    out = []
    for value in values:
        key = names[value] if names is not None and isinstance(value, int) else value
        if label_map:
            mapped = label_map.get(str(key), label_map.get(str(value)))
            if mapped is None:
                raise ValueError(f"{spec.display_name}: label {key!r} is not in label_map {spec.label_map}")
            out.append(label_id(mapped))
        elif names is None and not isinstance(key, str):
            raise ValueError(f"{spec.display_name}: integer labels without class names; give a label_map "
                             "(for example {0: real, 1: fake}) so the meaning of each value is explicit")
        else:
            out.append(label_id(key))
    return out


def _standardize_rows(batch: dict, spec: SourceSpec, label_feature) -> dict:
    """A batch of a Hub dataset's rows -> image/label/source/generator columns."""
    n = len(batch[spec.image_column])
    labels = _label_ids(batch[spec.label_column] if spec.label is None else [None] * n, spec, label_feature)
    sources = batch[spec.source_column] if spec.source_column else [spec.display_name] * n
    if spec.generator_column:
        generators = [g if lab else "none" for g, lab in zip(batch[spec.generator_column], labels)]
    else:
        generators = [spec.generator or default_generator(lab) if lab else "none" for lab in labels]
    return {"image": batch[spec.image_column], "label": labels, "source": [str(s) for s in sources],
            "generator": [str(g) for g in generators]}


def load_hub_source(spec: SourceSpec) -> datasets.Dataset | datasets.IterableDataset:
    ds = datasets.load_dataset(spec.hub, spec.config, split=spec.split, revision=spec.revision,
                               data_dir=spec.data_dir, streaming=spec.streaming)
    ds = ds.cast_column(spec.image_column, datasets.Image(decode=False))
    label_feature = (ds.features or {}).get(spec.label_column)
    features = datasets.Features({**FEATURES, "image": datasets.Image(decode=False)})
    if spec.streaming:
        return ds.map(_standardize_rows, batched=True, remove_columns=list(ds.column_names or []),
                      fn_kwargs=dict(spec=spec, label_feature=label_feature), features=features)
    # Map-style: compute the small columns and attach them, so the image data (possibly hundreds of GB) is
    # neither copied nor rewritten into a new cache file.
    small = {c: ds[c] for c in (spec.label_column, spec.source_column, spec.generator_column)
             if c and c in ds.column_names and not (c == spec.label_column and spec.label is not None)}
    columns = _standardize_rows({**small, spec.image_column: range(len(ds))}, spec, label_feature)
    images = ds.select_columns([spec.image_column])
    if spec.image_column != "image":
        images = images.rename_column(spec.image_column, "image")
    for key in ("label", "source", "generator"):
        images = images.add_column(key, columns[key])
    return images.cast(features)


def load_source(spec: SourceSpec, seed: int = 0) -> datasets.Dataset | datasets.IterableDataset:
    """The source's rows (image not decoded), capped to spec.max_samples."""
    source_name = spec.name or (Path(spec.path).expanduser().resolve().name if spec.path else None)
    if spec.path is not None and (spec.label_map or spec.label or spec.csv or spec.generator_folder is not None):
        ds = load_layout(Path(spec.path, spec.data_dir or ""), source_name, spec.label_map, spec.label, spec.csv,
                         spec.image_column, spec.label_column, spec.generator, spec.generator_column,
                         spec.generator_folder)
        ds = ds.cast_column("image", datasets.Image(decode=False))
    elif spec.path is not None:
        ds = load_image_folder(Path(spec.path, spec.data_dir or ""), source=source_name)
        if spec.generator:
            ds = ds.map(lambda r: {"generator": spec.generator if r["label"] else "none"})
        ds = ds.cast_column("image", datasets.Image(decode=False))
    else:
        ds = load_hub_source(spec)
    if spec.max_samples is not None:
        if isinstance(ds, datasets.IterableDataset):
            ds = ds.take(spec.max_samples)
        elif len(ds) > spec.max_samples:
            keep = np.random.default_rng(seed).choice(len(ds), spec.max_samples, replace=False)
            ds = ds.select(np.sort(keep))
    return ds


def describe(ds: datasets.Dataset) -> dict:
    """Counts for logs and training_config.json."""
    labels = np.asarray(ds["label"])
    generators = np.asarray(ds["generator"], dtype=object)
    return {"n": int(labels.size), "n_real": int((labels == 0).sum()), "n_fake": int((labels == 1).sum()),
            "sources": sorted(set(ds["source"])), "generators": sorted(set(generators[labels == 1]))}
