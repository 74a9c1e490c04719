"""Shared pieces of the "teach a new motion" benchmarks (issue 16): held-out turn prompts, scoring generated
videos with the turn-success metric, and success rates with confidence intervals.

Every arm (the base model now; curated, random, keyword-filtered and oracle LoRAs later) is scored on the same
held-out (colour, shape, direction pair) turns, which no turn pool or query set ever shows
(`motionguide.toy.turns.heldout_turn_combinations`, fixed seed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from motionguide.metrics import toy_prompt_adherence
from motionguide.metrics.object_consistency import object_consistency
from motionguide.metrics.turns import jerk_at_turn, toy_turn_adherence
from motionguide.toy.turns import heldout_turn_combinations, turn_prompts
from motionguide.toy.vocab import DIRECTIONS, direction_from_displacement


def heldout_turn_prompts(speed: str = "normal", pairs: Sequence[Sequence[str]] | None = None) -> list[dict[str, Any]]:
    """[{prompt, color, shape, first, second}] for every held-out turn over `pairs` (None: all), in a fixed order."""
    combos = heldout_turn_combinations(pairs=pairs)
    return [{"prompt": prompt, "color": c, "shape": s, "first": a, "second": b}
            for prompt, (c, s, a, b) in zip(turn_prompts(combos, speed=speed), combos)]


def score_turn_video(frames: np.ndarray, prompt: dict[str, Any], token_px: float) -> dict[str, Any]:
    """The turn metric on one video, plus what the object did over the whole clip (its net direction, read as
    `toy_prompt_adherence` reads a straight prompt): a base model that ignores "then" goes the first way."""
    result = toy_turn_adherence(frames, prompt["prompt"])[0]
    consistency = object_consistency(frames, prompt["prompt"])
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
        "jerk_at_turn": jerk_at_turn(result.trajectory, reading.turn_frame),
        "colour_drift": consistency["colour_drift"], "shape_consistency": consistency["shape_consistency"],
        "trajectory_jerk": consistency["trajectory_jerk"],
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


# ---------------------------------------------------------------------- fine-tune arms (issue 16, items 3-4)
def selection_quality(selected_ids: Sequence[str], truth: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Precision / recall of the clean turn clips (turn shown, captioned right, no defect) in a selection, and
    what else it holds, against the pool's truth table."""
    by_id = {r["id"]: r for r in truth}
    chosen = [by_id[i] for i in selected_ids]
    clean_total = sum(bool(r["clean_turn"]) for r in truth)
    hits = sum(bool(r["clean_turn"]) for r in chosen)
    videos_total = sum(bool(r["clean_turn_video"]) for r in truth)
    return {
        "selected": len(chosen),
        "clean_turns": hits,
        "precision": hits / len(chosen) if chosen else float("nan"),
        "recall": hits / clean_total if clean_total else float("nan"),
        "clean_turn_videos": sum(bool(r["clean_turn_video"]) for r in chosen),
        "recall_clean_turn_videos": (sum(bool(r["clean_turn_video"]) for r in chosen) / videos_total
                                     if videos_total else float("nan")),
        "caption_kinds": {k: sum(r["caption_kind"] == k for r in chosen) for k in ("clean", "truncated", "mislabeled")},
        "with_defect": sum(r["defect"] != "none" for r in chosen),
    }


def write_subset(pool: Path, ids: Sequence[str], folder: Path) -> Path:
    """A dataset folder holding only `ids` of `pool` (its metadata rows; videos and ground truth linked, not
    copied), so every arm trains through the same plain path (no curation inside the trainer)."""
    import json
    import os

    keep = set(ids)
    rows = [line for line in (pool / "metadata.jsonl").read_text().splitlines()
            if line.strip() and json.loads(line)["id"] in keep]
    if len(rows) != len(keep):
        raise ValueError(f"{len(keep) - len(rows)} selected ids are not in {pool}")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("videos", "gt"):
        link = folder / name
        if not link.exists():
            os.symlink(os.path.relpath(pool / name, folder), link)
    text = "\n".join(rows) + "\n"
    target = folder / "metadata.jsonl"
    if not target.is_file() or target.read_text() != text:
        target.write_text(text)
    return folder


