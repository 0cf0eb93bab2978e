"""Training and evaluation data: image folders and Hub datasets as one `datasets.Dataset` schema.

Every source, whatever its origin, becomes a dataset with the columns
    image (datasets.Image), label (int, real=0 / fake=1), source (str), generator (str; "none" for reals)
so sources concatenate, and metrics can be grouped by source or generator.

Then, for the Trainer:
- `ImageSamples` turns rows into model inputs with each source's augmentation profile. An image that cannot be
  decoded becomes a placeholder with label -100 (the loss ignores it, batches keep their shape, so distributed
  ranks stay in step) and is counted; one bad file among 400k never stops a run.
- `EpochSampler` fixes each epoch's rows: every new row plus, in the continual phase, a replay draw from the
  old sources, stratified (equal per old source, topped up from the others when one runs short) and re-drawn
  every epoch from a generator seeded by (seed, epoch). It also hands every sample its own augmentation seed,
  so a resumed run, or one with another number of workers, sees exactly the same pixels.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from modeling.imageio import ImageReadError, read_image, to_rgb

logger = logging.getLogger(__name__)

LABELS = ("real", "fake")  # index = label id, the order modeling.build_detector uses
IGNORE_INDEX = -100  # label of a placeholder for an unreadable image; the loss and the metrics skip it
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif"}
FEATURES = datasets.Features({
    "image": datasets.Image(),
    "label": datasets.ClassLabel(names=list(LABELS)),
    "source": datasets.Value("string"),
    "generator": datasets.Value("string"),
})


# ---- Image folders ----------------------------------------------------------------------------------------

def _default_generator(label: int) -> str:
    return "none" if label == 0 else "unknown"


def _label_id(value) -> int:
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
            label = _label_id(record.get("label") or Path(record["file_name"]).parts[0])
            rows.append(dict(
                image=str(path), label=label,
                source=record.get("source") or default_source,
                generator=record.get("generator") or _default_generator(label),
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
                rows.append(dict(image=str(path), label=label, source=source, generator=_default_generator(label)))
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


# ---- Sources: folders and Hub datasets --------------------------------------------------------------------

@dataclass
class SourceSpec:
    """One data source, as written in a config file (a plain folder path is the short form)."""
    path: str | None = None            # image folder: real/ + fake/, or imagefolder with metadata.csv
    hub: str | None = None             # anything datasets.load_dataset takes: a Hub name or a local dataset folder
    name: str | None = None            # source name for rows without one (default: folder name / Hub name)
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_dir: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    label_map: dict | None = None      # the dataset's label value -> "real" / "fake"
    label: str | None = None           # every row has this label (single-class sets, e.g. a generator's output)
    source_column: str | None = None
    generator_column: str | None = None
    generator: str | None = None       # generator for all fakes of this source
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
        return [_label_id(spec.label)] * len(values)
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    label_map = {str(k): v for k, v in (spec.label_map or {}).items()}
    out = []
    for value in values:
        key = names[value] if names is not None and isinstance(value, int) else value
        if label_map:
            mapped = label_map.get(str(key), label_map.get(str(value)))
            if mapped is None:
                raise ValueError(f"{spec.display_name}: label {key!r} is not in label_map {spec.label_map}")
            out.append(_label_id(mapped))
        elif names is None and not isinstance(key, str):
            raise ValueError(f"{spec.display_name}: integer labels without class names; give a label_map "
                             "(for example {0: real, 1: fake}) so the meaning of each value is explicit")
        else:
            out.append(_label_id(key))
    return out


def _standardize_rows(batch: dict, spec: SourceSpec, label_feature) -> dict:
    """A batch of a Hub dataset's rows -> image/label/source/generator columns."""
    n = len(batch[spec.image_column])
    labels = _label_ids(batch[spec.label_column] if spec.label is None else [None] * n, spec, label_feature)
    sources = batch[spec.source_column] if spec.source_column else [spec.display_name] * n
    if spec.generator_column:
        generators = [g if lab else "none" for g, lab in zip(batch[spec.generator_column], labels)]
    else:
        generators = [spec.generator or _default_generator(lab) if lab else "none" for lab in labels]
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
    if spec.path is not None:
        ds = load_image_folder(spec.path, source=spec.name)
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


# ---- Decoding and samples ---------------------------------------------------------------------------------

