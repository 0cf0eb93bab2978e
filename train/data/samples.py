"""Rows -> model inputs: decoding (modeling.imageio, the app's decoder), each row's augmentation, and the batch.
An image that cannot be decoded becomes a placeholder with label -100 (the loss ignores it, batches keep their
shape, so distributed ranks stay in step) and is counted; one bad file among 400k never stops a run."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from PIL import Image

from modeling.imageio import ImageReadError, read_image, to_rgb

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of a placeholder for an unreadable image; the loss and the metrics skip it
PLACEHOLDER_SIDE = 8  # the blank image behind a placeholder; every transform here crops or resizes to its own size


@dataclass
class DataLimits:
    """Per-image decoding limits for training data (larger than the app's: training photos can be 50 MP)."""
    max_bytes: int = 64 * 2**20
    max_pixels: int = 64_000_000


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
                 source_names: Sequence[str], limits: DataLimits = DataLimits()):
        self.rows = rows
        self.transforms = list(transforms)
        self.row_transform = np.asarray(row_transform, dtype=np.int16)
        self.labels = np.asarray(rows["label"], dtype=np.int64)
        index = {name: i for i, name in enumerate(source_names)}
        self.source_ids = np.asarray([index[s] for s in rows["source"]], dtype=np.int64)
        self.limits = limits

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> dict:
        row, seed = key if isinstance(key, tuple) else (key, None)
        value = self.rows[int(row)]["image"]
        try:
            image = decode_image(value, self.limits.max_bytes, self.limits.max_pixels)
        except (ImageReadError, OSError) as e:
            where = value.get("path") if isinstance(value, dict) else value
            logger.warning("skipping unreadable image (row %d, %s): %s", row, where or "in-memory bytes", e)
            # A blank image through this row's own transform: the placeholder has the shape of the crop that
            # transform makes (a profile's crop_size may be below image_size), so the batch still stacks.
            image, label = Image.new("RGB", (PLACEHOLDER_SIDE, PLACEHOLDER_SIDE)), IGNORE_INDEX
        else:
            label = int(self.labels[row])
        with _seeded(seed):
            pixels = self.transforms[self.row_transform[row]](image)
        return {"pixel_values": pixels, "labels": label, "source_ids": int(self.source_ids[row])}


class StreamingImageSamples(torch.utils.data.IterableDataset):
    """Streamed rows with a `transform_id` column -> the same samples as ImageSamples. Bad files are dropped
    from the stream (there is no batch shape to keep before batching) and counted in the log."""

    def __init__(self, rows: datasets.IterableDataset, transforms: Sequence, source_names: Sequence[str],
                 limits: DataLimits = DataLimits(), split_by_rank: bool = False):
        self.rows = rows
        self.split_by_rank = split_by_rank  # rows are this process's share already: the loader must not cut again
        self.transforms = list(transforms)
        self.source_index = {name: i for i, name in enumerate(source_names)}  # sources of the mix; -1 if unknown
        self.limits = limits
        self.skipped = 0

    def set_epoch(self, epoch: int):
        self.rows.set_epoch(epoch)  # reshuffles shards and the shuffle buffer, if any

    def __iter__(self):
        for record in self.rows:
            try:
                image = decode_image(record["image"], self.limits.max_bytes, self.limits.max_pixels)
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
