"""Which source frames a clip's samples come from: an optional resampling in time to `target_fps`, then
`num_frames` samples from the start, every `frame_stride` frames of the (resampled) timeline.

Resampling takes, for output frame j at time j / target_fps, the last source frame shown at that time:
source index floor(j * source_fps / target_fps), in exact fractions (29.97 fps is 30000/1001), so a 30 fps
clip at target 15 takes frames 0, 2, 4, ... and at target 60 shows each frame twice. Without `target_fps`
the timeline is the source's own frames (what the dataset always did).
"""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["timeline_length", "source_indices"]


def _step(source_fps: Fraction | float | None, target_fps: float | None) -> Fraction | None:
    """Source frames per output frame, or None without resampling."""
    if target_fps is None:
        return None
    if not source_fps or source_fps <= 0:
        raise ValueError("the video states no frame rate, so it cannot be resampled to target_fps")
    return Fraction(source_fps).limit_denominator(1001 * 1000) / Fraction(target_fps).limit_denominator(1001 * 1000)


def timeline_length(num_source_frames: int, source_fps: Fraction | float | None = None,
                    target_fps: float | None = None) -> int:
    """Frames of the clip after resampling to `target_fps` (the source count without it)."""
    step = _step(source_fps, target_fps)
    if step is None:
        return int(num_source_frames)
    return math.ceil(Fraction(int(num_source_frames)) / step)  # every j with j * step < count


def source_indices(num_frames: int, frame_stride: int = 1, source_fps: Fraction | float | None = None,
                   target_fps: float | None = None) -> list[int]:
    """Source frame index of each of `num_frames` samples taken every `frame_stride` frames of the timeline."""
    positions = range(0, (num_frames - 1) * frame_stride + 1, frame_stride)
    step = _step(source_fps, target_fps)
    if step is None:
        return list(positions)
    return [math.floor(j * step) for j in positions]
