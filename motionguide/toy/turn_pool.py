"""Fine-tuning pools that look like real data for teaching turns, and clean turn query sets, with truth tables.

A real pool holds few clips of the motion a user wants and captions written by a captioning model. Here (defaults):
600 single-object clips, 10% turns, of which a quarter are captioned with their first direction only
("truncated": the captioner missed the turn); straight clips as many as a third of the turns captioned with a
turn they do not show ("mislabeled": the captioner made one up; their first direction is right); the planted
defects of the toy world on 20% of every group. A caption-keyword filter ("then" + direction) then keeps the
correctly captioned turns and the mislabeled clips: 36 clean turns out of 65 (55% precision), by construction.

    out_dir/  the toy dataset layout (videos/, gt/, metadata.jsonl/csv with the *given* captions as `text`,
              dataset.json) plus truth.json and truth.csv: per clip the true motion, the caption kind, the defect
              and the turn frame. gt/*.npz holds what the clip really shows (its true caption included).

Held-out turns (`turns.heldout_turn_combinations`) and the shipped toy model's held-out straight triples never
appear, neither as clips nor in captions. Every draw is seeded: clip i depends on (seed, i) and the plan.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from motionguide.files import atomic_write_bytes
from motionguide.toy.captions import caption_for, object_clause
from motionguide.toy.dataset import (
    _metadata_row, _prepare_out_dir, _write_metadata, heldout_combinations, prompts_for_combinations, save_ground_truth,
)
from motionguide.toy.render import render_clip
from motionguide.toy.sampling import TurnCombination, all_turn_combinations, sample_clip_spec
from motionguide.toy.turns import (
    HOLDOUT_SEED, TURN_HOLDOUT_FRACTION, heldout_turn_combinations, mentions_turn, turn_prompts,
)
from motionguide.toy.vocab import DEFECTS, TURN_MOTIONS, check_name, split_turn
from motionguide.video import write_video

__all__ = ["CAPTION_KINDS", "TRUTH_FIELDS", "STRAIGHT_HOLDOUT_FRACTION", "make_turn_pool", "make_turn_queries",
           "load_truth", "pool_summary", "turn_pool_plan"]

#: clean: the caption states what the clip shows; truncated: a turn captioned with its first direction only;
#: mislabeled: a straight clip captioned with a turn.
CAPTION_KINDS = ("clean", "truncated", "mislabeled")

TRUTH_FIELDS = ("id", "true_motion", "turn_frame", "defect", "caption_kind", "clean_turn", "clean_turn_video",
                "caption", "true_caption")

_TRUTH_FILES = ("truth.json", "truth.csv")

#: The plan's groups: (true motion kind, caption kind).
_GROUPS = (("turn", "clean"), ("turn", "truncated"), ("straight", "mislabeled"), ("straight", "clean"))

#: Share of the (colour, shape, motion) triples the shipped toy model was trained without (its recipe's default).
STRAIGHT_HOLDOUT_FRACTION = 0.25


def turn_pool_plan(num_clips: int, seed: int, turn_rate: float = 0.1, truncated_share: float = 0.25,
                   mislabeled_per_turn: float = 1 / 3, defect_rate: float = 0.2,
                   defects: Sequence[str] = DEFECTS) -> list[dict[str, Any]]:
    """Per clip: {"motion_kind": turn|straight, "caption_kind", "defect"}. Group sizes are exact (rounded) and
    so is each group's defect count, so proportions do not wander with the seed; positions are random."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    for name, value in (("turn_rate", turn_rate), ("truncated_share", truncated_share),
                        ("defect_rate", defect_rate)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if not mislabeled_per_turn >= 0 or mislabeled_per_turn == float("inf"):  # NaN fails >=
        raise ValueError(f"mislabeled_per_turn must be >= 0, got {mislabeled_per_turn}")
    defects = tuple(defects)
    for defect in defects:
        check_name("defect", defect, DEFECTS)
    if defect_rate > 0 and not defects:
        raise ValueError("defect_rate > 0 needs at least one defect kind")
    turns = int(round(turn_rate * num_clips))
    truncated = int(round(truncated_share * turns))
    mislabeled = int(round(mislabeled_per_turn * turns))
    if turns + mislabeled > num_clips:
        raise ValueError(f"{turns} turn clips and {mislabeled} mislabeled straight clips do not fit in {num_clips} "
                         "clips; lower turn_rate or mislabeled_per_turn")
    sizes = (turns - truncated, truncated, mislabeled, num_clips - turns - mislabeled)
    rng = np.random.default_rng([seed, 2])
    positions = rng.permutation(num_clips)
    plan: list[dict[str, Any]] = [{}] * num_clips
    used, kinds_used = 0, 0
    for (motion_kind, caption_kind), size in zip(_GROUPS, sizes):
        count = int(round(defect_rate * size))
        kinds = [defects[(kinds_used + i) % len(defects)] for i in range(count)] if defects else []
        kinds_used += count
        group_defects: list[str | None] = kinds + [None] * (size - count)
        rng.shuffle(group_defects)
        for position, defect in zip(positions[used:used + size], group_defects):
            plan[int(position)] = {"motion_kind": motion_kind, "caption_kind": caption_kind, "defect": defect}
        used += size
    return plan


