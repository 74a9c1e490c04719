"""`data_recipe: {name: toy, ...}`: generate a toy dataset where a config points at a missing folder.

The trainer creates a missing `data_root` (and Motive a missing query folder, `queries_recipe`) through
`motionguide.registry.DATA_RECIPES`: a recipe is a callable `recipe(folder, **options)`. The toy recipe's
options are `motionguide.toy.make_dataset`'s keyword arguments (num_clips, seed, defect_rate, ...), so a
fresh clone runs `configs/toy.yaml` without a separate generation step.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, unknown_key_message
from ..registry import DATA_RECIPES
from .dataset import make_dataset

__all__ = ["toy_recipe"]


@DATA_RECIPES.register("toy")
def toy_recipe(folder: str | os.PathLike, **options: Any) -> Path:
    """Write the toy dataset `make_dataset(folder, **options)` (num_clips and seed required); returns it."""
    accepted = [name for name in inspect.signature(make_dataset).parameters if name != "out_dir"]
    for key in options:
        if key not in accepted:
            raise ConfigError(unknown_key_message(key, accepted, "data_recipe (toy)"))
    missing = [name for name in ("num_clips", "seed") if name not in options]
    if missing:
        raise ConfigError(f"data_recipe (toy): set {', '.join(missing)}, e.g. {{name: toy, num_clips: 200, seed: 0}}")
    return make_dataset(folder, **options)
