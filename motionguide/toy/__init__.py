"""The toy world: procedural captioned clips of moving shapes with ground truth and planted defects.

Generation lives in `motionguide.toy.world`, files on disk in `motionguide.toy.dataset`.
"""

from motionguide.toy.dataset import (
    heldout_combinations, load_ground_truth, make_dataset, prompts_for_combinations, save_ground_truth,
)
from motionguide.toy.world import *  # noqa: F401,F403
from motionguide.toy.world import __all__ as _world_all

__all__ = list(_world_all) + [
    "make_dataset", "load_ground_truth", "save_ground_truth", "heldout_combinations", "prompts_for_combinations",
]
