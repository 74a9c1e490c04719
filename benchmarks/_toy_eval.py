"""Plumbing shared by the DiffTrack / CAG evidence scripts: flags, model loading, layer-profile fallbacks,
toy clips with ground truth, a paired bootstrap and markdown tables.

Kept out of `_common.py` (timing and result files, used by every benchmark) because only the
toy-world evidence scripts need it.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import _common

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "assets" / "toy-model"


# ---------------------------------------------------------------------- flags and setup
def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every evidence script takes: which model, text length, threads, where results go."""
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="WanPipeline folder (default: the toy model)")
    parser.add_argument("--max_sequence_length", type=int, default=None,
                        help="text tokens; default from the model's sampling_defaults.json (16 for the toy model)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch / OpenCV threads (0 = library defaults); use 1 on a shared machine")
    parser.add_argument("--results_dir", default=None,
                        help="write <name>.json/.md here instead of benchmarks/results (smoke runs)")


def write(name: str, data: dict, markdown: str, results_dir: str | None) -> None:
    """`_common.write_results` with the machine recorded; `results_dir` keeps smoke runs away from the real
    results."""
    _common.write_results(name, {"machine": _common.machine(), **data}, markdown, results_dir=results_dir)


def load_model(model: str | Path):
    """(pipeline, backbone) with progress bars off; the pipeline is a stock diffusers one."""
    from motionguide.backbones import backbone_for
    from motionguide.sampling import load_pipeline

    model_dir = Path(model)
    if not model_dir.exists():
        raise SystemExit(f"{model_dir} does not exist: train the toy model first (or pass --model DIR)")
    pipe = load_pipeline(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe, backbone_for(pipe)


def sampling_settings(model: str | Path, **overrides: Any):
    """The model's own sampling defaults (steps, CFG, text length), then explicit flags (None = keep)."""
    from motionguide.sampling import SamplingSettings

    return SamplingSettings.for_model(model, **overrides)


# ---------------------------------------------------------------------- blocks and profiles
def middle_block(num_blocks: int) -> int:
    """Fallback tracking block when no profile exists: the middle of the stack (DiffTrack's blocks sit
    mid-depth, e.g. 17 of 30 on CogVideoX-2B)."""
    return num_blocks // 2


def middle_half(num_blocks: int) -> list[int]:
    """The central half of the blocks (at least one): fallback block set for IMAP / guidance."""
    count = max(1, num_blocks // 2)
    start = (num_blocks - count) // 2
    return list(range(start, start + count))


def find_profile(backbone, profile: str | None):
    """The profile given by --profile (checked against the model), else the shipped one, else None."""
    from motionguide.correspondence import resolve_profile
    from motionguide.errors import ConfigError

    if profile is not None:
        return resolve_profile(backbone, profile, "this benchmark")
    try:
        return backbone.default_profile()
    except ConfigError:
        return None


def last_step_timestep(backbone, num_inference_steps: int) -> float:
    """Transformer timestep of the last (least noisy) step of the model's own schedule."""
    scheduler = copy.deepcopy(backbone.scheduler)
    scheduler.set_timesteps(num_inference_steps)
    return float(scheduler.timesteps[-1])


def parse_ints(text: str | None) -> list[int] | None:
    """"1,2,3" -> [1, 2, 3]; None or "" -> None."""
    return [int(v) for v in text.split(",") if v.strip()] if text else None


# ---------------------------------------------------------------------- toy clips
def toy_clips(folder: Path, count: int, seed: int, num_objects: Sequence[int]) -> list[dict[str, Any]]:
    """Generate a toy dataset in `folder` (the on-disk format users bring) and read it back: frames from
    the videos, tracks / visibility / labels from the ground-truth files."""
    from motionguide.toy import load_ground_truth, make_dataset
    from motionguide.video import read_video

    make_dataset(folder, count, seed, num_objects=tuple(num_objects), fmt=("jsonl",), progress=False)
    clips = []
    for line in (folder / "metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        gt = load_ground_truth(folder / row["gt_file"])
        clips.append({
            "id": row["id"], "caption": row["text"], "frames": read_video(folder / row["file_name"]),
            "tracks": gt["tracks"], "visibility": gt["visibility"], "background": gt["labels"]["background"],
            "motions": [o["motion"] for o in gt["labels"]["objects"]],
        })
    return clips


def describe_clips(clips: Sequence[dict[str, Any]]) -> str:
    """One line on what the clips contain, so a table says what it was measured on."""
    plain = sum(c["background"] == "plain" for c in clips)
    moving = sum(any(m != "still" for m in c["motions"]) for c in clips)
    shape = clips[0]["frames"].shape if clips else (0, 0, 0)
    return (f"{len(clips)} toy clips ({shape[0]}x{shape[1]}x{shape[2]}): {plain} plain / {len(clips) - plain} "
            f"textured backgrounds; {moving} with a moving object, {len(clips) - moving} with still objects only")


# ---------------------------------------------------------------------- statistics and tables
def paired_bootstrap(before: Sequence[float], after: Sequence[float], resamples: int = 10000,
                     seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean of after - before over pairs and a percentile bootstrap CI that resamples whole pairs
    (so per-pair effects like prompt difficulty cancel). Pairs with a NaN on either side are dropped."""
    diff = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "pairs": 0}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "pairs": int(diff.size)}


def bootstrap_ratio(numerator: Sequence[float], denominator: Sequence[float], resamples: int = 10000,
                    seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """sum(numerator) / sum(denominator) with a paired percentile bootstrap CI (e.g. guided ÷ unguided time)."""
    num, den = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(resamples, num.size))
    ratios = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    return {"ratio": float(num.sum() / den.sum()), "low": float(low), "high": float(high)}


#: two-sided 95% Student t quantiles t_{0.975, df}; a df between keys uses the next smaller key (wider interval)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean over independent units (world seeds, pools) with its 95% Student t interval: the spread between
    seeds, not between clips, is what a claim about data the project never saw has to survive. NaNs dropped;
    one unit gives no interval."""
    if level != 0.95:
        raise ValueError("t_interval tables the 95% quantiles only")
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if x.size == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    if x.size == 1:
        return {"mean": float(x[0]), "low": float("nan"), "high": float("nan"), "n": 1}
    df = x.size - 1
    quantile = T975[max(k for k in T975 if k <= df)] if df <= 120 else 1.959964
    half = quantile * x.std(ddof=1) / np.sqrt(x.size)
    return {"mean": float(x.mean()), "low": float(x.mean() - half), "high": float(x.mean() + half), "n": int(x.size)}


def fmt_interval(stat: dict[str, float], digits: int = 2, percent: bool = False, signed: bool = False) -> str:
    """"0.57 [0.54, 0.60]" (or percents); the interval left out where there is none."""
    scale, unit = (100.0, "%") if percent else (1.0, "")
    digits = 0 if percent else digits
    sign = "+" if signed else ""

    def one(v: float) -> str:
        return f"{v * scale:{sign}.{digits}f}{unit}"

    if not np.isfinite(stat["mean"]):
        return "–"
    if not (np.isfinite(stat.get("low", np.nan)) and np.isfinite(stat.get("high", np.nan))):
        return one(stat["mean"])
    return f"{one(stat['mean'])} [{one(stat['low'])}, {one(stat['high'])}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    """A number for a table; NaN / None as an en dash."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.{digits}f}{suffix}"
