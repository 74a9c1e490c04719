"""Draw random clip specs whose objects stay inside the frame for the whole clip."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Collection, Iterable, Sequence

import numpy as np

from motionguide.toy.spec import ClipSpec, ObjectSpec
from motionguide.toy.trajectory import EDGE_MARGIN, offsets_from_start, shape_extent
from motionguide.toy.vocab import BACKGROUNDS, COLORS, DEFECTS, MOTIONS, SHAPES, SPEEDS, TURN_MOTIONS, check_name

__all__ = ["Combination", "TurnCombination", "TURN_SPEEDS", "all_combinations", "all_turn_combinations", "turn_pairs",
           "sample_clip_spec"]

#: (color, shape, motion): the unit held out to test compositional generalisation.
Combination = tuple[str, str, str]

#: (color, shape, first direction, second direction): one turn, e.g. ("red", "circle", "right", "left").
TurnCombination = tuple[str, str, str, str]

#: Speeds a sampled turn moves at: "slowly" would leave a leg of 5 frames under one 8-px token of displacement.
TURN_SPEEDS: tuple[str, ...] = ("normal", "quickly")


def all_combinations() -> list[Combination]:
    """Every (color, shape, motion) triple of the vocabulary, in a fixed order."""
    return list(itertools.product(COLORS, SHAPES, MOTIONS))


def turn_pairs(motions: Sequence[str] = TURN_MOTIONS) -> list[tuple[str, str]]:
    """Every ordered pair of two different directions out of `motions` (12 for the four cardinal ones)."""
    return [(first, second) for first in motions for second in motions if first != second]


def all_turn_combinations(pairs: Iterable[Sequence[str]] | None = None) -> list[TurnCombination]:
    """Every (color, shape, first, second) turn over `pairs` (default: all cardinal pairs), in a fixed order."""
    pairs = turn_pairs() if pairs is None else [tuple(p) for p in pairs]
    return [(color, shape, first, second) for color in COLORS for shape in SHAPES for first, second in pairs]


def _check_turns(turns: Iterable[Sequence[str]]) -> set[TurnCombination]:
    checked = set()
    for turn in turns:
        if len(turn) != 4:
            raise ValueError(f"turns must be (color, shape, first, second) entries, got {turn!r}")
        color, shape, first, second = turn
        check_name("color", color, COLORS)
        check_name("shape", shape, SHAPES)
        check_name("motion", first, [m for m in MOTIONS if m != "still"])
        check_name("turn motion", second, [m for m in MOTIONS if m not in ("still", first)])
        checked.add((color, shape, first, second))
    return checked


def _turn_frame(rng: np.random.Generator, num_frames: int) -> int:
    """The frame a turn's second leg starts on: each leg spans at least 30% of the steps (5 of 16 for 17
    frames), so both directions are measurable and the turn is not always in the middle."""
    margin = max(2, round(0.3 * (num_frames - 1)))
    if num_frames < 2 * margin + 1:
        raise ValueError(f"a turn needs at least 7 frames, got num_frames={num_frames}")
    return int(rng.integers(1 + margin, num_frames - margin + 1))


def _check_combinations(combos: Iterable[Sequence[str]], what: str) -> set[Combination]:
    checked = set()
    for combo in combos:
        if len(combo) != 3:
            raise ValueError(f"{what} entries must be (color, shape, motion), got {combo!r}")
        color, shape, motion = combo
        check_name("color", color, COLORS)
        check_name("shape", shape, SHAPES)
        check_name("motion", motion, MOTIONS)
        checked.add((color, shape, motion))
    return checked


def _motion_window(rng: np.random.Generator, num_frames: int, partial_rate: float) -> tuple[int, int | None]:
    """(motion_start, motion_stop): usually the whole clip, sometimes starting late and/or stopping early,
    always with at least 6 moving steps and 2 resting frames, so both phases are measurable."""
    if num_frames < 14 or rng.random() >= partial_rate:
        return 0, None
    kind = rng.choice(["start", "stop", "both"])
    start = int(rng.integers(3, num_frames // 2)) if kind in ("start", "both") else 0
    if kind == "start":
        return start, None
    return start, int(rng.integers(max(start + 6, num_frames // 2 + 1), num_frames - 1))


def _start_range(spec: ClipSpec, index: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Lowest and highest start (x, y) that keep object `index` inside the frame, or None if none does."""
    obj = spec.objects[index]
    offsets = offsets_from_start(spec, index)
    inset = shape_extent(obj.shape, obj.radius) + EDGE_MARGIN
    low = inset - offsets.min(axis=0)
    high = np.array([spec.width - 1, spec.height - 1]) - inset - offsets.max(axis=0)
    return (low, high) if np.all(low <= high) else None


