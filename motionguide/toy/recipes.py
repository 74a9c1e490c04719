"""`data_recipe: {name: toy, ...}`: generate a toy dataset where a config points at a missing folder.

The trainer creates a missing `data_root` (and Motive a missing query folder, `queries_recipe`) through
`motionguide.registry.DATA_RECIPES`: a recipe is a callable `recipe(folder, **options)`. The toy recipe's
options are `motionguide.toy.make_dataset`'s keyword arguments (num_clips, seed, defect_rate, ...), so a
fresh clone runs `configs/toy.yaml` without a separate generation step. `toy_turn_pool` and `toy_turn_queries`
take `make_turn_pool` / `make_turn_queries`' keyword arguments (a pool for teaching turns, its query set).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, unknown_key_message
from ..registry import DATA_RECIPES
from .dataset import make_dataset
from .turn_pool import make_turn_pool, make_turn_queries

__all__ = ["toy_recipe", "toy_turn_pool_recipe", "toy_turn_queries_recipe"]


def _check_options(name: str, builder: Callable[..., Path], options: dict[str, Any]) -> None:
    """The options against `builder`'s signature, num_clips and seed set (a count >= 1, an integer seed)."""
    accepted = [key for key in inspect.signature(builder).parameters if key != "out_dir"]
    for key in options:
        if key not in accepted:
            raise ConfigError(unknown_key_message(key, accepted, f"data_recipe ({name})"))
    missing = [key for key in ("num_clips", "seed") if key not in options]
    if missing:
        raise ConfigError(f"data_recipe ({name}): set {', '.join(missing)}, e.g. "
                          f"{{name: {name}, num_clips: 200, seed: 0}}")
    for key, low in (("num_clips", 1), ("seed", 0)):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"data_recipe ({name}): {key}={value!r} must be an integer >= {low}")


def _run_recipe(name: str, builder: Callable[..., Path], folder: str | os.PathLike, options: dict[str, Any]) -> Path:
    """`builder(folder, **options)` after checking the options against its signature (num_clips and seed set)."""
    _check_options(name, builder, options)
    return builder(folder, **options)


@DATA_RECIPES.register("toy")
def toy_recipe(folder: str | os.PathLike, **options: Any) -> Path:
    """Write the toy dataset `make_dataset(folder, **options)` (num_clips and seed required); returns it."""
    return _run_recipe("toy", make_dataset, folder, options)


@DATA_RECIPES.register("toy_turn_pool")
def toy_turn_pool_recipe(folder: str | os.PathLike, **options: Any) -> Path:
    """Write a turn pool `make_turn_pool(folder, **options)` (num_clips and seed required); returns it."""
    return _run_recipe("toy_turn_pool", make_turn_pool, folder, options)


@DATA_RECIPES.register("toy_turn_queries")
def toy_turn_queries_recipe(folder: str | os.PathLike, **options: Any) -> Path:
    """Write a clean turn query set `make_turn_queries(folder, **options)` (num_clips and seed required)."""
    return _run_recipe("toy_turn_queries", make_turn_queries, folder, options)


# what `registry.check_recipe_options` calls before any model loads (the recipes run later, when their folder
# is first needed)
toy_recipe.check = lambda options: _check_options("toy", make_dataset, options)  # type: ignore[attr-defined]
toy_turn_pool_recipe.check = lambda options: _check_options(  # type: ignore[attr-defined]
    "toy_turn_pool", make_turn_pool, options)
toy_turn_queries_recipe.check = lambda options: _check_options(  # type: ignore[attr-defined]
    "toy_turn_queries", make_turn_queries, options)
