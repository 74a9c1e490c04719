"""Teach the toy model turns: which clips of a noisy pool should a LoRA train on? (issue 16, items 3-4)

Arms, all with the same LoRA settings and steps, each trained on a dataset folder holding its clips only:
  base          the shipped model, no fine-tune
  motive        Motive's top --fraction of the turn pool (the paper's motion-weighted loss, motion mask on),
                queries: clean turn clips (`make_turn_queries`)
  motive_tdiff  the same pass with the temporal-difference loss (a deviation from the paper)
  random        a seeded random --fraction of the pool
  full          the whole pool
  keyword       the clips whose caption says "then <direction>" (what a user tries first)
  oracle        the pool's clean turn clips, read from its truth table (the ceiling)
Curation quality per arm: precision / recall of the clean turn clips in its selection, against the truth table.

Metrics on every held-out turn prompt (colour x shape x direction pair never in a pool) x --seeds: turn success,
object presence, flow-warp smoothness; forgetting: direction accuracy on the model's held-out straight prompts
(the old motions), base minus arm. Paired bootstrap CIs between arms resample (prompt, seed) pairs.

Evidence hygiene (issue 16, item 8): the LoRA defaults below were chosen with `teach_turn_settings.py` on world
seed 0 (the oracle arm only); report with --world_seed 1 (or others), data nothing was chosen on. Caveat measured
there: with every LoRA setting tried the oracle does not learn the turn on the toy model (README, "Teaching a new
motion"), so until the toy model can carry a turn this benchmark cannot show a curation effect. The toy model reads
a caption as a set of words ("right then up" = "up then right"), so --pairs defaults to one_order (one order per
direction pair); `teach_turn_diagnose.py` measures this and what else stands in the way. Every arm trains with the
same --pairs / --steps / --batch / --lr / --rank / --motion_loss_weight; their defaults live in one place,
`motionguide.toy.turns.TURN_FINE_TUNE`.

--guidance_monitor adds issue 16's item 5 on the motive arm: the IMAP monitor on "then" and the second direction
during its fine-tune (probe clips of its selection captioned with that turn; pointing game and IoU against the toy
world's object masks at every probe step), and its LoRA sampled again with correspondence guidance on the same
prompts and seeds (turn success, jerk at the turn, colour drift, shape consistency; paired guided - unguided CIs).

Cost at the defaults (one thread): 6 fine-tunes x 1000 steps (~4-5 min each unloaded), two Motive passes over
606 clips, and 7 arms x (36 turn + 25 straight prompts) x 3 seeds videos at ~6 s each (~2 h in all); use
--prompts / --straight_prompts / --seeds / --arms for a smaller run.

    python benchmarks/teach_turn.py --world_seed 1 --threads 1 [--guidance_monitor]  # the benchmark
    python benchmarks/teach_turn.py --quick --results_dir /tmp/res --work /tmp/w # tiny end-to-end run (a test)
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import _teach_turn as tt
import _toy_eval as ev
from _common import limit_threads
from _motive import work_folder

from motionguide.cli_args import ArgumentParser
from motionguide.toy.turn_pool import load_truth
from motionguide.toy.turns import PAIR_SETS, TURN_FINE_TUNE, mentions_turn, pair_set, turn_monitor_probes

ARMS = ("base", "motive", "motive_tdiff", "random", "full", "keyword", "oracle")
#: Motive's loss per Motive arm
MOTIVE_LOSSES = {"motive": "motion_weighted", "motive_tdiff": "temporal_difference"}
#: the comparisons the issue's goals name (first minus second), paired over prompt x seed
COMPARISONS = (("motive", "random"), ("motive", "keyword"), ("motive", "oracle"), ("motive", "base"),
               ("motive_tdiff", "random"), ("motive_tdiff", "motive"), ("keyword", "random"), ("oracle", "base"),
               ("random", "base"), ("full", "base"), ("keyword", "base"))
#: a tiny setting that runs every arm end to end in about a minute (a structure test, not evidence)
QUICK = {"pool": 120, "queries": 3, "steps": 2, "batch": 2, "prompts": 2, "straight_prompts": 2, "seeds": 1,
         "sample_steps": 2, "boot": 200}


def parse_args():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    ev.add_common_args(parser)
    parser.add_argument("--world_seed", type=int, default=1,
                        help="turn pool seed (settings were chosen on 0: report on others)")
    parser.add_argument("--query_seed", type=int, default=101, help="query set seed")
    parser.add_argument("--pairs", default=TURN_FINE_TUNE["pairs"], choices=sorted(PAIR_SETS),
                        help="direction pairs of the pool's and queries' turns and of the held-out prompts: all 12 "
                             "orders, or one_order (one order per pair; README, 'Teaching a new motion')")
    parser.add_argument("--pool", type=int, default=600, help="clips in the turn pool")
    parser.add_argument("--queries", type=int, default=6, help="clean turn query clips for Motive")
    parser.add_argument("--fraction", type=float, default=0.1, help="Motive / random share of the pool")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms to run")
    # every arm trains with these; their defaults live in motionguide.toy.turns.TURN_FINE_TUNE
    parser.add_argument("--steps", type=int, default=TURN_FINE_TUNE["steps"],
                        help="training steps, equal for every arm")
    parser.add_argument("--batch", type=int, default=TURN_FINE_TUNE["batch"], help="training batch")
    parser.add_argument("--lr", type=float, default=TURN_FINE_TUNE["lr"], help="LoRA learning rate")
    parser.add_argument("--rank", type=int, default=TURN_FINE_TUNE["rank"], help="LoRA rank (alpha = rank)")
    parser.add_argument("--motion_loss_weight", type=float, default=TURN_FINE_TUNE["motion_loss_weight"],
                        help="weight of the moving latent pixels in every arm's loss (Motive's motion mask; 1: off)")
    parser.add_argument("--train_seed", type=int, default=0, help="LoRA init / batch order / random-arm seed")
    parser.add_argument("--prompts", type=int, default=0, help="first N held-out turn prompts (0 = all 36)")
    parser.add_argument("--straight_prompts", type=int, default=0,
                        help="first N held-out straight prompts for forgetting (0 = all)")
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds per prompt")
    parser.add_argument("--sample_steps", type=int, default=None, help="default: the model's sampling default")
    parser.add_argument("--boot", type=int, default=10000, help="bootstrap resamples")
    parser.add_argument("--work", default=None, help="pools, passes, caches, LoRAs (reused on a rerun); "
                                                     "default: a temporary folder")
    parser.add_argument("--guidance_monitor", action="store_true",
                        help="issue 16 item 5 on top of the motive arm: the IMAP monitor on 'then' and the second "
                             "direction during its fine-tune (localisation against the object masks over training), "
                             "and its LoRA sampled again with correspondence guidance (paired guided - unguided)")
    parser.add_argument("--imap_every", type=int, default=0,
                        help="IMAP probe interval in steps (0: a tenth of --steps, at least 1)")
    parser.add_argument("--imap_probes", type=int, default=4, help="IMAP probe clips (from the motive selection)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny end-to-end run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)  # explicit flags still win over the quick setting
    args = parser.parse_args()
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown:
        parser.error(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}")
    if not (math.isfinite(args.motion_loss_weight) and args.motion_loss_weight >= 1):
        parser.error(f"--motion_loss_weight {args.motion_loss_weight} must be a finite number >= 1 (1: off)")
    return args


def motive_selection(args, pool: Path, queries: Path, work: Path, loss: str) -> list[str]:
    """Motive's selected ids (the pass is reused when its selection is already in `work`)."""
    from motionguide.motive import MotiveConfig, run_attribution

    out = work / f"motive_{loss}"
    cfg = MotiveConfig(model=args.model, data=str(pool), queries=str(queries), out=str(out),
                       latent_cache_dir=str(work / "motive-cache"), max_sequence_length=args.max_sequence_length,
                       fraction=args.fraction, seed=args.train_seed, loss=loss, report=False)
    stamp = out / "benchmark_config.json"
    if not ((out / "selection.json").is_file() and stamp.is_file() and stamp.read_text() == json.dumps(vars(cfg))):
        run_attribution(cfg, progress=False)
        stamp.write_text(json.dumps(vars(cfg)))
    return json.loads((out / "selection.json").read_text())["selected_ids"]