def _holdouts(turn_holdout: float | Iterable[Sequence[str]] | None, straight_holdout: float | Iterable | None,
              pairs: Iterable[Sequence[str]] | None) -> tuple[list[TurnCombination], list[tuple[str, str, str]]]:
    if isinstance(turn_holdout, (int, float)):
        turns_held = heldout_turn_combinations(HOLDOUT_SEED, float(turn_holdout), pairs)
    else:
        turns_held = sorted({tuple(c) for c in turn_holdout or ()})
    if isinstance(straight_holdout, (int, float)):
        straight_held = heldout_combinations(HOLDOUT_SEED, float(straight_holdout))
    else:
        straight_held = sorted({tuple(c) for c in straight_holdout or ()})
    return turns_held, straight_held


def _truth_row(clip_id: str, spec, caption: str, caption_kind: str) -> dict[str, Any]:
    obj = spec.objects[0]
    turning = obj.turn_motion is not None
    clean_video = turning and spec.defect is None
    return {
        "id": clip_id, "true_motion": obj.motion_name, "turn_frame": obj.turn_frame, "defect": spec.defect or "none",
        "caption_kind": caption_kind, "clean_turn": bool(clean_video and caption_kind == "clean"),
        "clean_turn_video": bool(clean_video), "caption": caption, "true_caption": caption_for(spec),
    }


def _write_clip(out_dir: Path, clip_id: str, spec, caption: str, fps: int) -> dict[str, Any]:
    """Render and write one clip (video, ground truth); returns its metadata row with the given caption."""
    clip = render_clip(spec)
    write_video(out_dir / "videos" / f"{clip_id}.mp4", clip.frames, fps=fps, lossless=True)
    save_ground_truth(out_dir / "gt" / f"{clip_id}.npz", clip)
    return {**_metadata_row(clip_id, clip), "text": caption}


def _write_truth(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_bytes(out_dir / "truth.json", (json.dumps(rows, indent=1) + "\n").encode())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRUTH_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out_dir / "truth.csv", buffer.getvalue().encode())


def _prepare(out_dir: Path, overwrite: bool) -> None:
    _prepare_out_dir(out_dir, overwrite)  # refuses a non-empty folder unless overwrite
    for name in _TRUTH_FILES:
        if (out_dir / name).exists():
            (out_dir / name).unlink()


