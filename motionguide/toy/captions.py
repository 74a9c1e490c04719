"""The caption grammar, both ways: spec → caption and caption → (colour, shape, motion, speed).

    clause  := "a" COLOR SHAPE ( "stays still" | VERB MOTION [ADVERB] ["then" MOTION] ["then stops"] )
    VERB    := "moves" | "starts moving"        ("starts moving" when the object rests on frame 1)
    ADVERB  := "slowly" | "quickly"             (none for normal speed)
    caption := clause ( " and " clause )*

"then MOTION" is a turn ("a red circle moves right then left"); its parsed `motion` is the phrase
"right then left" (`vocab.split_turn` splits it). A caption always states the intended motion; planted
defects never change it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from motionguide.toy.spec import ClipSpec, ObjectSpec
from motionguide.toy.vocab import COLORS, MOTIONS, SHAPES, SPEED_ADVERBS, turn_name

__all__ = ["CaptionObject", "caption_for", "object_clause", "parse_caption"]


class CaptionObject(NamedTuple):
    """One parsed clause. `speed` is a SPEEDS name, None for "stays still"; `motion` is a MOTIONS name or a
    turn's phrase such as "right then left"."""

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
    turn = f" then {obj.turn_motion}" if obj.turn_motion is not None else ""
    tail = "" if moving[-1] else " then stops"
    return f"{head} {verb} {obj.motion}{' ' + adverb if adverb else ''}{turn}{tail}"


def caption_for(spec: ClipSpec) -> str:
    """The caption of a clip: one clause per object joined with " and "."""
    return " and ".join(object_clause(obj, spec.num_frames) for obj in spec.objects)


_ADVERB_TO_SPEED = {adverb: name for name, adverb in SPEED_ADVERBS.items() if adverb}
_CLAUSE = re.compile(
    r"^an? (?P<color>{colors}) (?P<shape>{shapes}) "
    r"(?:(?P<still>stays still)|(?:moves|starts moving) (?P<motion>{motions})"
    r"(?: (?P<adverb>{adverbs}))?(?: then (?P<turn>{motions}))?(?: then stops)?)$".format(
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
            if match["turn"] == match["motion"]:
                raise ValueError(f"{clause!r} of caption {caption!r} turns into the direction it already moves")
            motion = match["motion"] if match["turn"] is None else turn_name(match["motion"], match["turn"])
            parsed.append(CaptionObject(match["color"], match["shape"], motion, speed))
    return parsed
