"""Motive curation for training loops that are not ours: a dataset wrapper over a finished selection."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError
from .selection import Selection


class CuratedDataset(torch.utils.data.Dataset):
    """`dataset` restricted to the clips a Motive :class:`Selection` kept, with per-clip weights when it
    reweights (draw batches with :meth:`sampler`).

    `ids` are the dataset's clip ids in index order (default: `dataset.ids`); they must be the ids the pass
    saw, i.e. the metadata `id` or the video file stem.
    """

    def __init__(self, dataset: Any, selection: "str | os.PathLike | Mapping[str, Any] | Selection",
                 ids: Sequence[str] | None = None):
        self.dataset = dataset
        if isinstance(selection, Selection):
            self.selection = selection
        elif isinstance(selection, Mapping):
            self.selection = Selection.from_dict(selection)
        else:
            self.selection = Selection.load(selection)
        ids = list(ids if ids is not None else getattr(dataset, "ids", []))
        if len(ids) != len(dataset):
            raise ConfigError(f"CuratedDataset needs one clip id per dataset item: got {len(ids)} ids for "
                              f"{len(dataset)} items (pass ids=[...] in index order)")
        self.indices, self.weights = self.selection.indices_for(ids)
        self.ids = [ids[i] for i in self.indices]
        self.missing = self.selection.missing_from(ids)

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
