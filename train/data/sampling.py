"""The order of each training epoch: every new row plus, in the continual phase, a replay draw from the old sources,
a function of (seed, epoch) alone."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


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
        _, inverse, counts = np.unique(sources[in_class], return_inverse=True, return_counts=True)
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