def decode_image(value, max_bytes: int, max_pixels: int):
    """A datasets image value (path, {"bytes", "path"} or PIL image) -> RGB PIL image via modeling.imageio, the
    decoder the app and the evaluation use. Raises ImageReadError for anything unreadable."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if value is None:
        raise ImageReadError("no image data")
    if hasattr(value, "mode"):  # already a PIL image (a dataset that decodes on its own)
        return to_rgb(value)
    return read_image(value, max_bytes=max_bytes, max_pixels=max_pixels)


@contextlib.contextmanager
def _seeded(seed: int | None):
    """torchvision's random transforms draw from torch's global RNG: seed it per sample, and restore it after,
    so the model's own randomness (drop path) is not disturbed when loading runs in the main process."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class ImageSamples(torch.utils.data.Dataset):
    """Rows (image not decoded) -> {"pixel_values", "labels", "source_ids"}; keys are row indices or
    (row, augmentation seed) pairs from EpochSampler."""

    def __init__(self, rows: datasets.Dataset, transforms: Sequence, row_transform: Sequence[int],
                 source_names: Sequence[str], image_size: int, max_bytes: int = 64 * 2**20,
                 max_pixels: int = 64_000_000):
        self.rows = rows
        self.transforms = list(transforms)
        self.row_transform = np.asarray(row_transform, dtype=np.int16)
        self.labels = np.asarray(rows["label"], dtype=np.int64)
        index = {name: i for i, name in enumerate(source_names)}
        self.source_ids = np.asarray([index[s] for s in rows["source"]], dtype=np.int64)
        self.image_size = image_size
        self.max_bytes, self.max_pixels = max_bytes, max_pixels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> dict:
        row, seed = key if isinstance(key, tuple) else (key, None)
        value = self.rows[int(row)]["image"]
        try:
            image = decode_image(value, self.max_bytes, self.max_pixels)
        except (ImageReadError, OSError) as e:
            where = value.get("path") if isinstance(value, dict) else value
            logger.warning("skipping unreadable image (row %d, %s): %s", row, where or "in-memory bytes", e)
            return {"pixel_values": torch.zeros(3, self.image_size, self.image_size),
                    "labels": IGNORE_INDEX, "source_ids": int(self.source_ids[row])}
        with _seeded(seed):
            pixels = self.transforms[self.row_transform[row]](image)
        return {"pixel_values": pixels, "labels": int(self.labels[row]), "source_ids": int(self.source_ids[row])}


class StreamingImageSamples(torch.utils.data.IterableDataset):
    """Streamed rows with a `transform_id` column -> the same samples as ImageSamples. Bad files are dropped
    from the stream (there is no batch shape to keep before batching) and counted in the log."""

    def __init__(self, rows: datasets.IterableDataset, transforms: Sequence, source_names: Sequence[str],
                 max_bytes: int = 64 * 2**20, max_pixels: int = 64_000_000):
        self.rows = rows
        self.transforms = list(transforms)
        self.source_index = {name: i for i, name in enumerate(source_names)}  # sources of the mix; -1 if unknown
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.skipped = 0

    def set_epoch(self, epoch: int):
        self.rows.set_epoch(epoch)  # reshuffles shards and the shuffle buffer, if any

    def __iter__(self):
        for record in self.rows:
            try:
                image = decode_image(record["image"], self.max_bytes, self.max_pixels)
            except (ImageReadError, OSError) as e:
                self.skipped += 1
                logger.warning("skipping unreadable streamed image (%d so far in this worker): %s", self.skipped, e)
                continue
            yield {"pixel_values": self.transforms[record["transform_id"]](image), "labels": int(record["label"]),
                   "source_ids": self.source_index.get(record["source"], -1)}


def collate(samples: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "labels": torch.tensor([s["labels"] for s in samples], dtype=torch.long),
        "source_ids": torch.tensor([s["source_ids"] for s in samples], dtype=torch.long),
    }


# ---- Replay (rehearsal) and the per-epoch order -----------------------------------------------------------

