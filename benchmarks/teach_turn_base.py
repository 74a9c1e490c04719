"""The "before" number of teaching a new motion: does the shipped toy model turn when asked?

The toy model was trained on straight motions only. A turn ("a red circle moves right then left") is made of words
it knows, in a composition it never saw. This samples every held-out turn prompt (colour x shape x direction pair,
the set no turn pool or query set shows) with the model's own sampling defaults, several seeds each, and scores each
video with the turn-success metric (both legs of the prompted object's track read the prompted directions; the turn
frame is not assumed). Alongside, the same metric on clips the toy world renders for the same prompts (a turn must
score, its straight first leg must not) shows that a miss is the model's, not the metric's.

    python benchmarks/teach_turn_base.py [--seeds 3 --threads 1]   # 108 videos, ~4-10 min at one thread
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import _teach_turn as tt
import _toy_eval as ev
from _common import limit_threads

from motionguide.cli_args import ArgumentParser
from motionguide.metrics.turns import toy_turn_adherence
from motionguide.sampling import generate_videos
from motionguide.toy.render import render_clip
from motionguide.toy.sampling import sample_clip_spec


def parse_args():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    ev.add_common_args(parser)
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds per prompt")
    parser.add_argument("--first_seed", type=int, default=0, help="seeds are first_seed .. first_seed + seeds - 1")
    parser.add_argument("--limit", type=int, default=0, help="only the first N held-out prompts (smoke runs)")
    parser.add_argument("--world_seed", type=int, default=0,
                        help="seed of the world clips rendered to check the metric on the same prompts")
    return parser.parse_args()


def metric_check(prompts, seed: int) -> dict:
    """The turn metric on rendered clips of every prompt's turn (should all pass) and of its first leg going
    straight over the whole clip (should all fail)."""
    rng = np.random.default_rng(seed)
    turns, straights = [], []
    for p in prompts:
        turn = render_clip(sample_clip_spec(rng, 1, turns=[(p["color"], p["shape"], p["first"], p["second"])]))
        straight = render_clip(sample_clip_spec(rng, 1, combinations=[(p["color"], p["shape"], p["first"])],
                                                partial_motion_rate=0.0))
        turns.append(toy_turn_adherence(turn.frames, p["prompt"])[0].success)
        straights.append(toy_turn_adherence(straight.frames, p["prompt"])[0].success)
    return {"rendered_turns_pass": float(np.mean(turns)), "rendered_straight_first_legs_pass": float(np.mean(straights)),
            "clips_each": len(prompts)}


def main() -> None:
    args = parse_args()
    limit_threads(args.threads)
    prompts = tt.heldout_turn_prompts()
    if args.limit:
        prompts = prompts[: args.limit]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    pipe, backbone = ev.load_model(args.model)
    settings = ev.sampling_settings(args.model, max_sequence_length=args.max_sequence_length)
    token_px = backbone.pixels_per_token

    rows, started = [], time.perf_counter()
    for index, prompt in enumerate(prompts):
        for video in generate_videos(pipe, [prompt["prompt"]], seeds, settings, progress=False):
            rows.append({**prompt, "seed": video["seed"], **tt.score_turn_video(video["frames"], prompt, token_px)})
        done = sum(r["success"] for r in rows)
        print(f"[{index + 1}/{len(prompts)}] {prompt['prompt']}: {done}/{len(rows)} turns so far", flush=True)
    minutes = (time.perf_counter() - started) / 60

    summary = tt.success_summary(rows)
    check = metric_check(prompts, args.world_seed)
    pairs = sorted({(r["first"], r["second"]) for r in rows})
    per_pair = {f"{a} then {b}": float(np.mean([r["success"] for r in rows if (r["first"], r["second"]) == (a, b)]))
                for a, b in pairs}
    per_seed = {seed: float(np.mean([r["success"] for r in rows if r["seed"] == seed])) for seed in seeds}
    first_legs = Counter(r["first_leg"] for r in rows)

    boot = summary["prompt_bootstrap_95"]
    wilson = summary["wilson_95"]
    md = [
        f"Base toy model on {len(prompts)} held-out turn prompts (colour x shape x direction pair) x {len(seeds)} seeds "
        f"= {len(rows)} videos ({settings.steps} steps, CFG {settings.cfg:g}, the model's sampling defaults; "
        f"{minutes:.1f} min at {args.threads or 'default'} thread(s)).",
        "",
        ev.markdown_table(["measure", "value"], [
            ["**turn success** (both legs right)", f"**{summary['success_rate']:.1%}** ({summary['successes']}/{len(rows)})"],
            ["95% CI, Wilson over videos", f"[{wilson[0]:.1%}, {wilson[1]:.1%}]"],
            ["95% CI, bootstrap over prompts", f"[{boot['low']:.1%}, {boot['high']:.1%}]"],
            ["first leg reads the first direction", f"{summary['first_leg_right']:.0%}"],
            ["second leg reads the second direction", f"{summary['second_leg_right']:.0%}"],
            ["prompted object present in >= 80% of frames", f"{summary['present_in_80pct_frames']:.0%}"],
            ["metric on rendered turns of the same prompts (should pass)", f"{check['rendered_turns_pass']:.0%}"],
            ["metric on their rendered straight first legs (should fail)",
             f"{check['rendered_straight_first_legs_pass']:.0%}"],
        ]),
        "",
        "What the model does instead (whole-clip reading of each video):",
        "",
        ev.markdown_table(["outcome", "videos"], [[k, v] for k, v in summary["outcomes"].items()]),
        "",
        "Turn success per direction pair: " + ", ".join(f"{k} {v:.0%}" for k, v in per_pair.items()) + ".",
    ]
    ev.write("teach_turn_base", {
        "settings": {**vars(args), "steps": settings.steps, "cfg": settings.cfg,
                     "max_sequence_length": settings.max_sequence_length, "seeds_used": seeds},
        "summary": summary, "metric_check": check, "per_pair": per_pair, "per_seed": per_seed,
        "first_leg_counts": {str(k): v for k, v in first_legs.items()}, "minutes": minutes, "rows": rows,
    }, "\n".join(md), args.results_dir)


if __name__ == "__main__":
    main()
