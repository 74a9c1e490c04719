"""`data_recipe: {name: toy, ...}`: generate a toy dataset where a training config points at a missing folder.

The trainer creates `data_root` through `motionguide.registry.DATA_RECIPES` when the folder does not exist,
so a fresh clone can run `configs/toy.yaml` without a separate generation step. The options are
`motionguide.toy.make_dataset`'s keyword arguments (num_clips, seed, defect_rate, ...).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, unknown_key_message
from ..registry import DATA_RECIPES
from .dataset import make_dataset

__all__ = ["ToyDataRecipe"]


@DATA_RECIPES.register("toy")
class ToyDataRecipe:
    """`ToyDataRecipe(num_clips=200, seed=0, defect_rate=0.2)(root)` writes the toy dataset into `root`."""

    def __init__(self, **options: Any):
        accepted = [name for name in inspect.signature(make_dataset).parameters if name != "out_dir"]
        for key in options:
            if key not in accepted:
                raise ConfigError(unknown_key_message(key, accepted, "data_recipe (toy)"))
        missing = [name for name in ("num_clips", "seed") if name not in options]
        if missing:
            raise ConfigError(f"data_recipe (toy): set {', '.join(missing)}, e.g. {{name: toy, num_clips: 200, "
                              "seed: 0}}")
        self.options = options

    def __call__(self, root: str | os.PathLike) -> Path:
        """Generate the dataset into `root`; returns it."""
        return make_dataset(root, **self.options)

    def __repr__(self) -> str:
        return f"toy {self.options}"
