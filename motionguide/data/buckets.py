"""Resolution-and-length buckets, and a batch sampler that keeps each batch inside one bucket.

Clips of different lengths and aspect ratios cannot share a batch tensor; cropping everything to one size
wastes frames or pixels. Each clip goes to the bucket that keeps most of it, and batches are drawn per bucket.

The sampler is deterministic in (seed, epoch) and records how far it got, so a resumed run draws exactly the
batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Hashable, Iterator, Sequence

import numpy as np
import torch

from motionguide.errors import ConfigError

__all__ = ["Bucket", "assign_bucket", "parse_buckets", "BucketBatchSampler"]


@dataclass(frozen=True, order=True)
class Bucket:
    """A clip size: frames, and height x width in pixels (what the VAE receives)."""

    num_frames: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if min(self.num_frames, self.height, self.width) < 1:
            raise ConfigError(f"a bucket needs positive frames, height and width; got {self.as_tuple()}")

    @property
    def aspect(self) -> float:
        """Width over height."""
        return self.width / self.height

    def as_tuple(self) -> tuple[int, int, int]:
        """The bucket as (num_frames, height, width)."""
        return (self.num_frames, self.height, self.width)


def parse_buckets(value: Any, name: str = "buckets") -> tuple[Bucket, ...] | None:
    """Buckets as a config states them: None / empty (no buckets), a list of [frames, height, width] or of
    "FxHxW" strings, or one comma-separated string ("17x480x832,49x480x720")."""
    if value is None or (isinstance(value, (str, list, tuple)) and not value):
        return None
    items = [part for part in value.split(",") if part.strip()] if isinstance(value, str) else list(value)
    buckets = []
    for item in items:
        if isinstance(item, Bucket):
            buckets.append(item)
            continue
        parts = item.lower().replace(" ", "").split("x") if isinstance(item, str) else item
        try:
            numbers = [int(p) for p in parts]
            if len(numbers) != 3 or any(isinstance(p, float) and not float(p).is_integer() for p in parts):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: {item!r} is not a bucket; write [frames, height, width] or "
                              "'FRAMESxHEIGHTxWIDTH', e.g. [17, 480, 832] or '17x480x832'") from None
        buckets.append(Bucket(*numbers))
    return tuple(buckets)


def frames_needed(num_frames: int, frame_stride: int = 1) -> int:
    """Source frames spanned by `num_frames` samples taken every `frame_stride` frames."""
    return (num_frames - 1) * frame_stride + 1


def assign_bucket(video_frames: int, video_h: int, video_w: int, buckets: Sequence[Bucket],
                  frame_stride: int = 1) -> Bucket | None:
    """The bucket for a clip: among buckets whose length fits the clip (with `frame_stride`), the one with the
    closest aspect ratio (least cropped away), then the most frames, then the most pixels. None if no bucket
    is short enough. Buckets larger than the video in pixels are allowed (the frames are upscaled)."""
    if video_h < 1 or video_w < 1:
        raise ValueError(f"video size must be positive, got {video_h}x{video_w}")
    fitting = [b for b in buckets if frames_needed(b.num_frames, frame_stride) <= video_frames]
    if not fitting:
        return None
    log_aspect = math.log(video_w / video_h)
    return min(fitting, key=lambda b: (round(abs(math.log(b.aspect) - log_aspect), 9),
                                       -b.num_frames, -b.height * b.width))


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of dataset indices that share a bucket; deterministic in (seed, epoch); resumable.

    Each epoch draws one seeded permutation of all indices and walks it, filling a batch per bucket; a batch
    is emitted when full, and the partial ones at the end (unless `drop_last`). With a single bucket this is
    exactly a seeded shuffled batch sampler: the permutation cut into consecutive batches.

    `bucket_of_index[i]` is any hashable label (a `Bucket`, a latent shape, ...).

    Resume: save `state_dict()` with the checkpoint, `load_state_dict()` it, then continue the epoch loop
    from `sampler.epoch`. `set_epoch(e)` with the current epoch keeps the position, so the usual
    `for epoch in range(sampler.epoch, E): sampler.set_epoch(epoch)` loop resumes mid-epoch. A DataLoader with
    workers pulls batches ahead of the training step; pass the number the loop really consumed in this epoch
    as `state_dict(batches_consumed=k)`.
    """

    def __init__(self, bucket_of_index: Sequence[Hashable], batch_size: int, seed: int = 0, drop_last: bool = False):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed}")
        self.labels = list(bucket_of_index)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.position = 0  # batches of `epoch` already handed out
        counts: dict[Hashable, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        self.bucket_sizes = counts
        self._num_batches = sum(c // self.batch_size if self.drop_last else -(-c // self.batch_size)
                                for c in counts.values())

    def __len__(self) -> int:
        return self._num_batches

    def batches_for_epoch(self, epoch: int) -> list[list[int]]:
        """All batches of one epoch, in order (a pure function of seed, epoch and the bucket labels)."""
        order = np.random.default_rng([self.seed, int(epoch)]).permutation(len(self.labels))
        pending: dict[Hashable, list[int]] = {}
        batches = []
        for index in order.tolist():
            group = pending.setdefault(self.labels[index], [])
            group.append(index)
            if len(group) == self.batch_size:
                batches.append(group)
                del pending[self.labels[index]]
        if not self.drop_last:
            batches.extend(pending.values())  # in the order they were started
        return batches

    def set_epoch(self, epoch: int) -> None:
        """Switch to `epoch` (position 0); the current epoch keeps its position (resume mid-epoch)."""
        if int(epoch) != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def __iter__(self) -> Iterator[list[int]]:
        if self._num_batches and self.position >= self._num_batches:  # iterated again without set_epoch
            self.epoch, self.position = self.epoch + 1, 0
        batches = self.batches_for_epoch(self.epoch)
        for k in range(self.position, len(batches)):
            self.position = k + 1
            yield batches[k]

    # ------------------------------------------------------------------ resume
    def _fingerprint(self) -> str:
        text = repr((self.labels, self.batch_size, self.drop_last, self.seed))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _normalised(self, epoch: int, position: int) -> tuple[int, int]:
        """A finished epoch is stored as the start of the next one, so resuming never replays it."""
        if self._num_batches and position >= self._num_batches:
            return epoch + 1, 0
        return epoch, position

    def state_dict(self, batches_consumed: int | None = None) -> dict[str, Any]:
        """Epoch, position and a fingerprint of the sampler, for resuming (`batches_consumed` overrides)."""
        position = self.position if batches_consumed is None else int(batches_consumed)
        if not 0 <= position <= self._num_batches:
            raise ValueError(f"batches_consumed must be in 0..{self._num_batches}, got {position}")
        epoch, position = self._normalised(self.epoch, position)
        return {"epoch": epoch, "position": position, "seed": self.seed, "batch_size": self.batch_size,
                "drop_last": self.drop_last, "num_items": len(self.labels), "fingerprint": self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at the saved epoch and position; ConfigError if it was saved for another sampler."""
        mine = self.state_dict()
        differing = [k for k in ("seed", "batch_size", "drop_last", "num_items", "fingerprint")
                     if k in state and state[k] != mine[k]]
        if differing:
            details = ", ".join(f"{k}: saved {state[k]!r}, now {mine[k]!r}" for k in differing)
            raise ConfigError(
                f"BucketBatchSampler state was saved for another dataset or sampler ({details}); resume with "
                "the same dataset, buckets, batch_size, seed and drop_last, or start a fresh run"
            )
        position = int(state["position"])
        if not 0 <= position <= self._num_batches:
            raise ConfigError(f"BucketBatchSampler state has position {position}, outside 0..{self._num_batches}")
        self.epoch, self.position = self._normalised(int(state["epoch"]), position)
