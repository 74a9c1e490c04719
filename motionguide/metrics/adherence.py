"""Prompt adherence on the toy world without a learned model: find each prompted object by its colour,
follow its centroid, and compare the measured direction (and a shape guess) with the caption.

Direction rule: the net displacement is the centroid on the last frame the object is found minus the
centroid on the first; below `still_threshold_px` (default: one token if `token_px` is given, else 4 px)
it reads as "still", otherwise as the nearest of the eight compass motions (45° sectors, y down).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from motionguide.metrics.flow import check_frames
from motionguide.toy.captions import CaptionObject, parse_caption
from motionguide.toy.vocab import COLORS, direction_from_displacement

__all__ = ["ObjectDetection", "ObjectAdherence", "parse_toy_caption", "detect_object", "guess_shape",
           "toy_prompt_adherence", "summarize_adherence", "DEFAULT_STILL_THRESHOLD_PX"]

DEFAULT_STILL_THRESHOLD_PX = 4.0
_PALETTE = np.asarray(list(COLORS.values()), np.float32)


def parse_toy_caption(caption: str) -> list[CaptionObject]:
    """(color, shape, motion, speed) per clause of a toy caption; speed is None for "stays still"."""
    return parse_caption(caption)


@dataclass
class ObjectDetection:
    """The largest blob of one colour in a frame: centroid, area, mask and bounding box."""

    centroid: tuple[float, float]   # (x, y), pixel centres at integers
    area: int                       # pixels
    mask: np.ndarray                # bool [H, W], the largest matching connected component
    bbox: tuple[int, int, int, int]  # x, y, width, height


def detect_object(frame: np.ndarray, color: str | Sequence[int], tolerance: float = 80.0,
                  min_area: int | None = None) -> ObjectDetection | None:
    """Find the largest blob of `color` (a COLORS name or RGB): pixels within `tolerance` (RGB distance)
    of it and nearer to it than to any other toy colour, so desaturated backgrounds and blurry decoder
    edges do not leak in. None if the blob is smaller than `min_area` (default max(4, H·W/1000))."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame must be [H, W, 3] RGB, got shape {frame.shape}")
    if isinstance(color, str):
        if color not in COLORS:
            raise ValueError(f"unknown color {color!r}; valid colors: {', '.join(COLORS)}")
        target = np.asarray(COLORS[color], np.float32)
    else:
        target = np.asarray(color, np.float32).reshape(3)
    pixels = frame.astype(np.float32)
    distance = np.linalg.norm(pixels - target, axis=-1)
    nearest_other = np.min([np.linalg.norm(pixels - c, axis=-1) for c in _PALETTE if not np.allclose(c, target)]
                           or [np.full(distance.shape, np.inf, np.float32)], axis=0)
    candidate = (distance <= tolerance) & (distance < nearest_other)
    height, width = candidate.shape
    min_area = max(4, round(height * width / 1000)) if min_area is None else min_area
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(candidate.astype(np.uint8), connectivity=8)
    if count <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = int(stats[best, cv2.CC_STAT_AREA])
    if area < min_area:
        return None
    x, y, w, h = (int(v) for v in stats[best, :4])
    return ObjectDetection((float(centroids[best, 0]), float(centroids[best, 1])), area, labels == best, (x, y, w, h))


def guess_shape(detection: ObjectDetection) -> str:
    """circle / square / triangle from the blob alone: a triangle (apex up) has its mass low in its box;
    otherwise the fill of the bounding box separates squares (≈1) from circles (≈π/4)."""
    x, y, w, h = detection.bbox
    drop = (detection.centroid[1] - (y + (h - 1) / 2.0)) / max(h, 1)
    if drop > 0.07:
        return "triangle"
    return "square" if detection.area / float(w * h) > 0.86 else "circle"


@dataclass
class ObjectAdherence:
    """How one prompted object shows up in a clip."""

    prompt: CaptionObject
    presence: float                          # fraction of frames where the colour is found
    trajectory: np.ndarray                   # float32 [F, 2] centroid (x, y), NaN where absent
    net_displacement: tuple[float, float]    # last-found minus first-found centroid, px
    measured_direction: str | None           # one of MOTIONS; None if found on fewer than 2 frames
    direction_correct: bool
    measured_speed_px: float                 # |net displacement| / frames between first and last found
    shape_guess: str | None
    shape_correct: bool | None
    still_threshold_px: float

    @property
    def distance_px(self) -> float:
        """Length of the net displacement in pixels."""
        return float(math.hypot(*self.net_displacement))


def _touches_border(detection: ObjectDetection, height: int, width: int) -> bool:
    x, y, w, h = detection.bbox
    return x == 0 or y == 0 or x + w == width or y + h == height


def _adherence_for(frames: np.ndarray, prompt: CaptionObject, threshold: float, tolerance: float,
                   min_area: int | None) -> ObjectAdherence:
    num_frames, height, width = frames.shape[:3]
    trajectory = np.full((num_frames, 2), np.nan, np.float32)
    shapes = Counter()
    for f, frame in enumerate(frames):
        detection = detect_object(frame, prompt.color, tolerance=tolerance, min_area=min_area)
        if detection is None:
            continue
        trajectory[f] = detection.centroid
        if not _touches_border(detection, height, width):
            shapes[guess_shape(detection)] += 1
    found = np.flatnonzero(~np.isnan(trajectory[:, 0]))
    displacement, direction, speed = (0.0, 0.0), None, float("nan")
    if len(found) >= 2:
        first, last = found[0], found[-1]
        dx, dy = (float(v) for v in trajectory[last] - trajectory[first])
        displacement = (dx, dy)
        direction = direction_from_displacement(dx, dy, threshold)
        speed = math.hypot(dx, dy) / float(last - first)
    shape_guess = shapes.most_common(1)[0][0] if shapes else None
    return ObjectAdherence(
        prompt=prompt, presence=len(found) / num_frames, trajectory=trajectory, net_displacement=displacement,
        measured_direction=direction, direction_correct=direction == prompt.motion, measured_speed_px=speed,
        shape_guess=shape_guess, shape_correct=None if shape_guess is None else shape_guess == prompt.shape,
        still_threshold_px=threshold,
    )


def toy_prompt_adherence(frames: np.ndarray, caption: str, token_px: float | None = None,
                         still_threshold_px: float | None = None, tolerance: float = 80.0,
                         min_area: int | None = None) -> list[ObjectAdherence]:
    """Score each object of a toy caption on uint8 frames [F, H, W, 3]. Objects are told apart by colour,
    so a caption naming one colour twice is scored on the same blob for both."""
    frames = check_frames(frames, min_frames=1)
    if frames.ndim != 4:
        raise ValueError("frames must be RGB [F, H, W, 3]: objects are found by colour")
    if still_threshold_px is None:
        still_threshold_px = float(token_px) if token_px else DEFAULT_STILL_THRESHOLD_PX
    return [_adherence_for(frames, prompt, still_threshold_px, tolerance, min_area)
            for prompt in parse_toy_caption(caption)]


def summarize_adherence(results: Sequence[ObjectAdherence]) -> dict[str, float]:
    """Means over objects: presence, direction accuracy and shape accuracy (over objects with a guess)."""
    if not results:
        return {"presence": float("nan"), "direction_accuracy": float("nan"), "shape_accuracy": float("nan")}
    shaped = [r.shape_correct for r in results if r.shape_correct is not None]
    return {
        "presence": float(np.mean([r.presence for r in results])),
        "direction_accuracy": float(np.mean([r.direction_correct for r in results])),
        "shape_accuracy": float(np.mean(shaped)) if shaped else float("nan"),
    }
