"""Turn success on the toy world: did the prompted object move the first way, then the second?

"a red circle moves right then left" is followed when the red object's track splits into two legs, the first
reading "right" and the second "left". The track is the object's centroid per frame, found by colour as in
`adherence`. The split is not assumed to be where a training clip would turn: every frame that leaves each leg
`min_leg_frames` found frames is tried, each leg is fitted with a straight line in time (least squares), and
the split with the smallest total squared error wins. Each leg's displacement (fitted slope x duration) is named
with the 8-sector rule of `direction_from_displacement`; a leg that moves less than `leg_threshold_px` reads
"still". A straight motion therefore fails a turn prompt: both of its legs read the same direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from motionguide.metrics.adherence import detect_object, parse_toy_caption
from motionguide.metrics.flow import check_frames
from motionguide.toy.captions import CaptionObject
from motionguide.toy.vocab import direction_from_displacement, split_turn

__all__ = ["TurnReading", "TurnAdherence", "read_turn", "object_track", "toy_turn_adherence", "turn_success_rate",
           "DEFAULT_LEG_THRESHOLD_PX", "DEFAULT_MIN_LEG_FRAMES", "TURN_JERK_WINDOW", "jerk_at_turn"]

#: A leg that moves less than this reads "still" (half a toy token; a 5-frame leg at normal speed moves 9 px).
DEFAULT_LEG_THRESHOLD_PX = 4.0
#: Found frames each leg needs (the apex counts for both), so a leg is at least two steps long.
DEFAULT_MIN_LEG_FRAMES = 3


@dataclass
class TurnReading:
    """Two straight legs read from a track. `turn_frame` is the first frame of the second leg (the frame after
    the apex), matching `ObjectSpec.turn_frame`; everything is None when the track is too short to split."""

    turn_frame: int | None
    first_displacement: tuple[float, float] | None
    second_displacement: tuple[float, float] | None
    first_direction: str | None
    second_direction: str | None
    residual_px: float | None  # root-mean-square distance of the track from the two fitted legs


@dataclass
class TurnAdherence:
    """How one turn clause of a caption shows up in a clip."""

    prompt: CaptionObject
    first_motion: str
    second_motion: str
    presence: float           # fraction of frames where the colour is found
    trajectory: np.ndarray    # float32 [F, 2] centroid (x, y), NaN where absent
    reading: TurnReading
    success: bool             # both legs read the prompted directions


def _line_fit(times: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, float]:
    """(slope [2] in px/frame, summed squared residual) of a least-squares line through points [n, 2]."""
    centred = times - times.mean()
    slope = (centred[:, None] * (points - points.mean(axis=0))).sum(axis=0) / max(float((centred ** 2).sum()), 1e-12)
    fitted = points.mean(axis=0) + centred[:, None] * slope[None, :]
    return slope, float(((points - fitted) ** 2).sum())


def read_turn(trajectory: np.ndarray, leg_threshold_px: float = DEFAULT_LEG_THRESHOLD_PX,
              min_leg_frames: int = DEFAULT_MIN_LEG_FRAMES) -> TurnReading:
    """Split a track float [F, 2] (NaN rows = not found) into the two straight legs that fit it best."""
    if min_leg_frames < 2:
        raise ValueError(f"min_leg_frames must be >= 2 (a leg needs a start and an end), got {min_leg_frames}")
    trajectory = np.asarray(trajectory, np.float64)
    found = np.flatnonzero(np.isfinite(trajectory).all(axis=1))
    if len(found) < 2 * min_leg_frames - 1:
        return TurnReading(None, None, None, None, None, None)
    times, points = found.astype(np.float64), trajectory[found]
    best = None
    for apex in range(min_leg_frames - 1, len(found) - min_leg_frames + 1):
        slope_a, error_a = _line_fit(times[: apex + 1], points[: apex + 1])
        slope_b, error_b = _line_fit(times[apex:], points[apex:])
        if best is None or error_a + error_b < best[0] - 1e-9:
            best = (error_a + error_b, apex, slope_a, slope_b)
    error, apex, slope_a, slope_b = best
    first = slope_a * (times[apex] - times[0])
    second = slope_b * (times[-1] - times[apex])
    return TurnReading(
        turn_frame=int(found[apex]) + 1,
        first_displacement=(float(first[0]), float(first[1])),
        second_displacement=(float(second[0]), float(second[1])),
        first_direction=direction_from_displacement(float(first[0]), float(first[1]), leg_threshold_px),
        second_direction=direction_from_displacement(float(second[0]), float(second[1]), leg_threshold_px),
        residual_px=float(np.sqrt(error / (len(found) + 1))),
    )


def object_track(frames: np.ndarray, color: str, tolerance: float = 80.0, min_area: int | None = None) -> np.ndarray:
    """float32 [F, 2]: the centroid of the largest blob of `color` on each frame, NaN where it is not found."""
    track = np.full((len(frames), 2), np.nan, np.float32)
    for index, frame in enumerate(frames):
        detection = detect_object(frame, color, tolerance=tolerance, min_area=min_area)
        if detection is not None:
            track[index] = detection.centroid
    return track


def toy_turn_adherence(frames: np.ndarray, caption: str, leg_threshold_px: float = DEFAULT_LEG_THRESHOLD_PX,
                       min_leg_frames: int = DEFAULT_MIN_LEG_FRAMES, tolerance: float = 80.0,
                       min_area: int | None = None) -> list[TurnAdherence]:
    """Score every turn clause of a toy caption on uint8 RGB frames [F, H, W, 3] (straight clauses are left to
    `toy_prompt_adherence`); raises ValueError when the caption has no turn."""
    frames = check_frames(frames, min_frames=2)
    if frames.ndim != 4:
        raise ValueError("frames must be RGB [F, H, W, 3]: objects are found by colour")
    results = []
    for prompt in parse_toy_caption(caption):
        turn = split_turn(prompt.motion)
        if turn is None:
            continue
        track = object_track(frames, prompt.color, tolerance=tolerance, min_area=min_area)
        reading = read_turn(track, leg_threshold_px, min_leg_frames)
        results.append(TurnAdherence(
            prompt=prompt, first_motion=turn[0], second_motion=turn[1],
            presence=float(np.isfinite(track[:, 0]).mean()), trajectory=track, reading=reading,
            success=(reading.first_direction, reading.second_direction) == turn,
        ))
    if not results:
        raise ValueError(f"caption {caption!r} has no turn to score; expected e.g. 'a red circle moves right then left'")
    return results


def turn_success_rate(results: Sequence[TurnAdherence]) -> float:
    """Share of scored turns that succeeded (NaN for none)."""
    return float(np.mean([r.success for r in results])) if results else float("nan")


#: frames either side of the apex whose centroid second differences count as "at the turn"
TURN_JERK_WINDOW = 2


def jerk_at_turn(trajectory: np.ndarray, turn_frame: int | None, window: int = TURN_JERK_WINDOW) -> float:
    """Mean |second difference| of the object's centroid (px / frame^2) on the frames within `window` of the turn's
    apex (the last frame of the first leg, `turn_frame` - 1, as the turn metric split the track); NaN when no
    split was read or the object is missing there. A rendered right-angle turn at normal speed has one kink of
    about 2.5 px / frame^2 at the apex and 0 elsewhere, so this reads how sharp and how clean the turn is."""
    if turn_frame is None:
        return float("nan")
    track = np.asarray(trajectory, np.float64)
    second = track[2:] - 2 * track[1:-1] + track[:-2]  # row i is centred on frame i + 1
    apex = turn_frame - 1
    rows = [i for i in range(len(second)) if abs(i + 1 - apex) <= window]
    values = np.linalg.norm(second[rows], axis=1) if rows else np.array([])
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")
