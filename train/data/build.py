"""Sources -> what the Trainer takes: the training set with its sampler (replay included) and the evaluation sets."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
from datasets.distributed import split_dataset_by_node

from train.data.samples import DataLimits, ImageSamples, StreamingImageSamples
from train.data.sampling import EpochSampler, source_balance_weights
from train.data.sources import SourceSpec, describe, load_source

logger = logging.getLogger(__name__)


def _summary(spec: SourceSpec, ds) -> dict:
    info = {"source": spec.display_name, **{k: v for k, v in dataclasses.asdict(spec).items() if v is not None}}
    if isinstance(ds, datasets.Dataset):
        info.update(describe(ds))
    return info


def build_training_data(specs: Sequence[SourceSpec], make_transform, seed: int = 0,
                        rehearsal_specs: Sequence[SourceSpec] = (), rehearsal_ratio: float = 8.0,
                        limits: DataLimits = DataLimits(), source_balance: float = 0.0, rank: int = 0,
                        world_size: int = 1):
    """-> (dataset, sampler or None, summary). `make_transform(profile)` builds one augmentation pipeline.

    Map-style sources give an ImageSamples + EpochSampler (replay included; every rank computes the same order
    and the Trainer hands each its batches). If any source streams, the sources are interleaved into a
    StreamingImageSamples (no replay: it needs to know the old sources' rows), every row once per epoch, and
    process `rank` of `world_size` reads only its own share of the stream."""
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
        # Without replacement: the default strategies stop at the first exhausted source or repeat the small ones
        rows = streams[0] if len(streams) == 1 else datasets.interleave_datasets(
            streams, seed=seed, stopping_strategy="all_exhausted_without_replacement")
        # The same seed on every rank, so every rank shuffles the shards alike and the split below is a partition
        rows = rows.shuffle(seed=seed, buffer_size=1000)
        if world_size > 1:
            rows = split_dataset_by_node(rows, rank, world_size)
        names = [s.display_name for s in specs]
        summary["streaming"] = {"world_size": world_size, "n_shards": rows.num_shards}
        return StreamingImageSamples(rows, transforms, names, limits, split_by_rank=world_size > 1), None, summary

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
    dataset = ImageSamples(rows, transforms, row_transform, names, limits)
    return dataset, sampler, summary


@dataclass
class EvalData:
    samples: ImageSamples        # with the evaluation transform
    source_names: list[str]      # index = source_ids value
    summary: list[dict]          # per source spec, for training_config.json


def build_eval_data(specs: Sequence[SourceSpec], transform, seed: int = 0,
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
    samples = ImageSamples(rows, [transform], np.zeros(len(rows)), names, limits)
    return EvalData(samples, names, [_summary(s, d) for s, d in zip(specs, parts)])
