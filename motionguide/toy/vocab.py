"""The toy world's vocabulary: every name a caption or a spec may use, in one place."""

from __future__ import annotations

import math
from typing import Iterable

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: RGB colours, saturated so they stand apart from the (desaturated) backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
}

MOTIONS: tuple[str, ...] = (
    "left", "right", "up", "down", "up-left", "up-right", "down-left", "down-right", "still",
)

#: Speed names → pixels per frame along the direction of motion.
SPEEDS: dict[str, float] = {"slowly": 1.0, "normal": 1.8, "quickly": 2.8}

#: Speed names → caption adverb ("normal" has none).
SPEED_ADVERBS: dict[str, str] = {"slowly": "slowly", "normal": "", "quickly": "quickly"}

#: Directions a sampled turn uses ("moves right then left", "moves up then right"): the four cardinal ones, so each
#: leg of a turn reads unambiguously from a short track.
TURN_MOTIONS: tuple[str, ...] = ("left", "right", "up", "down")

DEFECTS: tuple[str, ...] = ("static", "jitter", "teleport", "reversed", "camera_pan")

BACKGROUNDS: tuple[str, ...] = ("plain", "textured")

_DIAGONAL = 1.0 / math.sqrt(2.0)

#: Motion names → unit direction in image coordinates (x right, y down, so "up" is -y).
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-left": (-_DIAGONAL, -_DIAGONAL),
    "up-right": (_DIAGONAL, -_DIAGONAL),
    "down-left": (-_DIAGONAL, _DIAGONAL),
    "down-right": (_DIAGONAL, _DIAGONAL),
    "still": (0.0, 0.0),
}

OPPOSITE_MOTION: dict[str, str] = {
    "left": "right", "right": "left", "up": "down", "down": "up",
    "up-left": "down-right", "down-right": "up-left", "up-right": "down-left", "down-left": "up-right",
    "still": "still",
}


def turn_name(first: str, second: str) -> str:
    """The motion phrase of a turn, e.g. "right then left" (what captions, labels and truth tables call it)."""
    return f"{first} then {second}"


def split_turn(motion: str) -> tuple[str, str] | None:
    """("right", "left") for "right then left"; None for a straight motion such as "right" or "still"."""
    parts = motion.split(" then ")
    return (parts[0], parts[1]) if len(parts) == 2 else None


def check_name(kind: str, value: object, valid: Iterable[str]) -> None:
    """Raise a ValueError naming the valid choices when `value` is not one of them."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid {kind}s: {', '.join(valid)}")


def direction_from_displacement(dx: float, dy: float, still_threshold: float) -> str:
    """Name the motion (one of MOTIONS) closest to a displacement; "still" below the threshold."""
    if math.hypot(dx, dy) < still_threshold:
        return "still"
    angle = math.degrees(math.atan2(-dy, dx)) % 360.0  # counter-clockwise from +x, y up
    sectors = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")
    return sectors[int(((angle + 22.5) % 360.0) // 45.0)]
