"""Turns as a motion to teach: which turns are held out, their prompts, and the caption-keyword filter.

The shipped toy model was trained on straight motions only, so "a red circle moves right then left" uses words
it knows in a composition it has never seen. One set of (colour, shape, first, second) turns is held out of every
turn pool and query set (chosen with a fixed seed, not the pool's) so that pools of any seed, the fine-tunes on
them and the before/after benchmarks all measure on the same unseen prompts.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from motionguide.toy.captions import object_clause
from motionguide.toy.sampling import TurnCombination, all_turn_combinations
from motionguide.toy.spec import ObjectSpec
from motionguide.toy.vocab import MOTIONS

__all__ = ["HOLDOUT_SEED", "ONE_ORDER_PAIRS", "TURN_FINE_TUNE", "TURN_HOLDOUT_FRACTION", "PAIR_SETS",
           "heldout_turn_combinations", "turn_clause", "turn_prompts", "mentions_turn", "pair_set", "turn_monitor_probes"]

#: Seed of every held-out choice for turns (and of the straight triples the shipped toy model never saw).
HOLDOUT_SEED = 0
#: Share of (colour, shape, direction pair) turns kept out of pools and query sets: 36 of the 144 cardinal ones.
TURN_HOLDOUT_FRACTION = 0.25

#: One order of each unordered pair of cardinal directions: the four clockwise quarter turns and two reversals.
#: The shipped toy model reads a caption as a SET of words: its frozen random text encoder gives each word nearly
#: the same vector wherever it stands (cosine 0.998 between "right" in "right then up" and in "up then right") and
#: Wan's cross-attention has no text positions, so "right then up" and "up then right" are (almost) one input and
#: a fine-tune on both orders learns their average, a diagonal (README, "Teaching a new motion"). With one order
#: per pair the words name the turn.
ONE_ORDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("right", "down"), ("down", "left"), ("left", "up"), ("up", "right"), ("right", "left"), ("up", "down"))

#: Named direction-pair sets of the turn benchmarks: all (the 12 ordered cardinal pairs) or one_order.
PAIR_SETS: dict[str, tuple[tuple[str, str], ...] | None] = {"all": None, "one_order": ONE_ORDER_PAIRS}


#: The turn fine-tune's settings in one place: every arm of `benchmarks/teach_turn.py` trains with these (their
#: flags' defaults) and the demo's turn story scales them down. pairs: one_order, since the toy model cannot tell
#: the two orders of a pair apart; motion_loss_weight: Motive's motion mask weighting the moving latent pixels of
#: the loss (1 = off), the toy recipe's answer to a loss that hardly sees the object. Steps / lr / rank are what
#: `benchmarks/teach_turn_settings.py` searches on world seed 0 (2000 steps: 5/12 held-out turns
#: for the oracle, base 0/12): update them here when it finds better ones.
TURN_FINE_TUNE: dict[str, object] = {"pairs": "one_order", "steps": 2000, "batch": 4, "lr": 1e-3, "rank": 16,
                                     "motion_loss_weight": 5.0}


def pair_set(name: str) -> list[tuple[str, str]] | None:
    """The direction pairs of a named set (None = every ordered cardinal pair, the pools' default)."""
    if name not in PAIR_SETS:
        raise ValueError(f"unknown pair set {name!r}; choose from {', '.join(PAIR_SETS)}")
    pairs = PAIR_SETS[name]
    return None if pairs is None else [tuple(p) for p in pairs]


def heldout_turn_combinations(seed: int = HOLDOUT_SEED, fraction: float = TURN_HOLDOUT_FRACTION,
                              pairs: Iterable[Sequence[str]] | None = None) -> list[TurnCombination]:
    """A seeded subset of turns to keep out of training, chosen so that every colour, shape and direction pair
    still occurs in the remaining (training) turns: what is new in a held-out prompt is the combination."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    combos = all_turn_combinations(pairs)
    keys = [(color, shape, (first, second)) for color, shape, first, second in combos]
    remaining: list[dict] = [{}, {}, {}]
    for key in keys:
        for axis, value in enumerate(key):
            remaining[axis][value] = remaining[axis].get(value, 0) + 1
    target = int(round(fraction * len(combos)))
    held = []
    for index in np.random.default_rng(seed).permutation(len(combos)):
        if len(held) == target:
            break
        key = keys[index]
        if all(remaining[axis][value] > 1 for axis, value in enumerate(key)):
            held.append(combos[index])
            for axis, value in enumerate(key):
                remaining[axis][value] -= 1
    return sorted(held)


def turn_clause(color: str, shape: str, first: str, second: str, speed: str = "normal") -> str:
    """The caption clause of one turn, e.g. "a red circle moves right then left" (the world's own grammar)."""
    obj = ObjectSpec(shape, color, first, speed, turn_motion=second, turn_frame=8)
    return object_clause(obj, num_frames=17)


def turn_prompts(combinations: Iterable[Sequence[str]], speed: str = "normal") -> list[str]:
    """One prompt per (colour, shape, first, second) turn, e.g. for sampling the held-out turns."""
    return [turn_clause(color, shape, first, second, speed) for color, shape, first, second in combinations]


_THEN_DIRECTION = re.compile(r"\bthen ({})\b".format(
    "|".join(sorted((re.escape(m) for m in MOTIONS if m != "still"), key=len, reverse=True))))


def mentions_turn(caption: str) -> bool:
    """The caption-keyword filter a user would try first: "then" followed by a direction word ("then stops" is
    not a turn). It trusts the caption, so it keeps every mislabeled clip and misses every truncated one."""
    return _THEN_DIRECTION.search(caption.lower()) is not None


def turn_monitor_probes(rows: Sequence[dict], ids: Iterable[str] | None = None,
                        num_probes: int = 4) -> tuple[list[str], list[str]]:
    """(probe clip ids, words) for the IMAP monitor during a turn fine-tune: the words that carry the new motion,
    "then" and the second direction, on clips (of `ids`, default all rows of a turn pool's truth table) whose
    caption says that turn, clean turns first. One second direction for every probe (the most common one among
    the clean candidates), so a word's map means the same thing on every probe row; ([], []) when no caption
    says a turn."""
    keep = None if ids is None else set(ids)
    candidates = []
    for row in rows:
        found = _THEN_DIRECTION.search(row["caption"].lower())
        if found and (keep is None or row["id"] in keep):
            candidates.append((not row.get("clean_turn", False), row["id"], found.group(1)))
    if not candidates:
        return [], []
    pool = [c for c in candidates if not c[0]] or candidates
    counts: dict[str, int] = {}
    for _, _, second in pool:
        counts[second] = counts.get(second, 0) + 1
    second = sorted(counts, key=lambda w: (-counts[w], w))[0]
    chosen = sorted(c for c in candidates if c[2] == second)[:num_probes]  # clean first, then by id
    return [clip_id for _, clip_id, _ in chosen], ["then", second]
