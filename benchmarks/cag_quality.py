"""CAG evidence: correspondence-guided vs unguided sampling on held-out toy prompts, and what it costs.

Every (prompt, seed) pair is sampled twice with the same seed: unguided (plain CFG) and guided
(`--guidance correspondence`, scale s, blocks from the shipped toy profile, --profile or --blocks; without
any, the middle half of the blocks, flagged in the table). The arms alternate which runs first, so machine
noise and warm-up hit both alike. Per video:
- temporal consistency: `flow_warp_smoothness` (neighbours warped onto each frame with DIS flow; 1 = perfect);
- object consistency (`object_consistency`): the prompted object's colour drift, shape consistency (aligned
  mask IoU of consecutive frames) and centroid trajectory jerk (px / frame^2);
- temporal flicker: `temporal_flicker` (1 = no frame-to-frame change);
- dynamic degree: motion amount (mean DIS flow magnitude, px / frame) and the VBench-rule proxy (fraction of
  videos called dynamic), a guard: freezing the video would "improve" the consistency scores;
- toy prompt adherence: presence (fraction of frames the prompted colour is found) and direction accuracy.
Each with the mean guided - unguided difference and a paired bootstrap 95% CI (resampling prompt-seed pairs),
plus the cost ratio guided / unguided wall time of the whole sampling call, measured in the same run.

Prompts: the held-out (colour, shape, motion) combinations of training_report.json at normal speed
(--all-speeds: slowly / normal / quickly); a fixed list for models without a report.

Real run (after the toy model and its profile exist; ~2 videos per prompt-seed pair, minutes on a CPU):
    python benchmarks/cag_quality.py --all-speeds --seeds 2
Smoke run on a tiny random pipeline:
    python benchmarks/cag_quality.py --model /tmp/tiny --prompts 2 --seeds 1 --steps 2 --blocks 0 \
        --max-sequence-length 16 --threads 1 --results-dir /tmp/results
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import _common
import _toy_eval as ev
import numpy as np

from motionguide.cli_args import ArgumentParser
from motionguide.correspondence import resolve_cag_settings
from motionguide.errors import ConfigError
from motionguide.metrics import (dynamic_degree_proxy, flow_warp_smoothness, mean_flow_magnitude, object_consistency,
                                temporal_flicker, toy_prompt_adherence)
from motionguide.sampling import generate_videos
from motionguide.toy import prompts_for_combinations

SPEEDS = ("slowly", "normal", "quickly")
#: used when the model has no training report (e.g. a tiny test pipeline): one per motion family
FALLBACK_COMBINATIONS = [("red", "circle", "left"), ("blue", "square", "up"), ("green", "triangle", "down-right"),
                         ("yellow", "circle", "right"), ("red", "square", "still"), ("blue", "triangle", "up-left")]
#: (key, label, digits) of the per-video metrics, in table order
METRICS = [
    ("smoothness", "temporal consistency (flow-warp smoothness, ↑)", 4),
    ("colour_drift", "object colour drift (RGB distance from its clip median, ↓)", 2),
    ("shape_consistency", "object shape consistency (aligned mask IoU of consecutive frames, ↑)", 3),
    ("trajectory_jerk", "centroid trajectory jerk (px / frame², ↓ = smoother)", 3),
    ("flicker", "temporal flicker score (↑ = steadier)", 4),
    ("motion_px", "dynamic degree: motion amount (mean DIS flow, px / frame)", 3),
    ("dynamic", "dynamic degree: VBench-rule proxy (fraction of videos dynamic)", 3),
    ("presence", "prompt adherence: object presence (fraction of frames)", 3),
    ("direction", "prompt adherence: direction correct (fraction of videos)", 3),
]


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    ev.add_common_args(parser)
    parser.add_argument("--scale", type=float, default=1.0, help="CAG scale s")
    parser.add_argument("--profile", default=None, help="layer profile (name or YAML); default the shipped one")
    parser.add_argument("--blocks", default=None, help="guidance blocks, e.g. '1,2,3' (overrides the profile)")
    parser.add_argument("--window", default=None, help="guidance window 'start,stop' in fractions of the steps "
                        "(overrides the profile), e.g. '0,0.5'")
    parser.add_argument("--prompts", type=int, default=0, help="use only the first N prompts (0 = all)")
    parser.add_argument("--all_speeds", action="store_true", help="every held-out combination at all 3 speeds")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt (the same for both arms)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: model's, 25 on the toy)")
    parser.add_argument("--cfg", type=float, default=None, help="CFG scale w (default: model's, 5 on the toy)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: model's, 17)")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples")
    parser.add_argument("--bootstrap_seed", type=int, default=0)
    parser.add_argument("--name", default="cag_quality", help="result file name")
    return parser.parse_args()


def heldout_prompts(model_dir: Path, all_speeds: bool) -> tuple[list[str], str]:
    """Held-out prompts of the training report, else the fixed fallback list; and where they came from."""
    report = model_dir / "training_report.json"
    combos = json.loads(report.read_text()).get("heldout_combinations") if report.is_file() else None
    source = "held-out combinations of training_report.json"
    if not combos:
        combos, source = FALLBACK_COMBINATIONS, "fixed fallback list (no held-out combinations in the model folder)"
    prompts = []
    for combo in combos:
        speeds = SPEEDS if all_speeds and combo[2] != "still" else ("normal",)
        prompts += [prompts_for_combinations([combo], speed=speed)[0] for speed in speeds]
    return prompts, source


def guidance_options(args: argparse.Namespace, backbone) -> tuple[dict, str]:
    """Options for `--guidance correspondence`, falling back to the middle half of the blocks when the
    model has no profile and none is given, so the benchmark still runs (and says so)."""
    blocks = ev.parse_ints(args.blocks)
    window = tuple(float(v) for v in args.window.split(",")) if args.window else None
    if args.profile is None and blocks is None and ev.find_profile(backbone, None) is None:
        blocks = ev.middle_half(backbone.num_blocks)
        return ({"scale": args.scale, "blocks": blocks, "window": window},
                "no profile: middle half of the blocks (provisional)")
    source = "--blocks" if blocks is not None else f"profile {ev.find_profile(backbone, args.profile).name}"
    return {"scale": args.scale, "profile": args.profile, "blocks": blocks, "window": window}, source


def video_metrics(frames: np.ndarray, prompt: str, token_px: int) -> dict[str, float]:
    adherence = toy_prompt_adherence(frames, prompt, token_px=token_px)[0]
    return {"smoothness": flow_warp_smoothness(frames), "flicker": temporal_flicker(frames),
            "motion_px": mean_flow_magnitude(frames), "dynamic": float(dynamic_degree_proxy(frames).is_dynamic),
            "presence": adherence.presence, "direction": float(adherence.direction_correct),
            **object_consistency(frames, prompt)}


def sample_pairs(pipe, prompts, seeds, settings, options, token_px) -> list[dict]:
    """Both arms for every (prompt, seed), alternating which goes first; metrics and seconds per video."""
    arms = {"unguided": ("none", None), "guided": ("correspondence", options)}
    # untimed warm-up of both arms (one step), so lazy initialisation is not billed to whichever runs first
    warm = dataclasses.replace(settings, steps=1)
    for guidance, opts in arms.values():
        generate_videos(pipe, prompts[:1], seeds[:1], warm, guidance=guidance, guidance_options=opts, progress=False)
    rows, order = [], list(arms)
    for prompt in prompts:
        for seed in seeds:
            row = {"prompt": prompt, "seed": seed, "first": order[0]}
            for arm in order:
                guidance, opts = arms[arm]
                start = time.perf_counter()
                video = generate_videos(pipe, [prompt], [seed], settings, guidance=guidance,
                                        guidance_options=opts, progress=False)[0]
                row[f"{arm}_seconds"] = time.perf_counter() - start
                row[arm] = video_metrics(video["frames"], prompt, token_px)
            rows.append(row)
            order.reverse()
    return rows


def main() -> None:
    args = parse_args()
    _common.limit_threads(args.threads)
    pipe, backbone = ev.load_model(args.model)
    settings = ev.sampling_settings(args.model, steps=args.steps, cfg=args.cfg, num_frames=args.frames,
                                    max_sequence_length=args.max_sequence_length)
    prompts, prompt_source = heldout_prompts(Path(args.model), args.all_speeds)
    prompts = prompts[: args.prompts] if args.prompts else prompts
    seeds = list(range(args.seeds))
    options, block_source = guidance_options(args, backbone)
    try:
        cag = resolve_cag_settings(backbone, **{k: v for k, v in options.items() if k != "scale"}, scale=args.scale)
    except ConfigError as exc:
        raise SystemExit(f"cannot set up correspondence guidance: {exc}")

    rows = sample_pairs(pipe, prompts, seeds, settings, options, backbone.pixels_per_token)
    boot = dict(resamples=args.resamples, seed=args.bootstrap_seed)
    summary, table = {}, []
    for key, label, digits in METRICS:
        unguided = [r["unguided"][key] for r in rows]
        guided = [r["guided"][key] for r in rows]
        diff = ev.paired_bootstrap(unguided, guided, **boot)
        summary[key] = {"unguided": float(np.nanmean(unguided)), "guided": float(np.nanmean(guided)),
                        "difference": diff}
        table.append([label, ev.fmt(summary[key]["unguided"], digits), ev.fmt(summary[key]["guided"], digits),
                      f"{diff['mean']:+.{digits}f} [{diff['low']:+.{digits}f}, {diff['high']:+.{digits}f}]"])
    seconds_u = [r["unguided_seconds"] for r in rows]
    seconds_g = [r["guided_seconds"] for r in rows]
    cost = ev.bootstrap_ratio(seconds_g, seconds_u, **boot)
    cost["median_pair_ratio"] = float(np.median(np.asarray(seconds_g) / np.asarray(seconds_u)))
    summary["cost"] = cost
    table.append(["sampling time per video (s)", ev.fmt(np.mean(seconds_u), 2), ev.fmt(np.mean(seconds_g), 2),
                  f"ratio guided ÷ unguided ×{cost['ratio']:.2f} [{cost['low']:.2f}, {cost['high']:.2f}]"])

    md = "\n".join([
        ev.markdown_table(["metric", "unguided", "guided", "difference guided − unguided [95% CI]"], table), "",
        f"{len(rows)} prompt-seed pairs ({len(prompts)} prompts from the {prompt_source} x {len(seeds)} seeds), "
        f"same seed in both arms, arms alternating which runs first. Paired bootstrap over pairs, "
        f"{args.resamples} resamples (seed {args.bootstrap_seed}); time = whole pipeline call incl. text encoding "
        f"and VAE decoding, median per-pair ratio ×{cost['median_pair_ratio']:.2f}.",
        f"CAG: s = {cag.scale:g}, blocks {list(cag.blocks)} ({block_source}), window {list(cag.window)}, "
        f"renormalize {cag.renormalize}; CFG w = {settings.cfg:g}, {settings.steps} steps, "
        f"{settings.num_frames}x{settings.height}x{settings.width}. Model: {args.model} ({backbone.family}, "
        f"{backbone.num_blocks} blocks x {backbone.num_heads} heads).",
    ])
    data = {"settings": vars(args), "sampling": dataclasses.asdict(settings),
            "cag": {**dataclasses.asdict(cag), "block_source": block_source}, "prompts": prompts,
            "prompt_source": prompt_source, "summary": summary, "rows": rows}
    ev.write(args.name, data, md, args.results_dir)


if __name__ == "__main__":
    main()