def fine_tune_subset(model: str, data: Path, out: Path, cache: Path, *, steps: int, batch: int, lr: float,
                     rank: int, seed: int, max_sequence_length: int = 16,
                     training_type: str = "lora", motion_loss_weight: float = 1.0,
                     imap: dict[str, Any] | None = None) -> dict[str, Any]:
    """One LoRA fine-tune on a dataset folder; a finished run with the identical config and clip list is reused.
    `motion_loss_weight` > 1 weights the moving latent pixels (Motive's motion mask) in the loss. `imap`: the
    IMAP monitor's options (`--monitor imap`); it probes without touching the training RNG, so the LoRA is the
    one the same run without it trains."""
    import json
    import time

    from motionguide.training import TrainConfig, Trainer

    cfg = TrainConfig(pretrained_model_name_or_path=model, output_dir=str(out), data_root=str(data),
                      latent_cache_dir=str(cache), train_steps=steps, train_batch_size=batch, learning_rate=lr,
                      rank=rank, lora_alpha=float(rank), seed=seed, max_sequence_length=max_sequence_length,
                      checkpointing_steps=0, report_to="none", logging_steps=max(1, steps), curation="none",
                      training_type=training_type, motion_loss_weight=motion_loss_weight,
                      **({"monitor": ["imap"], "method_options": {"imap": dict(imap)}} if imap else {}))
    summary_file, config_file, stamp = out / "train_summary.json", out / "train_config.json", out / "clips_used.txt"
    clips = (data / "metadata.jsonl").read_text()
    start = time.perf_counter()
    reused = (summary_file.is_file() and config_file.is_file() and stamp.is_file()
              and _without_default_motion_weight(json.loads(config_file.read_text()))
              == _without_default_motion_weight(cfg.to_dict()) and stamp.read_text() == clips)
    summary = json.loads(summary_file.read_text()) if reused else Trainer(cfg).run()
    stamp.write_text(clips)
    losses = [v for _, v in sorted((int(k), v) for k, v in summary["losses"].items())]
    tail = losses[-max(1, len(losses) // 10):]
    return {"lora": str(out), "clips": summary["clips"], "steps": summary["steps"], "reused": reused,
            "final_loss_mean_last_10pct": float(np.mean(tail)), "seconds": time.perf_counter() - start}


def _without_default_motion_weight(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config without motion_loss_weight at its off value: runs saved before the option existed match."""
    return {k: v for k, v in config.items() if not (k == "motion_loss_weight" and v == 1.0)}


def straight_heldout_prompts(model: str, limit: int = 0) -> list[dict[str, Any]]:
    """The old motions' held-out prompts (the model's held-out moving triples at normal speed) for forgetting."""
    import json

    from motionguide.toy import prompts_for_combinations

    report = Path(model) / "training_report.json"
    held = json.loads(report.read_text()).get("heldout_combinations", []) if report.is_file() else []
    combos = [tuple(c) for c in held]
    combos = [c for c in combos if c[2] != "still"]
    if limit:
        combos = combos[:limit]
    return [{"prompt": prompts_for_combinations([c])[0], "color": c[0], "shape": c[1], "motion": c[2]} for c in combos]


def evaluate_arm(pipe, turn_prompts_: Sequence[dict[str, Any]], straight_prompts: Sequence[dict[str, Any]],
                 seeds: Sequence[int], settings, token_px: float, guidance: str = "none",
                 guidance_options: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Rows per (prompt, seed), in a fixed order shared by every arm (so arms pair up): turn success, presence,
    smoothness, jerk at the turn, colour drift and shape consistency on the turn prompts; direction accuracy on
    the straight prompts. `guidance` / `guidance_options`: a sampling guidance (e.g. "correspondence")."""
    from motionguide.metrics import flow_warp_smoothness
    from motionguide.sampling import generate_videos

    turn_rows, straight_rows = [], []
    for prompt in turn_prompts_:
        for video in generate_videos(pipe, [prompt["prompt"]], list(seeds), settings, guidance=guidance,
                                     guidance_options=guidance_options, progress=False):
            scored = score_turn_video(video["frames"], prompt, token_px)
            turn_rows.append({**prompt, "seed": video["seed"], **scored,
                              "smoothness": float(flow_warp_smoothness(video["frames"]))})
    for prompt in straight_prompts:
        for video in generate_videos(pipe, [prompt["prompt"]], list(seeds), settings, guidance=guidance,
                                     guidance_options=guidance_options, progress=False):
            adherence = toy_prompt_adherence(video["frames"], prompt["prompt"], token_px=token_px)[0]
            straight_rows.append({**prompt, "seed": video["seed"],
                                  "direction_correct": bool(adherence.direction_correct)})
    return {"turn": turn_rows, "straight": straight_rows}


def turn_sets(work: Path, world_seed: int, pool_clips: int, query_seed: int, query_clips: int,
              pairs_name: str) -> tuple[Path, Path]:
    """The turn pool and query set of these seeds under `work`, made on first use and reused after; a query
    set written by an older generator version (other clips for the same seed) is made again."""
    import json

    from motionguide.toy.turn_pool import QUERY_SET_VERSION, load_truth, make_turn_pool, make_turn_queries
    from motionguide.toy.turns import pair_set

    pairs, tag = pair_set(pairs_name), "" if pairs_name == "all" else f"_{pairs_name}"
    pool = work / f"pool_seed{world_seed}_{pool_clips}{tag}"
    queries = work / f"queries_seed{query_seed}_{query_clips}{tag}"
    if not (pool / "truth.json").is_file():
        make_turn_pool(pool, num_clips=pool_clips, seed=world_seed, pairs=pairs, fmt=("jsonl",), overwrite=True,
                       progress=False)
    info = queries / "dataset.json"
    current = (info.is_file() and json.loads(info.read_text()).get("version") == QUERY_SET_VERSION
               and len(load_truth(queries)) == query_clips)
    if not current:
        make_turn_queries(queries, num_clips=query_clips, seed=query_seed, pairs=pairs, fmt=("jsonl",),
                          overwrite=True)
    return pool, queries