def stratified_quota(sizes: Sequence[int], total: int) -> list[int]:
    """Split `total` draws equally over pools of the given sizes; a pool that runs short gives all it has and
    the shortfall is shared by the others. Never more than a pool holds, never more than sum(sizes)."""
    quota = [0] * len(sizes)
    remaining = min(total, sum(sizes))
    open_pools = [i for i, size in enumerate(sizes) if size > 0]
    while remaining > 0 and open_pools:
        share, extra = divmod(remaining, len(open_pools))
        for rank, i in enumerate(open_pools):
            give = min(sizes[i] - quota[i], share + (rank < extra))
            quota[i] += give
            remaining -= give
        open_pools = [i for i in open_pools if quota[i] < sizes[i]]
    return quota


def source_balance_weights(sources: Sequence[str], labels: Sequence[int], power: float) -> np.ndarray:
    """Sampling probabilities that flatten the sources within each class: a source of n rows gets a share of its
    class proportional to n**(1 - power) (0: as the data comes; 0.5: square root; 1: every source alike). Each
    class keeps its share of the data, so balancing sources never changes the real:fake ratio."""
    sources, labels = np.asarray(sources, dtype=object), np.asarray(labels)
    weights = np.zeros(len(sources))
    for label in np.unique(labels):
        in_class = labels == label
        names, inverse, counts = np.unique(sources[in_class], return_inverse=True, return_counts=True)
        row_weight = counts[inverse] ** -float(power)
        weights[in_class] = row_weight / row_weight.sum() * in_class.mean()
    return weights / weights.sum()


class EpochSampler(torch.utils.data.Sampler):
    """Each epoch: all `new_rows` (or, with `new_weights`, as many rows drawn with replacement by those
    probabilities), plus `n_replay` rows drawn from `replay_pools` (old source -> its rows) by
    stratified_quota, shuffled together. Everything is a function of (seed, epoch), so every distributed rank
    computes the same order (accelerate then gives each rank its share of the batches) and a resumed run
    continues with the order it would have had.

    Yields (row, augmentation seed) keys for ImageSamples."""

    def __init__(self, new_rows: Sequence[int], replay_pools: dict[str, Sequence[int]] | None = None,
                 n_replay: int = 0, seed: int = 0, new_weights: Sequence[float] | None = None):
        self.new_rows = np.asarray(new_rows, dtype=np.int64)
        self.new_weights = None if new_weights is None else np.asarray(new_weights, dtype=np.float64)
        self.replay_pools = {k: np.asarray(v, dtype=np.int64) for k, v in (replay_pools or {}).items()}
        self.n_replay = min(n_replay, sum(len(v) for v in self.replay_pools.values()))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def replay_rows(self, rng: np.random.Generator) -> np.ndarray:
        pools = list(self.replay_pools.values())
        quota = stratified_quota([len(p) for p in pools], self.n_replay)
        drawn = [rng.choice(pool, q, replace=False) for pool, q in zip(pools, quota) if q]
        return np.concatenate(drawn) if drawn else np.empty(0, dtype=np.int64)

    def epoch_keys(self, epoch: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, epoch])
        new = self.new_rows if self.new_weights is None else rng.choice(
            self.new_rows, len(self.new_rows), replace=True, p=self.new_weights)
        rows = rng.permutation(np.concatenate([new, self.replay_rows(rng)]))
        seeds = rng.integers(0, 2**62, size=len(rows))
        return list(zip(rows.tolist(), seeds.tolist()))

    def __iter__(self):
        return iter(self.epoch_keys(self.epoch))

    def __len__(self) -> int:
        return len(self.new_rows) + self.n_replay


# ---- Assembly ---------------------------------------------------------------------------------------------

@dataclass
class DataLimits:
    """Per-image decoding limits for training data (larger than the app's: training photos can be 50 MP)."""
    max_bytes: int = 64 * 2**20
    max_pixels: int = 64_000_000


def _summary(spec: SourceSpec, ds) -> dict:
    info = {"source": spec.display_name, **{k: v for k, v in dataclasses.asdict(spec).items() if v is not None}}
    if isinstance(ds, datasets.Dataset):
        info.update(describe(ds))
    return info


