"""Motive curation for training loops that are not ours: a dataset wrapper over a finished selection."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError


class CuratedDataset(torch.utils.data.Dataset):
    """`dataset` restricted to the clips a Motive selection kept (filter / prune-negative), or all of them with
    per-clip weights (reweight: draw batches with :meth:`sampler`).

    `ids` are the dataset's clip ids in index order (default: `dataset.ids`); they must be the ids the pass
    saw, i.e. the metadata `id` or the video file stem.
    """

    def __init__(self, dataset: Any, selection: str | os.PathLike | Mapping[str, Any],
                 ids: Sequence[str] | None = None):
        from .run import load_selection

        self.dataset = dataset
        self.selection = dict(selection) if isinstance(selection, Mapping) else load_selection(selection)
        ids = list(ids if ids is not None else getattr(dataset, "ids", []))
        if len(ids) != len(dataset):
            raise ConfigError(f"CuratedDataset needs one clip id per dataset item: got {len(ids)} ids for "
                              f"{len(dataset)} items (pass ids=[...] in index order)")
        index_of = {clip_id: i for i, clip_id in enumerate(ids)}
        self.ids = [clip_id for clip_id in self.selection["selected_ids"] if clip_id in index_of]
        if not self.ids:
            raise ConfigError("the Motive selection shares no clip id with this dataset; was it computed on the "
                              "same clips (ids are the metadata `id` or the video file stem)?")
        self.indices = [index_of[clip_id] for clip_id in self.ids]
        self.missing = [c for c in self.selection["selected_ids"] if c not in index_of]
        weights = self.selection.get("weights")
        self.weights = None
        if weights is not None:
            by_id = dict(zip(self.selection["train_ids"], weights))
            self.weights = [float(by_id[clip_id]) for clip_id in self.ids]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]

    def sampler(self, num_samples: int | None = None,
                generator: torch.Generator | None = None) -> torch.utils.data.Sampler:
        """A `WeightedRandomSampler` over the kept clips for reweight selections; a plain random sampler
        otherwise (every kept clip equally likely)."""
        if self.weights is None:
            return torch.utils.data.RandomSampler(self, num_samples=num_samples, generator=generator)
        return torch.utils.data.WeightedRandomSampler(self.weights, num_samples or len(self), replacement=True,
                                                      generator=generator)