def selections(args, pool: Path, queries: Path, work: Path, truth: list[dict]) -> dict[str, list[str]]:
    """Each fine-tuned arm's clip ids."""
    ids = [r["id"] for r in truth]
    count = max(1, int(round(args.fraction * len(ids))))
    chosen = {}
    for arm in args.arms:
        if arm in MOTIVE_LOSSES:
            chosen[arm] = motive_selection(args, pool, queries, work, MOTIVE_LOSSES[arm])
        elif arm == "random":
            rng = np.random.default_rng(args.train_seed)
            chosen[arm] = [ids[i] for i in sorted(rng.choice(len(ids), size=count, replace=False))]
        elif arm == "full":
            chosen[arm] = list(ids)
        elif arm == "keyword":
            chosen[arm] = [r["id"] for r in truth if mentions_turn(r["caption"])]
        elif arm == "oracle":
            chosen[arm] = [r["id"] for r in truth if r["clean_turn"]]
    return chosen


def paired(rows_a: list[dict], rows_b: list[dict], key: str, resamples: int) -> dict:
    """a - b over (prompt, seed) pairs (rows are in the same order for every arm; checked)."""
    if [(r["prompt"], r["seed"]) for r in rows_a] != [(r["prompt"], r["seed"]) for r in rows_b]:
        raise AssertionError("arms were sampled on different prompt x seed grids; they cannot be paired")
    return ev.paired_bootstrap([float(r[key]) for r in rows_b], [float(r[key]) for r in rows_a],
                               resamples=resamples)