def build_training_data(specs: Sequence[SourceSpec], make_transform, image_size: int, seed: int = 0,
                        rehearsal_specs: Sequence[SourceSpec] = (), rehearsal_ratio: float = 8.0,
                        limits: DataLimits = DataLimits(), source_balance: float = 0.0):
    """-> (dataset, sampler or None, summary). `make_transform(profile)` builds one augmentation pipeline.

    Map-style sources give an ImageSamples + EpochSampler (replay included); if any source streams, the
    sources are interleaved into a StreamingImageSamples (no replay: it needs to know the old sources' rows)."""
    parts = [load_source(s, seed) for s in specs]
    old = [load_source(s, seed) for s in rehearsal_specs]
    by_key = {s.profile_key: s.profile for s in [*specs, *rehearsal_specs]}  # name (or JSON of a dict) -> profile
    profiles = list(by_key)
    transforms = [make_transform(by_key[k]) for k in profiles]
    summary = {"train": [_summary(s, d) for s, d in zip(specs, parts)],
               "rehearsal": [_summary(s, d) for s, d in zip(rehearsal_specs, old)],
               "profiles": by_key}

    if any(isinstance(d, datasets.IterableDataset) for d in parts + old):
        if old:
            raise ValueError("rehearsal sources need map-style (non-streaming) data sources")
        streams = []
        for spec, ds in zip(specs, parts):
            if isinstance(ds, datasets.Dataset):
                ds = ds.to_iterable_dataset(num_shards=min(64, max(1, len(ds) // 1000)))
            tid = profiles.index(spec.profile_key)
            streams.append(ds.map(lambda r, tid=tid: {"transform_id": tid}))
        rows = streams[0] if len(streams) == 1 else datasets.interleave_datasets(
            streams, seed=seed, stopping_strategy="all_exhausted")
        names = [s.display_name for s in specs]
        summary["streaming"] = True
        return (StreamingImageSamples(rows.shuffle(seed=seed, buffer_size=1000), transforms, names,
                                      limits.max_bytes, limits.max_pixels), None, summary)

    rows = datasets.concatenate_datasets(parts + old)
    row_transform = np.concatenate([np.full(len(d), profiles.index(s.profile_key))
                                    for s, d in zip([*specs, *rehearsal_specs], parts + old)])
    n_new = sum(len(d) for d in parts)
    pools: dict[str, list[int]] = {}
    for offset, name in enumerate(rows.select(range(n_new, len(rows)))["source"] if old else []):
        pools.setdefault(name, []).append(n_new + offset)
    n_replay = round(rehearsal_ratio * n_new) if old else 0
    new_weights = None
    if source_balance:
        new_rows = rows.select(range(n_new))
        new_weights = source_balance_weights(new_rows["source"], new_rows["label"], source_balance)
        summary["source_balance"] = source_balance
    sampler = EpochSampler(range(n_new), pools, n_replay, seed, new_weights)
    if old:
        summary["replay"] = {"ratio": rehearsal_ratio, "per_epoch": sampler.n_replay, "new_per_epoch": n_new,
                             "pools": {k: len(v) for k, v in pools.items()}}
        if sampler.n_replay < n_replay:
            logger.warning("replay: wanted %d old samples per epoch (%.1f x %d new) but the old sources hold only "
                           "%d; all of them are replayed every epoch", n_replay, rehearsal_ratio, n_new,
                           sampler.n_replay)
    names = sorted(set(rows["source"]))
    dataset = ImageSamples(rows, transforms, row_transform, names, image_size, limits.max_bytes, limits.max_pixels)
    return dataset, sampler, summary


@dataclass
class EvalData:
    samples: ImageSamples        # with the evaluation transform
    source_names: list[str]      # index = source_ids value
    summary: list[dict]          # per source spec, for training_config.json


def build_eval_data(specs: Sequence[SourceSpec], transform, image_size: int, seed: int = 0,
                    limits: DataLimits = DataLimits()) -> EvalData | None:
    """The validation or test sources as one evaluation set; None without sources."""
    if not specs:
        return None
    parts = []
    for spec in specs:
        ds = load_source(spec, seed)
        if isinstance(ds, datasets.IterableDataset):  # evaluation needs a fixed set: materialise the stream
            if spec.max_samples is None:
                logger.warning("%s: streaming evaluation source without max_samples is read in full",
                               spec.display_name)
            ds = datasets.Dataset.from_list(list(ds), features=ds.features)
        parts.append(ds)
    rows = datasets.concatenate_datasets(parts)
    names = sorted(set(rows["source"]))
    samples = ImageSamples(rows, [transform], np.zeros(len(rows)), names, image_size, limits.max_bytes,
                           limits.max_pixels)
    return EvalData(samples, names, [_summary(s, d) for s, d in zip(specs, parts)])
