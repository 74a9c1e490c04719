"""The toy world in one import: vocabulary, clip specs, sampling, captions and rendering.

A procedural world of coloured shapes that move on simple backgrounds, with captions such as
"a red circle moves left" and full ground truth (masks, point tracks, motion flags). It can plant
defects (static, jitter, teleport, reversed, camera_pan) that leave the caption unchanged, and turns
("a red circle moves right then left": the direction changes on a frame drawn per clip) on request.
The pieces live in small modules; this one gathers their public names.
"""

from motionguide.toy.captions import CaptionObject, caption_for, object_clause, parse_caption
from motionguide.toy.render import ToyClip, clip_labels, render_clip, shape_mask
from motionguide.toy.sampling import (
    TURN_SPEEDS, Combination, TurnCombination, all_combinations, all_turn_combinations, sample_clip_spec, turn_pairs,
)
from motionguide.toy.spec import ClipSpec, ObjectSpec
from motionguide.toy.trajectory import ObjectPath, object_paths, shape_extent
from motionguide.toy.vocab import (
    BACKGROUNDS, COLORS, DEFECTS, DIRECTIONS, MOTIONS, OPPOSITE_MOTION, SHAPES, SPEED_ADVERBS, SPEEDS,
    TURN_MOTIONS, direction_from_displacement, split_turn, turn_name,
)

__all__ = [
    "BACKGROUNDS", "COLORS", "DEFECTS", "DIRECTIONS", "MOTIONS", "OPPOSITE_MOTION", "SHAPES", "SPEED_ADVERBS",
    "SPEEDS", "TURN_MOTIONS", "direction_from_displacement", "turn_name", "split_turn",
    "ObjectSpec", "ClipSpec", "Combination", "all_combinations", "sample_clip_spec",
    "TurnCombination", "TURN_SPEEDS", "all_turn_combinations", "turn_pairs",
    "CaptionObject", "caption_for", "object_clause", "parse_caption",
    "ObjectPath", "object_paths", "shape_extent",
    "ToyClip", "clip_labels", "render_clip", "shape_mask",
]
