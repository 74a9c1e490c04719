"""The caption grammar, both ways: spec → caption and caption → (colour, shape, motion, speed).

    clause  := "a" COLOR SHAPE ( "stays still" | VERB MOTION [ADVERB] ["then stops"] )
    VERB    := "moves" | "starts moving"        ("starts moving" when the object rests on frame 1)
    ADVERB  := "slowly" | "quickly"             (none for normal speed)
    caption := clause ( " and " clause )*

A caption always states the intended motion; planted defects never change it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from motionguide.toy.spec import ClipSpec, ObjectSpec
from motionguide.toy.vocab import COLORS, MOTIONS, SHAPES, SPEED_ADVERBS

__all__ = ["CaptionObject", "caption_for", "object_clause", "parse_caption"]


class CaptionObject(NamedTuple):
    """One parsed clause. `speed` is a SPEEDS name, None for "stays still"."""

    color: str
    shape: str
    motion: str
    speed: str | None


def object_clause(obj: ObjectSpec, num_frames: int) -> str:
    """The clause for one object, e.g. "a green triangle moves up quickly"."""
    head = f"a {obj.color} {obj.shape}"
    if obj.motion == "still":
        return f"{head} stays still"
    moving = obj.moving_frames(num_frames)
    verb = "moves" if moving[1] else "starts moving"
    adverb = SPEED_ADVERBS[obj.speed]
    tail = "" if moving[-1] else " then stops"
    return f"{head} {verb} {obj.motion}{' ' + adverb if adverb else ''}{tail}"


def caption_for(spec: ClipSpec) -> str:
    """The caption of a clip: one clause per object joined with " and "."""
    return " and ".join(object_clause(obj, spec.num_frames) for obj in spec.objects)


_ADVERB_TO_SPEED = {adverb: name for name, adverb in SPEED_ADVERBS.items() if adverb}
_CLAUSE = re.compile(
    r"^an? (?P<color>{colors}) (?P<shape>{shapes}) "
    r"(?:(?P<still>stays still)|(?:moves|starts moving) (?P<motion>{motions})"
    r"(?: (?P<adverb>{adverbs}))?(?: then stops)?)$".format(
        colors="|".join(COLORS), shapes="|".join(SHAPES),
        motions="|".join(sorted((m for m in MOTIONS if m != "still"), key=len, reverse=True)),
        adverbs="|".join(_ADVERB_TO_SPEED),
    )
)


def parse_caption(caption: str) -> list[CaptionObject]:
    """Parse a toy caption into one CaptionObject per clause; ValueError if it is not toy grammar."""
    text = " ".join(caption.strip().lower().rstrip(".").split())
    parsed = []
    for clause in text.split(" and "):
        match = _CLAUSE.match(clause)
        if match is None:
            raise ValueError(f"cannot parse {clause!r} of caption {caption!r} as a toy caption; expected e.g. "
                             "'a red circle moves left', 'a blue square stays still' or "
                             "'a green triangle starts moving up quickly then stops'")
        if match["still"]:
            parsed.append(CaptionObject(match["color"], match["shape"], "still", None))
        else:
            speed = _ADVERB_TO_SPEED.get(match["adverb"] or "", "normal")
            parsed.append(CaptionObject(match["color"], match["shape"], match["motion"], speed))
    return parsed
