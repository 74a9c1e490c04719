"""Shared pieces of the "teach a new motion" benchmarks (issue 16): held-out turn prompts, scoring generated
videos with the turn-success metric, and success rates with confidence intervals.

Every arm (the base model now; curated, random, keyword-filtered and oracle LoRAs later) is scored on the same
held-out (colour, shape, direction pair) turns, which no turn pool or query set ever shows
(`motionguide.toy.turns.heldout_turn_combinations`, fixed seed).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from motionguide.metrics import toy_prompt_adherence
from motionguide.metrics.turns import toy_turn_adherence
from motionguide.toy.turns import heldout_turn_combinations, turn_prompts
from motionguide.toy.vocab import DIRECTIONS, direction_from_displacement


def heldout_turn_prompts(speed: str = "normal") -> list[dict[str, Any]]:
    """[{prompt, color, shape, first, second}] for every held-out turn, in a fixed order."""
    combos = heldout_turn_combinations()
    return [{"prompt": prompt, "color": c, "shape": s, "first": a, "second": b}
            for prompt, (c, s, a, b) in zip(turn_prompts(combos, speed=speed), combos)]


def score_turn_video(frames: np.ndarray, prompt: dict[str, Any], token_px: float) -> dict[str, Any]:
    """The turn metric on one video, plus what the object did over the whole clip (its net direction, read as
    `toy_prompt_adherence` reads a straight prompt): a base model that ignores "then" goes the first way."""
    result = toy_turn_adherence(frames, prompt["prompt"])[0]
    straight = f"a {prompt['color']} {prompt['shape']} moves {prompt['first']}"
    net = toy_prompt_adherence(frames, straight, token_px=token_px)[0]
    reading = result.reading
    if result.success:
        outcome = "turn as prompted"
    elif net.measured_direction == prompt["first"] and reading.second_direction in (prompt["first"], "still", None):
        outcome = "straight, first direction"
    elif net.measured_direction == prompt["second"]:
        outcome = "straight, second direction"
    elif net.measured_direction is not None and net.measured_direction == _blend(prompt["first"], prompt["second"]):
        outcome = "one diagonal blending both directions"
    elif net.measured_direction == "still":
        outcome = "still"
    else:
        outcome = "other"
    return {
        "success": bool(result.success), "presence": result.presence, "outcome": outcome,
        "first_leg": reading.first_direction, "second_leg": reading.second_direction,
        "turn_frame": reading.turn_frame, "net_direction": net.measured_direction,
        "first_leg_right": reading.first_direction == prompt["first"],
        "second_leg_right": reading.second_direction == prompt["second"],
    }


def _blend(first: str, second: str) -> str | None:
    """The diagonal between two perpendicular directions ("down", "left" -> "down-left"); None for a reversal."""
    (ax, ay), (bx, by) = DIRECTIONS[first], DIRECTIONS[second]
    blend = direction_from_displacement(ax + bx, ay + by, still_threshold=0.5)
    return None if blend == "still" else blend


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sensible at 0 and 1, where a percentile bootstrap collapses)."""
    if trials == 0:
        return float("nan"), float("nan")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def prompt_bootstrap(rows: Sequence[dict[str, Any]], key: str = "success", resamples: int = 10000,
                     seed: int = 0) -> dict[str, float]:
    """Mean of `key` with a 95% percentile CI that resamples whole prompts (their seeds together), so a prompt
    the model finds easy counts once, not once per seed."""
    prompts = sorted({r["prompt"] for r in rows})
    per_prompt = np.array([np.mean([float(r[key]) for r in rows if r["prompt"] == p]) for p in prompts])
    rng = np.random.default_rng(seed)
    means = per_prompt[rng.integers(0, len(per_prompt), size=(resamples, len(per_prompt)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(np.mean([float(r[key]) for r in rows])), "low": float(low), "high": float(high),
            "prompts": len(prompts)}


def success_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Turn success over videos with the Wilson interval and the prompt-resampling bootstrap, plus each leg."""
    hits = sum(bool(r["success"]) for r in rows)
    low, high = wilson_interval(hits, len(rows))
    return {
        "videos": len(rows), "successes": hits, "success_rate": hits / len(rows) if rows else float("nan"),
        "wilson_95": [low, high], "prompt_bootstrap_95": prompt_bootstrap(rows),
        "first_leg_right": float(np.mean([r["first_leg_right"] for r in rows])),
        "second_leg_right": float(np.mean([r["second_leg_right"] for r in rows])),
        "present_in_80pct_frames": float(np.mean([r["presence"] >= 0.8 for r in rows])),
        "outcomes": {k: sum(r["outcome"] == k for r in rows) for k in sorted({r["outcome"] for r in rows})},
    }