def sample_clip_spec(
    rng: np.random.Generator,
    num_objects: int = 1,
    *,
    defect: str | None = None,
    combinations: Collection[Sequence[str]] | None = None,
    holdout: Collection[Sequence[str]] | None = None,
    num_frames: int = 17,
    height: int = 64,
    width: int = 64,
    background: str | None = None,
    radius_range: tuple[float, float] | None = None,
    partial_motion_rate: float = 0.2,
    max_tries: int = 200,
    turns: Collection[Sequence[str]] | None = None,
) -> ClipSpec:
    """A random ClipSpec. Objects draw their (color, shape, motion) from `combinations` (default: all)
    minus `holdout`, with distinct colours; the defect (if any) goes on object 0. Start positions are chosen
    after the trajectory is known, so every object stays inside the frame on every frame.

    `turns` (TurnCombination entries) makes object 0 a turn drawn from them, moving over the whole clip at a
    TURN_SPEEDS speed and turning on a drawn frame; without it no draw differs from before turns existed."""
    if num_objects < 1 or num_objects > len(COLORS):
        raise ValueError(f"num_objects must be between 1 and {len(COLORS)} (objects need distinct colours)")
    if defect is not None:
        check_name("defect", defect, DEFECTS)
    if background is not None:
        check_name("background", background, BACKGROUNDS)
    allowed = _check_combinations(combinations if combinations is not None else all_combinations(), "combinations")
    allowed -= _check_combinations(holdout or (), "holdout")
    allowed = sorted(allowed)
    if not allowed:
        raise ValueError("no (color, shape, motion) combination is left after the holdout")
    size = min(height, width)
    radius_low, radius_high = radius_range or (size * 5 / 64, size * 8 / 64)

    def pick(choices: Sequence[Combination]) -> Combination:
        return choices[int(rng.integers(len(choices)))]

    turn_to = None
    if turns is not None:
        turn_choices = sorted(_check_turns(turns))
        if not turn_choices:
            raise ValueError("turns is empty: pass at least one (color, shape, first, second) turn")
        *first_combo, turn_to = turn_choices[int(rng.integers(len(turn_choices)))]
        combos = [tuple(first_combo)]
    else:
        first_choices = [c for c in allowed if c[2] != "still"] if defect in ("static", "reversed") else allowed
        if not first_choices:
            raise ValueError(f"defect {defect!r} needs a moving object but every allowed combination is 'still'")
        combos = [pick(first_choices)]
    while len(combos) < num_objects:
        rest = [c for c in allowed if c[0] not in {used[0] for used in combos}]
        if not rest:
            raise ValueError(f"cannot find {num_objects} objects of distinct colours in the allowed combinations")
        combos.append(pick(rest))
    speeds = [str(rng.choice(list(TURN_SPEEDS if index == 0 and turn_to else SPEEDS))) if combo[2] != "still"
              else "normal" for index, combo in enumerate(combos)]
    background = background or str(rng.choice(BACKGROUNDS))
    seed = int(rng.integers(0, 2**31 - 1))

    for _ in range(max_tries):
        camera_pan = None
        if defect == "camera_pan":
            angle, magnitude = rng.uniform(0, 2 * math.pi), rng.uniform(0.8, 1.5)
            camera_pan = (round(magnitude * math.cos(angle), 3), round(magnitude * math.sin(angle), 3))
        objects = []
        for index, ((color, shape, motion), speed) in enumerate(zip(combos, speeds)):
            turn = None
            if index == 0 and turn_to is not None:
                start, stop, turn = 0, None, (turn_to, _turn_frame(rng, num_frames))
            elif motion != "still":
                start, stop = _motion_window(rng, num_frames, partial_motion_rate)
            else:
                start, stop = 0, None
            radius = round(float(rng.uniform(radius_low, radius_high)), 2)
            objects.append(ObjectSpec(shape, color, motion, speed, radius, (0.0, 0.0), start, stop, *(turn or ())))
        spec = ClipSpec(tuple(objects), background, camera_pan, defect, num_frames, height, width, seed)
        ranges = [_start_range(spec, i) for i in range(num_objects)]
        if any(r is None for r in ranges):
            continue
        placed = _place_objects(rng, spec, ranges)
        if placed is not None:
            return placed
    raise ValueError(f"could not fit {num_objects} object(s) moving for {num_frames} frames into "
                     f"{height}x{width} after {max_tries} tries; use a larger frame, fewer frames or "
                     "smaller radius_range")


def _place_objects(rng: np.random.Generator, spec: ClipSpec,
                   ranges: list[tuple[np.ndarray, np.ndarray]], tries: int = 30) -> ClipSpec | None:
    """Choose start positions inside the allowed ranges, objects not overlapping on frame 0."""
    objects = spec.objects
    for _ in range(tries):
        starts = [rng.uniform(low, high) for low, high in ranges]
        extents = [shape_extent(o.shape, o.radius) for o in objects]
        apart = all(np.linalg.norm(starts[i] - starts[j]) > extents[i] + extents[j] + 1.0
                    for i in range(len(objects)) for j in range(i))
        if apart:
            placed = tuple(replace(o, start_xy=(round(float(s[0]), 2), round(float(s[1]), 2)))
                           for o, s in zip(objects, starts))
            return replace(spec, objects=placed)
    return None