def load_truth(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The truth table of a turn pool or query set (rows in clip order)."""
    path = Path(folder) / "truth.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; build the set with make_turn_pool / make_turn_queries")
    return json.loads(path.read_text())


def pool_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Proportions of a truth table and how the caption-keyword filter does against it: precision and recall of
    clean turns (turn shown, captioned right, no defect: what a fine-tune on turns wants), and recall of clean
    turn videos whatever their caption."""
    total = len(rows)
    keyword = [mentions_turn(r["caption"]) for r in rows]
    clean = [bool(r["clean_turn"]) for r in rows]
    clean_video = [bool(r["clean_turn_video"]) for r in rows]
    kept = sum(keyword)
    hits = sum(k and c for k, c in zip(keyword, clean))
    return {
        "clips": total,
        "turn_share": sum(split_turn(r["true_motion"]) is not None for r in rows) / max(total, 1),
        "defect_share": sum(r["defect"] != "none" for r in rows) / max(total, 1),
        "caption_kinds": {kind: sum(r["caption_kind"] == kind for r in rows) for kind in CAPTION_KINDS},
        "clean_turns": sum(clean),
        "clean_turn_videos": sum(clean_video),
        "keyword_kept": kept,
        "keyword_precision": hits / kept if kept else float("nan"),
        "keyword_recall": hits / sum(clean) if sum(clean) else float("nan"),
        "keyword_recall_clean_turn_videos": (sum(k and c for k, c in zip(keyword, clean_video)) / sum(clean_video)
                                             if sum(clean_video) else float("nan")),
    }


def make_turn_pool(
    out_dir: str | os.PathLike,
    num_clips: int = 600,
    seed: int = 0,
    turn_rate: float = 0.1,
    truncated_share: float = 0.25,
    mislabeled_per_turn: float = 1 / 3,
    defect_rate: float = 0.2,
    defects: Sequence[str] = DEFECTS,
    pairs: Iterable[Sequence[str]] | None = None,
    turn_holdout: float | Iterable[Sequence[str]] | None = TURN_HOLDOUT_FRACTION,
    straight_holdout: float | Iterable[Sequence[str]] | None = STRAIGHT_HOLDOUT_FRACTION,
    fmt: Sequence[str] = ("jsonl", "csv"),
    overwrite: bool = False,
    progress: bool = True,
    *,
    fps: int = 8,
    id_prefix: str = "clip",
) -> Path:
    """Write a turn pool (see the module docstring) into `out_dir` and return it. `pairs` restricts the turns
    to those (first, second) directions (default: every cardinal pair); the holdouts are fractions (chosen with
    the fixed HOLDOUT_SEED) or explicit lists. Clips are 17 frames of 64x64 with one object."""
    out_dir = Path(out_dir)
    pairs = _checked_pairs(pairs)
    plan = turn_pool_plan(num_clips, seed, turn_rate, truncated_share, mislabeled_per_turn, defect_rate, defects)
    turns_held, straight_held = _holdouts(turn_holdout, straight_holdout, pairs)
    allowed_turns = sorted(set(all_turn_combinations(pairs)) - set(turns_held))
    # a mislabeled clip shows its caption's first leg straight, so that straight triple must be a training one
    mislabel_turns = [t for t in allowed_turns if tuple(t[:3]) not in set(straight_held)]
    if not allowed_turns or not mislabel_turns:
        raise ValueError("no turn is left after the holdouts; hold out less or allow more direction pairs")
    if not id_prefix.isidentifier():
        raise ValueError(f"id_prefix must be a plain name such as 'clip', got {id_prefix!r}")
    _prepare(out_dir, overwrite)

    rows, truth = [], []
    for index, entry in enumerate(tqdm(plan, desc="turn pool", unit="clip", disable=not progress)):
        rng = np.random.default_rng([seed, 1, index])
        defect, caption_kind = entry["defect"], entry["caption_kind"]
        if entry["motion_kind"] == "turn":
            spec = sample_clip_spec(rng, 1, defect=defect, turns=allowed_turns)
            obj = spec.objects[0]
            shown = replace(obj, turn_motion=None, turn_frame=None) if caption_kind == "truncated" else obj
            caption = object_clause(shown, spec.num_frames)
        elif caption_kind == "mislabeled":
            color, shape, first, second = mislabel_turns[int(rng.integers(len(mislabel_turns)))]
            spec = sample_clip_spec(rng, 1, defect=defect, combinations=[(color, shape, first)], partial_motion_rate=0.0)
            obj = spec.objects[0]
            caption = object_clause(replace(obj, turn_motion=second, turn_frame=spec.num_frames // 2), spec.num_frames)
        else:
            spec = sample_clip_spec(rng, 1, defect=defect, holdout=straight_held)
            caption = caption_for(spec)
        clip_id = f"{id_prefix}_{index:05d}"
        rows.append(_write_clip(out_dir, clip_id, spec, caption, fps))
        truth.append(_truth_row(clip_id, spec, caption, caption_kind))
    _write_metadata(out_dir, rows, fmt)
    _write_truth(out_dir, truth)
    info = {
        "generator": "motionguide.toy.turn_pool", "version": 1, "kind": "turn pool", "num_clips": num_clips,
        "seed": seed, "turn_rate": turn_rate, "truncated_share": truncated_share,
        "mislabeled_per_turn": mislabeled_per_turn, "defect_rate": defect_rate, "defects": list(defects),
        "pairs": [list(p) for p in pairs] if pairs is not None else None, "formats": list(fmt), "fps": fps,
        "holdout_seed": HOLDOUT_SEED, "heldout_turns": [list(t) for t in turns_held],
        "heldout_turn_prompts": turn_prompts(turns_held), "holdout": [list(c) for c in straight_held],
        "holdout_prompts": prompts_for_combinations(straight_held), "summary": pool_summary(truth),
    }
    atomic_write_bytes(out_dir / "dataset.json", (json.dumps(info, indent=2) + "\n").encode())
    return out_dir


#: 2: colours and shapes spread as well as direction pairs (version 1 spread pairs only)
QUERY_SET_VERSION = 2


def make_turn_queries(
    out_dir: str | os.PathLike,
    num_clips: int = 6,
    seed: int = 1,
    pairs: Iterable[Sequence[str]] | None = None,
    turn_holdout: float | Iterable[Sequence[str]] | None = TURN_HOLDOUT_FRACTION,
    fmt: Sequence[str] = ("jsonl", "csv"),
    overwrite: bool = False,
    progress: bool = False,
    *,
    fps: int = 8,
    id_prefix: str = "query",
) -> Path:
    """Write `num_clips` clean turn clips (no defect, true captions, training turns only) as a Motive query set,
    ids query_00000, ...; the truth table is written as for a pool. Direction pairs, colours and shapes are
    spread: each clip takes a pair not yet used while one is left, then the least-used colour, then shape. Why:
    Motive's score follows a query's colour (benchmarks/teach_turn_motive_diagnose.py), so a set of mostly one
    colour selects that colour, not the motion."""
    out_dir = Path(out_dir)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    pairs = _checked_pairs(pairs)
    turns_held, _ = _holdouts(turn_holdout, None, pairs)
    allowed_turns = sorted(set(all_turn_combinations(pairs)) - set(turns_held))
    if not allowed_turns:
        raise ValueError("no turn is left after the holdout; hold out less or allow more direction pairs")
    if not id_prefix.isidentifier():
        raise ValueError(f"id_prefix must be a plain name such as 'query', got {id_prefix!r}")
    _prepare(out_dir, overwrite)
    rows, truth, used_pairs = [], [], set()
    colour_uses: dict[str, int] = {}
    shape_uses: dict[str, int] = {}
    for index in tqdm(range(num_clips), desc="turn queries", unit="clip", disable=not progress):
        rng = np.random.default_rng([seed, 3, index])  # not the pool's stream: no query is a pool clip

        def spread(turn):  # an unused direction pair first, then the least-used colour, then shape
            return ((turn[2], turn[3]) in used_pairs, colour_uses.get(turn[0], 0), shape_uses.get(turn[1], 0))

        best = min(spread(t) for t in allowed_turns)
        spec = sample_clip_spec(rng, 1, turns=[t for t in allowed_turns if spread(t) == best])
        obj = spec.objects[0]
        used_pairs.add((obj.motion, obj.turn_motion))
        colour_uses[obj.color] = colour_uses.get(obj.color, 0) + 1
        shape_uses[obj.shape] = shape_uses.get(obj.shape, 0) + 1
        clip_id = f"{id_prefix}_{index:05d}"
        caption = caption_for(spec)
        rows.append(_write_clip(out_dir, clip_id, spec, caption, fps))
        truth.append(_truth_row(clip_id, spec, caption, "clean"))
    _write_metadata(out_dir, rows, fmt)
    _write_truth(out_dir, truth)
    info = {
        "generator": "motionguide.toy.turn_pool", "version": QUERY_SET_VERSION, "kind": "turn queries", "num_clips": num_clips,
        "seed": seed, "pairs": [list(p) for p in pairs] if pairs is not None else None, "formats": list(fmt),
        "fps": fps, "holdout_seed": HOLDOUT_SEED, "heldout_turns": [list(t) for t in turns_held],
        "heldout_turn_prompts": turn_prompts(turns_held),
    }
    atomic_write_bytes(out_dir / "dataset.json", (json.dumps(info, indent=2) + "\n").encode())
    return out_dir


def _checked_pairs(pairs: Iterable[Sequence[str]] | None) -> list[tuple[str, str]] | None:
    """Direction pairs as tuples, each two different cardinal directions (what a short track reads reliably)."""
    if pairs is None:
        return None
    checked = []
    for pair in pairs:
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"a turn pair is two different directions such as ('right', 'left'), got {pair!r}")
        for direction in pair:
            check_name("turn direction", direction, TURN_MOTIONS)
        checked.append((str(pair[0]), str(pair[1])))
    if not checked:
        raise ValueError("pairs is empty: pass at least one (first, second) direction pair or None for all")
    return checked
