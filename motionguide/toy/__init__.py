"""The toy world: procedural captioned clips of moving shapes with ground truth and planted defects.

Generation lives in `motionguide.toy.world`, files on disk in `motionguide.toy.dataset`; turn pools (a motion
the shipped toy model never saw, with unreliable captions) in `motionguide.toy.turn_pool`.
"""

from motionguide.toy.dataset import (
    heldout_combinations, load_ground_truth, make_dataset, prompts_for_combinations, save_ground_truth,
)
from motionguide.toy.turn_pool import load_truth, make_turn_pool, make_turn_queries, pool_summary
from motionguide.toy.turns import heldout_turn_combinations, mentions_turn, turn_prompts
from motionguide.toy.world import *  # noqa: F401,F403
from motionguide.toy.world import __all__ as _world_all

__all__ = list(_world_all) + [
    "make_dataset", "load_ground_truth", "save_ground_truth", "heldout_combinations", "prompts_for_combinations",
    "make_turn_pool", "make_turn_queries", "load_truth", "pool_summary", "heldout_turn_combinations",
    "mentions_turn", "turn_prompts",
]
