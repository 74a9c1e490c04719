"""Which clips each micro-step trains on: a pure function of (seed, micro-step), so resuming is exact.

Uniform sampling walks seeded epoch permutations (via `BucketBatchSampler.batches_for_epoch`, so batches
never mix buckets); weighted sampling (curation reweighting) draws each global batch from a seeded
generator keyed by the micro-step. Every rank computes the same global batch and takes its own slice.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

from .buckets import BucketBatchSampler


class StepBatchPlan:
    """Global batch of clip indices for every micro-step, a pure function of (seed, micro-step)."""

    def __init__(self, labels: Sequence[Hashable], global_batch: int, seed: int,
                 weights: Sequence[float] | None = None):
        if not labels:
            raise ValueError("no clips to train on")
        self.global_batch = int(global_batch)
        self.seed = int(seed)
        self.labels = list(labels)
        self.weights = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(labels),) or (w < 0).any() or w.sum() <= 0:
                raise ValueError("curation weights must be one non-negative number per clip, not all zero")
            self.weights = w / w.sum()
        drop_last = len(labels) >= self.global_batch
        self._sampler = BucketBatchSampler(self.labels, self.global_batch, seed=self.seed, drop_last=drop_last)
        self._epoch_cache: tuple[int, list[list[int]]] | None = None

    @property
    def batches_per_epoch(self) -> int:
        """Global batches in one uniform-sampling epoch (at least 1)."""
        return max(1, len(self._sampler))

    def global_indices(self, micro_step: int) -> list[int]:
        """Clip indices of the global batch at `micro_step` (weighted draw, or the epoch walk)."""
        if self.weights is not None:
            rng = np.random.default_rng([self.seed, 7919, int(micro_step)])
            return rng.choice(len(self.labels), size=self.global_batch, replace=True, p=self.weights).tolist()
        epoch, position = divmod(int(micro_step), self.batches_per_epoch)
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self._sampler.batches_for_epoch(epoch))
        batch = self._epoch_cache[1][position]
        if len(batch) < self.global_batch:  # fewer clips than a global batch: repeat them in order
            batch = [batch[i % len(batch)] for i in range(self.global_batch)]
        return batch

    def rank_indices(self, micro_step: int, rank: int, world_size: int) -> list[int]:
        """This rank's share of the global batch (global batch = per-rank batch x world size)."""
        batch = self.global_indices(micro_step)
        per_rank = self.global_batch // world_size
        return batch[rank * per_rank : (rank + 1) * per_rank]