def arm_metrics(rows: dict[str, list[dict]], base_rows: dict[str, list[dict]] | None) -> dict:
    turn, straight = rows["turn"], rows["straight"]
    out = {"turn": tt.success_summary(turn) if turn else {},
           "presence_mean": float(np.mean([r["presence"] for r in turn])) if turn else float("nan"),
           "smoothness_mean": float(np.nanmean([r["smoothness"] for r in turn])) if turn else float("nan"),
           "straight_direction_accuracy": (float(np.mean([r["direction_correct"] for r in straight]))
                                           if straight else float("nan"))}
    if base_rows is not None and straight:
        base = float(np.mean([r["direction_correct"] for r in base_rows["straight"]]))
        out["forgetting_points"] = 100.0 * (base - out["straight_direction_accuracy"])
    return out


#: what guided - unguided compares on the motive LoRA's turn videos (paired over prompt x seed)
GUIDANCE_MEASURES = (("success", "turn success"), ("jerk_at_turn", "jerk at the turn (px/frame²)"),
                     ("trajectory_jerk", "jerk over the clip (px/frame²)"), ("colour_drift", "colour drift (RGB)"),
                     ("shape_consistency", "shape consistency (IoU)"), ("presence", "presence"))


def imap_options(args, truth: list[dict], selected: list[str]) -> tuple[dict | None, dict]:
    """The IMAP monitor's options for the motive fine-tune: probes are selected clips whose caption says a turn
    (clean turns first, one second direction), words "then" and that direction, masks the toy world's object
    masks (pointing game and IoU over training)."""
    probes, words = turn_monitor_probes(truth, selected, args.imap_probes)
    if not probes:
        return None, {"skipped": "no clip of the motive selection is captioned with a turn"}
    every = args.imap_every or max(1, args.steps // 10)
    options = {"every": every, "probe_ids": probes, "words": words, "masks_fn": "motionguide.toy.truth:clip_masks_fn"}
    by_id = {r["id"]: r for r in truth}
    return options, {"options": options, "probes": [{"id": i, "caption": by_id[i]["caption"],
                                                     "clean_turn": by_id[i]["clean_turn"]} for i in probes]}


def imap_history(lora: Path) -> list[dict]:
    """The monitor's scalars per probe step (entropy, pointing game, IoU per word; head stability)."""
    path = lora / "imap" / "history.json"
    return json.loads(path.read_text())["history"] if path.is_file() else []


def guidance_summary(unguided: list[dict], guided: list[dict], resamples: int) -> dict:
    """Means of each measure guided and unguided, and the paired guided - unguided difference with its CI."""
    out = {}
    for key, _ in GUIDANCE_MEASURES:
        a = [float(r[key]) for r in unguided]
        b = [float(r[key]) for r in guided]
        out[key] = {"unguided": float(np.nanmean(a)) if np.isfinite(a).any() else float("nan"),
                    "guided": float(np.nanmean(b)) if np.isfinite(b).any() else float("nan"),
                    "difference": paired(guided, unguided, key, resamples)}
    return out


def on_top_markdown(guided: dict | None, monitor: dict | None) -> str:
    """Tables for --guidance_monitor ('' without it)."""
    md = [""] if guided or monitor else []
    if guided:
        rows = [[label, ev.fmt(guided[key]["unguided"], 3), ev.fmt(guided[key]["guided"], 3),
                 f"{guided[key]['difference']['mean']:+.3f} [{guided[key]['difference']['low']:+.3f}, "
                 f"{guided[key]['difference']['high']:+.3f}] (n={guided[key]['difference']['pairs']})"]
                for key, label in GUIDANCE_MEASURES]
        md += ["", "Correspondence guidance on the motive LoRA (same turn prompts and seeds; the jerk at the turn is "
               "read within 2 frames of the apex the turn metric found):", "",
               ev.markdown_table(["measure", "unguided", "guided", "guided − unguided [95% paired CI]"], rows)]
    if monitor:
        if "skipped" in monitor:
            md += ["", f"IMAP monitor: skipped ({monitor['skipped']})."]
        else:
            words = monitor["options"]["words"]
            keys = [f"saliency/{w}/{m}" for w in words for m in ("pointing_game", "iou")]
            table = [[str(e["step"])] + [ev.fmt(e.get(k), 3) for k in keys] for e in monitor["history"]]
            md += ["", f"IMAP monitor during the motive fine-tune: words {', '.join(repr(w) for w in words)} on "
                   f"{len(monitor['probes'])} probe clips of its selection (clean turns first); localisation against "
                   "the toy world's object masks per latent frame (pointing game, IoU):", "",
                   ev.markdown_table(["step"] + [k.replace("saliency/", "") for k in keys], table)]
    return "\n".join(md)


def markdown(args, truth_summary, quality, training, metrics, diffs, minutes, n_turn, n_straight) -> str:
    pct = lambda v: "–" if v is None or not np.isfinite(v) else f"{v:.0%}"  # noqa: E731
    rows = []
    for arm in args.arms:
        m, q = metrics[arm], quality.get(arm)
        turn = m["turn"]
        rows.append([
            f"**{arm}**" if arm == "motive" else arm,
            q["selected"] if q else "–", pct(q["precision"]) if q else "–", pct(q["recall"]) if q else "–",
            f"{pct(turn['success_rate'])} [{pct(turn['wilson_95'][0])}, {pct(turn['wilson_95'][1])}]",
            pct(turn["first_leg_right"]), pct(turn["second_leg_right"]), f"{m['presence_mean']:.2f}",
            ev.fmt(m["smoothness_mean"], 3), pct(m["straight_direction_accuracy"]),
            ev.fmt(m.get("forgetting_points"), 1),
        ])
    table = ev.markdown_table(["arm", "clips", "precision", "recall", "turn success [Wilson 95%]", "1st leg",
                               "2nd leg", "presence", "smoothness", "straight dir. acc.", "forgetting (pts)"], rows)
    diff_rows = [[f"{a} − {b}", f"{d['turn_success']['mean']:+.1%} [{d['turn_success']['low']:+.1%}, "
                  f"{d['turn_success']['high']:+.1%}]",
                  (f"{d['straight_direction']['mean']:+.1%} [{d['straight_direction']['low']:+.1%}, "
                   f"{d['straight_direction']['high']:+.1%}]") if "straight_direction" in d else "–"]
                 for (a, b), d in ((tuple(k.split(" - ")), v) for k, v in diffs.items())]
    return "\n".join([
        f"Turn pool of world seed {args.world_seed}: {truth_summary['clips']} clips, {truth_summary['clean_turns']} "
        f"clean turns (direction pairs: {args.pairs}); queries seed {args.query_seed} ({args.queries} clean turns). "
        f"LoRA r={args.rank}, lr "
        f"{args.lr:g}, {args.steps} steps x batch {args.batch}, motion loss weight {args.motion_loss_weight:g} for "
        f"every arm (settings chosen on world seed 0 with "
        f"`teach_turn_settings.py`); {n_turn} held-out turn prompts and {n_straight} held-out straight prompts x "
        f"{args.seeds} seeds per arm; {minutes:.1f} min at {args.threads or 'default'} thread(s)."
        + (" **--quick: a structure run, not evidence.**" if args.quick else ""),
        "", table, "",
        f"Paired differences (prompt x seed pairs, {args.boot} bootstrap resamples, 95%):", "",
        ev.markdown_table(["arms", "turn success", "straight direction accuracy"], diff_rows),
    ])


def main() -> None:
    args = parse_args()
    limit_threads(args.threads)
    if args.max_sequence_length is None:
        args.max_sequence_length = ev.sampling_settings(args.model).max_sequence_length
    work, temporary = work_folder(args.work, "mg-teach-turn-")
    started = time.perf_counter()
    try:
        pairs = pair_set(args.pairs)
        pool, queries = tt.turn_sets(work, args.world_seed, args.pool, args.query_seed, args.queries, args.pairs)
        truth = load_truth(pool)
        from motionguide.toy.turn_pool import pool_summary
        truth_summary = pool_summary(truth)

        chosen = selections(args, pool, queries, work, truth)
        quality = {arm: tt.selection_quality(ids, truth) for arm, ids in chosen.items()}
        training, monitor = {}, None
        for arm, ids in chosen.items():
            data = pool if arm == "full" else tt.write_subset(pool, ids, work / "subsets" / arm)
            imap = None
            if arm == "motive" and args.guidance_monitor:
                imap, monitor = imap_options(args, truth, ids)
            training[arm] = tt.fine_tune_subset(
                args.model, data, work / "lora" / arm, work / "train-cache", steps=args.steps, batch=args.batch,
                lr=args.lr, rank=args.rank, seed=args.train_seed, max_sequence_length=args.max_sequence_length,
                motion_loss_weight=args.motion_loss_weight, imap=imap)
            if imap:
                monitor["history"] = imap_history(work / "lora" / arm)

        from motionguide.backbones import backbone_for
        from motionguide.sampling import load_pipeline

        turn_prompts = tt.heldout_turn_prompts(pairs=pairs)
        turn_prompts = turn_prompts[: args.prompts] if args.prompts else turn_prompts
        straight_prompts = tt.straight_heldout_prompts(args.model, args.straight_prompts)
        settings = ev.sampling_settings(args.model, steps=args.sample_steps,
                                        max_sequence_length=args.max_sequence_length)
        seeds = list(range(args.seeds))
        rows, sampling_seconds = {}, {}
        for arm in args.arms:
            tick = time.perf_counter()
            pipe = load_pipeline(args.model, lora=training[arm]["lora"] if arm in training else None)
            pipe.set_progress_bar_config(disable=True)
            rows[arm] = tt.evaluate_arm(pipe, turn_prompts, straight_prompts, seeds, settings,
                                        backbone_for(pipe).pixels_per_token)
            sampling_seconds[arm] = time.perf_counter() - tick
            print(f"{arm}: turn success {sum(r['success'] for r in rows[arm]['turn'])}/{len(rows[arm]['turn'])}",
                  flush=True)

        guided = None
        if args.guidance_monitor and "motive" in training:
            tick = time.perf_counter()
            pipe = load_pipeline(args.model, lora=training["motive"]["lora"])
            pipe.set_progress_bar_config(disable=True)
            guided_rows = tt.evaluate_arm(pipe, turn_prompts, [], seeds, settings, backbone_for(pipe).pixels_per_token,
                                          guidance="correspondence")["turn"]
            sampling_seconds["motive_guided"] = time.perf_counter() - tick
            guided = guidance_summary(rows["motive"]["turn"], guided_rows, args.boot)
            rows["motive_guided"] = {"turn": guided_rows, "straight": []}
            print(f"motive + guidance: turn success {sum(r['success'] for r in guided_rows)}/{len(guided_rows)}",
                  flush=True)

        metrics = {arm: arm_metrics(rows[arm], rows.get("base")) for arm in args.arms}
        diffs = {}
        for a, b in COMPARISONS:
            if a in rows and b in rows:
                d = {"turn_success": paired(rows[a]["turn"], rows[b]["turn"], "success", args.boot)}
                if rows[a]["straight"]:
                    d["straight_direction"] = paired(rows[a]["straight"], rows[b]["straight"], "direction_correct",
                                                     args.boot)
                diffs[f"{a} - {b}"] = d
        minutes = (time.perf_counter() - started) / 60
        ev.write("teach_turn", {
            "settings": {**vars(args), "sampling_steps": settings.steps, "cfg": settings.cfg, "seeds_used": seeds},
            "pool_truth_summary": truth_summary, "selection_quality": quality, "selections": chosen,
            "training": training, "metrics": metrics, "paired_differences": diffs,
            "guidance": guided, "imap_monitor": monitor, "pool_folder": pool.name,
            "sampling_seconds": sampling_seconds, "minutes": minutes, "rows": rows,
        }, markdown(args, truth_summary, quality, training, metrics, diffs, minutes, len(turn_prompts),
                    len(straight_prompts)) + on_top_markdown(guided, monitor), args.results_dir)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
