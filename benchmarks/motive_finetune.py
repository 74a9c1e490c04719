"""Curated vs random vs full LoRA fine-tunes of the toy model: motion quality on held-out prompts (Table 1 in small).

What it measures. Three LoRA fine-tunes of `--model` with equal steps, batch and seed on the defect-laden pool
of motive_defects.py: (a) the Motive top 10% (its selection, or a fresh pass with the motion mask), (a') the top
10% of its temporal-difference pass (a deviation; when that pass is in --work), (b) a seeded random 10%
(`curation="random"`), (c) the full pool. Then the base model and each fine-tune sample the
same held-out prompts x seeds, and each video is scored with the toy-world direction check (measured
direction == prompted), the dynamic-degree proxy (VBench rule on OpenCV flow) and the flow-warp smoothness
proxy. Means carry 95% bootstrap intervals that resample prompts (all seeds of a prompt together, since
they are not independent), and the paired differences Motive - random / - full / - base use the same draws.

Prompts: the model's held-out (colour, shape, motion) triples that move (training_report.json), at every
speed; a model without a report uses a seeded sample of all moving triples. If the shipped model is at the
ceiling on direction accuracy the effect cannot show: pass a weaker ("motion-weak") checkpoint as --model
(e.g. one trained with fewer recipe steps) and say so next to the table.

Run for real (reuses motive_defects.py's pool, cache and selection when given its pool's folder and seeds,
e.g. `--work runs/motive-bench/pool_seed1 --seed 1 --query_seed 1001 --pool 200`; the committed results are
one pool, seed 0 with 500 clips, the pool the temporal-difference option was developed on):
    python benchmarks/motive_finetune.py --work runs/motive-bench
Smoke run on a tiny random pipeline:
    python benchmarks/motive_finetune.py --model /tmp/tiny --pool 12 --queries 3 --steps 2 --prompts 2 \
        --seeds 1 --sample_steps 2 --results_dir /tmp/res
Cost on the project's 2-core CPU, one thread (estimate from a random network of the toy model's size):
3 x 300 training steps of batch 4 at ~0.35 s (~5 minutes) plus 4 models x 225 videos (25 held-out moving
triples x 3 speeds x 3 seeds, 25 steps with CFG) at ~1.2 s each with metrics (~18 minutes): about 25
minutes, ~5 more if the attribution pass has to run first. Finished fine-tunes are reused on a rerun with
equal settings, and the JSON records training and sampling times.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from _common import machine, write_results
from _motive import DEFAULT_MODEL, heldout_of, load_pipeline, pool_and_queries, single_thread, work_folder

from motionguide.cli_args import ArgumentParser
from motionguide.motive import MotiveConfig, run_attribution
from motionguide.metrics import dynamic_degree_proxy, flow_warp_smoothness, toy_prompt_adherence
from motionguide.toy import all_combinations, prompts_for_combinations

#: arm -> TrainConfig.curation; "motive_tdiff" trains on the temporal-difference pass of motive_defects.py (a
#: deviation from the paper), when that pass's selection is in --work
ARMS = {"motive": "motive", "motive_tdiff": "motive", "random": "random", "full": "none"}
TDIFF_SELECTION = Path("pass_loss-temporal_difference") / "selection.json"
METRICS = ("direction_accuracy", "dynamic_degree", "smoothness")
SPEEDS = ("slowly", "normal", "quickly")


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--defect_rate", type=float, default=0.25)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--motion", default="right")
    parser.add_argument("--seed", type=int, default=0, help="pool, pass and training seed")
    parser.add_argument("--query_seed", type=int, default=1)
    parser.add_argument("--selection", default=None, help="a Motive selection.json (default: <work>/with_mask, "
                                                          "else a fresh pass)")
    parser.add_argument("--fraction", type=float, default=0.1, help="curated / random share of the pool")
    parser.add_argument("--steps", type=int, default=300, help="training steps, equal for every arm")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=0, help="use only N prompt triples (0 = all held-out)")
    parser.add_argument("--speeds", default=",".join(SPEEDS))
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds per prompt")
    parser.add_argument("--sample_steps", type=int, default=None, help="default: the model's sampling default")
    parser.add_argument("--cfg", type=float, default=None)
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--max_sequence_length", type=int, default=16)
    parser.add_argument("--work", default=None)
    parser.add_argument("--results_dir", default=None)
    return parser.parse_args()


def selection_path(args, pipe, pool: Path, queries: Path, work: Path) -> Path:
    """The Motive selection to train on: given, left by motive_defects.py in --work, or computed now."""
    if args.selection:
        return Path(args.selection)
    path = work / "with_mask" / "selection.json"
    pool_ids = {json.loads(line)["id"] for line in (pool / "metadata.jsonl").read_text().splitlines() if line}
    if path.is_file() and set(json.loads(path.read_text())["train_ids"]) <= pool_ids:
        return path
    cfg = MotiveConfig(model=args.model, data=str(pool), queries=str(queries), out=str(work / "with_mask"),
                       latent_cache_dir=str(work / "cache"), max_sequence_length=args.max_sequence_length,
                       fraction=args.fraction, seed=args.seed)
    run_attribution(cfg, progress=False, pipeline=pipe)
    return path


def fine_tune(args, arm: str, pool: Path, work: Path, selection: Path) -> dict:
    """One LoRA fine-tune (reused when a finished run with the identical config and selection is already there)."""
    from motionguide.training import TrainConfig, Trainer

    out = work / "finetune" / arm
    # a curation takes its own settings in its options; the random arm still reads the top-level fraction
    options = {"motive": {"selection": str(selection), "fraction": args.fraction}} if ARMS[arm] == "motive" else {}
    fraction = {} if options else {"curation_fraction": args.fraction}
    # Own cache folder: the Trainer trains on every clip of its cache folder, and the attribution pass's
    # cache also holds the query clips, which must not leak into the fine-tunes.
    cfg = TrainConfig(pretrained_model_name_or_path=args.model, output_dir=str(out), data_root=str(pool),
                      latent_cache_dir=str(work / "train-cache"), train_steps=args.steps, train_batch_size=args.batch,
                      learning_rate=args.lr, rank=args.rank, lora_alpha=float(args.rank), seed=args.seed,
                      max_sequence_length=args.max_sequence_length, checkpointing_steps=0, report_to="none",
                      logging_steps=max(1, args.steps), curation=ARMS[arm], method_options=options,
                      **fraction)
    summary_file, config_file = out / "train_summary.json", out / "train_config.json"
    start = time.perf_counter()
    stamp = out / "selection_used.json"  # the selection's content, so a rerun pass is not silently reused
    chosen = json.loads(selection.read_text())["selected_ids"] if options else None
    reused = (summary_file.is_file() and config_file.is_file() and json.loads(config_file.read_text()) == cfg.to_dict()
              and (not options or (stamp.is_file() and json.loads(stamp.read_text()) == chosen)))
    summary = json.loads(summary_file.read_text()) if reused else Trainer(cfg).run()
    if options:
        stamp.write_text(json.dumps(chosen))
    losses = [v for _, v in sorted(((int(k), v) for k, v in summary["losses"].items()))]
    tail = losses[-max(1, len(losses) // 10):]
    return {"lora": str(out), "clips": summary["clips"], "steps": summary["steps"],
            "final_loss_mean_last_10pct": float(np.mean(tail)), "reused": reused,
            "seconds": time.perf_counter() - start, "median_step_s": float(np.median(summary["step_times_s"]))}


def prompt_set(args) -> list[tuple[str, str]]:
    """(prompt, motion) pairs: held-out moving triples (else a seeded sample of moving ones) x speeds."""
    combos = [c for c in heldout_of(args.model) if c[2] != "still"]
    source = "heldout"
    if not combos:
        moving = [c for c in all_combinations() if c[2] != "still"]
        order = np.random.default_rng(args.seed).permutation(len(moving))
        combos, source = [moving[i] for i in order], "all moving (model has no held-out list)"
    if args.prompts:
        combos = combos[: args.prompts]
    args.prompt_source = source
    return [(prompts_for_combinations([c], speed=s)[0], c[2]) for c in combos for s in args.speeds.split(",")]


def score_videos(pipe, prompts, seeds, settings) -> dict[str, np.ndarray]:
    """Per-metric arrays [prompts, seeds]."""
    from motionguide.backbones import backbone_for
    from motionguide.sampling import generate_videos

    token_px = backbone_for(pipe).pixels_per_token
    videos = generate_videos(pipe, [p for p, _ in prompts], seeds, settings, progress=False)
    values = {m: np.zeros((len(prompts), len(seeds))) for m in METRICS}
    for i, video in enumerate(videos):
        p, s = divmod(i, len(seeds))
        frames = video["frames"]
        adherence = toy_prompt_adherence(frames, video["prompt"], token_px=token_px)[0]
        values["direction_accuracy"][p, s] = float(adherence.direction_correct)
        values["dynamic_degree"][p, s] = float(dynamic_degree_proxy(frames).is_dynamic)
        values["smoothness"][p, s] = flow_warp_smoothness(frames)
    return values


def target_subset(per_arm: dict, prompts: list[tuple[str, str]], motion: str) -> dict:
    """Direction accuracy on the prompts of the query motion only (None when no prompt has it)."""
    rows = [i for i, (_, m) in enumerate(prompts) if m == motion]
    if not rows:
        return {"prompts": 0}
    return {"prompts": len(rows), "direction_accuracy": {
        arm: float(v["direction_accuracy"][rows].mean()) for arm, v in per_arm.items()}}


def bootstrap(per_arm: dict[str, dict[str, np.ndarray]], n_boot: int, seed: int) -> dict:
    """Means with 95% intervals, resampling prompts (rows) with one shared draw so differences are paired."""
    n_prompts = next(iter(per_arm.values()))["smoothness"].shape[0]
    rows = np.random.default_rng(seed).integers(0, n_prompts, size=(n_boot, n_prompts))

    def summarize(values: np.ndarray) -> dict:
        draws = values[rows].mean(axis=(1, 2))
        lo, hi = np.percentile(draws, [2.5, 97.5])
        return {"mean": float(values.mean()), "ci95": [float(lo), float(hi)]}

    out = {"arms": {arm: {m: summarize(v[m]) for m in METRICS} for arm, v in per_arm.items()}, "differences": {}}
    for curated in ("motive", "motive_tdiff"):
        for other in ("random", "full", "base"):
            if curated in per_arm and other in per_arm:
                out["differences"][f"{curated} - {other}"] = {
                    m: summarize(per_arm[curated][m] - per_arm[other][m]) for m in METRICS}
    return out


def cell(s: dict, pct: bool) -> str:
    f = (lambda v: f"{v:.0%}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(s['mean'])} [{f(s['ci95'][0])}, {f(s['ci95'][1])}]"


def markdown(stats: dict, training: dict, args, n_prompts: int) -> str:
    lines = ["| model | clips | direction accuracy | dynamic degree | smoothness |", "|---|---|---|---|---|"]
    for arm, s in stats["arms"].items():
        clips = training[arm]["clips"] if arm in training else "–"
        lines.append(f"| {arm} | {clips} | {cell(s['direction_accuracy'], True)} | "
                     f"{cell(s['dynamic_degree'], True)} | {cell(s['smoothness'], False)} |")
    for name, s in stats["differences"].items():
        lines.append(f"| {name} | | {cell(s['direction_accuracy'], True)} | {cell(s['dynamic_degree'], True)} | "
                     f"{cell(s['smoothness'], False)} |")
    lines += ["", f"LoRA r={args.rank}, {args.steps} steps x batch {args.batch} for every arm (lr {args.lr}); "
              f"{n_prompts} prompts ({args.prompt_source}) x {args.seeds} seeds per model. Means with 95% "
              f"bootstrap intervals ({args.boot} resamples of prompts); difference rows are paired."]
    return "\n".join(lines)


def main() -> None:
    single_thread()
    args = parse_args()
    from motionguide.sampling import SamplingSettings
    from motionguide.sampling import load_pipeline as load_with_lora

    work, temporary = work_folder(args.work, "mg-motive-finetune-")
    try:
        pool, queries = pool_and_queries(args, work, args.pool)
        selection = selection_path(args, load_pipeline(args.model), pool, queries, work)
        selections = {"motive": selection, "motive_tdiff": work / TDIFF_SELECTION}
        training = {arm: fine_tune(args, arm, pool, work, selections.get(arm, selection)) for arm in ARMS
                    if arm != "motive_tdiff" or selections[arm].is_file()}
        prompts = prompt_set(args)
        seeds = list(range(args.seeds))
        settings = SamplingSettings.for_model(args.model, steps=args.sample_steps, cfg=args.cfg,
                                              max_sequence_length=args.max_sequence_length)
        per_arm, sampling_seconds = {}, {}
        for arm in ("base", *training):
            start = time.perf_counter()
            if arm == "base":
                pipe = load_pipeline(args.model)
            else:
                pipe = load_with_lora(args.model, lora=training[arm]["lora"])
            pipe.set_progress_bar_config(disable=True)
            per_arm[arm] = score_videos(pipe, prompts, seeds, settings)
            sampling_seconds[arm] = time.perf_counter() - start
        stats = bootstrap(per_arm, args.boot, args.seed)
        data = {"machine": machine(), "settings": vars(args), "selection": str(selection), "training": training,
                "prompts": [p for p, _ in prompts], "seeds": seeds, "sampling": vars(settings),
                "sampling_seconds": sampling_seconds, "stats": stats,
                "target_motion_prompts": target_subset(per_arm, prompts, args.motion),
                "per_video": {arm: {m: v[m].tolist() for m in METRICS} for arm, v in per_arm.items()}}
        write_results("motive_finetune", data, markdown(stats, training, args, len(prompts)),
                      results_dir=args.results_dir)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
