"""Does Motive find planted defects and pick clips of the query motion? With and without the motion mask.

What it measures (toy world, ground truth). A pool of clips (default 500, 25% planted defects spread evenly
over static / jitter / teleport / reversed / camera_pan; the model's held-out triples never appear) and a
query set of clean clips of one target motion (default 20 "moves right" clips, another seed). The Motive
pass runs on one shared latent cache with the motion mask (the method), with `use_mask=False` (the paper's
"w/o MM" baseline), at t = 500 instead of 751, and with the temporal-difference loss (a deviation: the change
of the prediction error between latent frames, so appearance errors cancel); one more pass scores the
same pool against clean queries of every direction (the paper's "generalist" set). For each pass:

* ROC-AUC of "defect" vs "clean" with defect score = -(mean score over the queries). Orientation: a
  defective clip should help the query motion less than a clean one, so a low mean score means "likely
  defective"; AUC 1.0 = every defect ranks below every clean clip, 0.5 = chance. Also per defect kind (that
  kind vs all clean clips). A diagnostic, without a goal: the paper claims the fine-tune outcome (curation
  helps a LoRA learn the motion), not defect detection.
* share of target clips (clean and captioned with the target motion) in the Motive top 10%, in a random 10%
  (seeded, mean over 100 draws) and in the whole pool; share of defects in the top 10%.
* diagnostics of the AUC, read from the stored features: the AUC within clips captioned with the target
  motion; a 5-fold ridge probe of defect vs clean on the features (supervised: an upper bound on what a linear
  direction of the features can tell apart); the cosine between the queries' mean feature and the direction
  from the defects' mean to the clean clips' mean; the median per-clip loss of each defect kind.

Several pools (`--pool_seeds`, each with its own query set, seed `--query_seed_offset` + pool seed): every
figure is reported per pool and as the mean over pools with a 95% Student t interval over pools. The defaults
(pools 1-4) leave out pool seed 0 / query seed 1, the pool on which the temporal-difference option and these
diagnostics were developed. Target share vs random: the one-sided p of the pool's selection among `--draws`
random selections of the same size.

Run for real (after the toy model exists; keeps data, cache and selections per pool in <work>/pool_seed<S>,
which motive_finetune.py reuses as its --work with --seed S):
    python benchmarks/motive_defects.py --work runs/motive-bench
Smoke run on a tiny random pipeline:
    python benchmarks/motive_defects.py --model /tmp/tiny --pool 12 --queries 3 --pool_seeds 1 --results_dir /tmp/res
Cost on the project's 2-core CPU, one thread: ~0.1 s per clip to render, ~0.3 s per clip for the first pass
(it also encodes the latent cache) and ~0.1 s per clip for each other pass: about 2 minutes per 200-clip pool.
The JSON records each pass's time.
"""

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import _toy_eval as ev
from _common import machine, write_results
from _motive import (DEFAULT_MODEL, is_target, load_pipeline, make_queries, pass_features, pool_and_queries,
                     read_metadata, single_thread, work_folder)

from motionguide.cli_args import ArgumentParser
from motionguide.motive import MotiveConfig, roc_auc, run_attribution
from motionguide.toy import DEFECTS
from motionguide.toy.vocab import MOTIONS

#: pass name -> AttributionConfig overrides; the first is the method as the paper specifies it
PASSES = {
    "with mask": {},
    "w/o MM": {"use_mask": False},
    "with mask, t = 500": {"timestep": 500.0},
    "temporal-difference loss (deviation)": {"loss": "temporal_difference"},
}
#: the paper's "generalist" query set in small: the with-mask pass against clean queries of every direction
EVERY_MOTION_PASS = "with mask, queries of every motion"
TDIFF_PASS = "temporal-difference loss (deviation)"


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--pool", type=int, default=200, help="clips in each training pool")
    parser.add_argument("--defect_rate", type=float, default=0.25)
    parser.add_argument("--queries", type=int, default=20, help="clean query clips of --motion")
    parser.add_argument("--motion", default="right", help="the target motion of the queries")
    parser.add_argument("--pool_seeds", default="1,2,3,4",
                        help="one pool per seed (also the pass's noise seed); 0 is the pool the options were "
                             "developed on")
    parser.add_argument("--query_seed_offset", type=int, default=1000,
                        help="each pool's query set has seed offset + pool seed")
    parser.add_argument("--every_motion_queries", type=int, default=48,
                        help="clean queries spread over every direction for one more pass (0: skip it)")
    parser.add_argument("--projector", default="fastfood_blockwise")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--draws", type=int, default=1000, help="random selections to compare with")
    parser.add_argument("--max_sequence_length", type=int, default=16)
    parser.add_argument("--work", default=None, help="keep data, cache and selections here (default: temp)")
    parser.add_argument("--results_dir", default=None, help="results folder (default benchmarks/results)")
    return parser.parse_args()


def detection(result: dict, meta: dict) -> dict:
    """ROC-AUC of defect vs clean from -(mean score), overall and per defect kind."""
    ids = result["train_ids"]
    score = -np.asarray(result["mean_score"], dtype=np.float64)
    kinds = np.array([meta[i]["defect"] for i in ids])
    defect = kinds != "none"
    out = {"auc": roc_auc(score, defect) if defect.any() and (~defect).any() else None, "per_kind": {}}
    for kind in DEFECTS:
        keep = (kinds == kind) | ~defect
        has_both = (kinds == kind).any() and (~defect).any()
        out["per_kind"][kind] = roc_auc(score[keep], defect[keep]) if has_both else None
    return out


def shares(result: dict, meta: dict, motion: str, draws: int, seed: int) -> dict:
    """Target-clip share in the selection vs random selections of the same size vs the pool."""
    ids = result["train_ids"]
    target = np.array([is_target(meta[i], motion) for i in ids])
    defect = np.array([meta[i]["defect"] != "none" for i in ids])
    chosen = np.isin(ids, result["selected_ids"])
    k = int(chosen.sum())
    rng = np.random.default_rng(seed)
    random = np.array([target[rng.choice(len(ids), k, replace=False)].mean() for _ in range(draws)])
    selected = float(target[chosen].mean())
    return {"k": k, "selected": selected, "random_mean": float(random.mean()),
            "p_random_at_least": float((1 + (random >= selected).sum()) / (1 + draws)),
            "random_sd": float(random.std()), "pool": float(target.mean()),
            "defects_in_selected": float(defect[chosen].mean()), "defects_in_pool": float(defect.mean())}


def score_groups(result: dict, meta: dict, motion: str) -> dict:
    """Mean of the per-clip mean score by group, to read what the ranking rewards."""
    groups: dict[str, list[float]] = {}
    for clip_id, score in zip(result["train_ids"], result["mean_score"]):
        row = meta[clip_id]
        name = row["defect"] if row["defect"] != "none" else ("clean target" if row["motion"] == motion
                                                             else "clean still" if row["motion"] == "still"
                                                             else "clean other")
        groups.setdefault(name, []).append(score)
    return {name: {"n": len(v), "mean_score": float(np.mean(v))} for name, v in sorted(groups.items())}


def ridge_probe_auc(features: np.ndarray, labels: np.ndarray, folds: int = 5, ridge: float = 1.0,
                    seed: int = 0) -> float:
    """Cross-validated AUC of a ridge read-out of the labels from the features: a supervised upper bound on
    what a linear direction of the feature space can tell apart (the method itself never sees the labels)."""
    fold = np.random.default_rng(seed).permutation(len(labels)) % folds
    out = np.zeros(len(labels))
    for k in range(folds):
        train, test = fold != k, fold == k
        x, y = features[train], labels[train] - labels[train].mean()
        weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
        out[test] = features[test] @ weights
    return roc_auc(out, labels.astype(bool))


def diagnostics(folder: str, meta: dict, motion: str) -> dict:
    """Why the AUC is what it is, read from the pass's stored features and per-clip records."""
    ids, train, records = pass_features(folder, "train")
    _, queries, _ = pass_features(folder, "query")
    defect = np.array([meta[i]["defect"] != "none" for i in ids])
    score = -(train @ queries.T).mean(axis=1)
    captioned = np.array([meta[i]["motion"] == motion for i in ids])
    # the direction from the defects' mean feature to the clean clips' mean feature, vs the queries' mean
    moving = np.linalg.norm(train, axis=1) > 0
    clean_minus_defect = train[~defect & moving].mean(0) - train[defect & moving].mean(0)
    query_mean = queries.mean(0)
    cosine = float(clean_minus_defect @ query_mean / (np.linalg.norm(clean_minus_defect) * np.linalg.norm(query_mean)))
    kinds = np.array([meta[i]["defect"] for i in ids])
    losses = np.array([r.get("loss", np.nan) for r in records], dtype=np.float64)
    return {"probe_auc": ridge_probe_auc(train, defect.astype(np.float64)),
            "query_direction_cosine": cosine,
            "auc_target_captioned": (roc_auc(score[captioned], defect[captioned])
                                     if (captioned & defect).any() and (captioned & ~defect).any() else None),
            "target_captioned_counts": [int((captioned & defect).sum()), int((captioned & ~defect).sum())],
            "median_loss": {k: float(np.nanmedian(losses[kinds == k])) for k in ("none", *DEFECTS)
                            if (kinds == k).any()}}


def over_pools(pools: dict[int, dict], name: str, get) -> dict:
    """t interval over pools of one number of one pass (`get(row)`; None where a pool lacks it)."""
    return ev.t_interval([get(rows[name]) for rows in pools.values() if name in rows])


def summary(pools: dict[int, dict]) -> dict:
    """Per pass: mean over pools with its t interval, for every figure the tables show."""
    figures = {
        "auc": lambda r: r["detection"]["auc"],
        **{f"auc_{k}": (lambda r, k=k: r["detection"]["per_kind"][k]) for k in DEFECTS},
        "target_share": lambda r: r["shares"]["selected"],
        "random_share": lambda r: r["shares"]["random_mean"],
        "pool_share": lambda r: r["shares"]["pool"],
        "target_minus_random": lambda r: r["shares"]["selected"] - r["shares"]["random_mean"],
        "defects_in_selected": lambda r: r["shares"]["defects_in_selected"],
        "defects_in_pool": lambda r: r["shares"]["defects_in_pool"],
        "zero_gradient_clips": lambda r: r["zero_gradient_clips"],
        "seconds": lambda r: r["seconds"],
        "auc_target_captioned": lambda r: r["diagnostics"]["auc_target_captioned"],
        "probe_auc": lambda r: r["diagnostics"]["probe_auc"],
        "query_direction_cosine": lambda r: r["diagnostics"]["query_direction_cosine"],
    }
    names = list(next(iter(pools.values())))
    return {name: {key: over_pools(pools, name, get) for key, get in figures.items()} for name in names}


def fmt(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.2f}"


def markdown(pools: dict[int, dict], stats: dict, args: argparse.Namespace) -> str:
    n = len(pools)
    head = ["pass", "ROC-AUC", *DEFECTS, "target share: top 10%", "random 10%", "top 10% − random",
            "defects in top 10%", "zero-grad clips", "pass time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, st in stats.items():
        lines.append("| " + " | ".join([
            name, ev.fmt_interval(st["auc"]), *(fmt(st[f"auc_{k}"]["mean"]) for k in DEFECTS),
            ev.fmt_interval(st["target_share"], percent=True), f"{st['random_share']['mean']:.0%}",
            ev.fmt_interval(st["target_minus_random"], percent=True, signed=True),
            f"{st['defects_in_selected']['mean']:.0%} (pool {st['defects_in_pool']['mean']:.0%})",
            f"{st['zero_gradient_clips']['mean']:.0f}", f"{st['seconds']['mean']:.0f}"]) + " |")
    seeds = ", ".join(str(p) for p in pools)
    lines += ["", f"{n} pools (seeds {seeds}) of {args.pool} clips ({args.defect_rate:.0%} planted defects), each "
              f"with its own {args.queries} clean '{args.motion}' queries (seed {args.query_seed_offset} + pool "
              f"seed); projector {args.projector} d={args.dim}, top {args.fraction:.0%} by majority vote. Mean over "
              f"pools [95% Student t interval over the {n} pools]; per-kind columns (that kind vs all clean clips), "
              "random share, defects, zero-gradient clips and time: means over pools. Defect score = -(mean score "
              f"over queries). Target share: clean clips captioned '{args.motion}'; random: mean of {args.draws} "
              "seeded random selections of the same size. Pass time includes encoding the latent cache for the "
              "first pass of a pool. "]
    if EVERY_MOTION_PASS in stats:
        lines[-1] += (f"The last pass scores each pool against {args.every_motion_queries} clean queries spread "
                      "over the eight directions (the paper's generalist set), so its target share is not comparable.")
    # per pool: the two passes a user would pick between
    shown = [p for p in (next(iter(PASSES)), TDIFF_PASS) if p in stats]
    head = ["pool seed", *(f"{p}: {col}" for p in shown for col in ("ROC-AUC", "target share (random; p)"))]
    lines += ["", "Per pool:", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for seed, rows in pools.items():
        cells = [str(seed)]
        for p in shown:
            sh = rows[p]["shares"]
            cells += [fmt(rows[p]["detection"]["auc"]),
                      f"{sh['selected']:.0%} ({sh['random_mean']:.0%}; p = {sh['p_random_at_least']:.3f})"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"p: share of the {args.draws} random selections whose target share is at least the top 10%'s "
              "(one-sided, +1 smoothed)."]
    return "\n".join(lines)


def diagnostics_markdown(pools: dict[int, dict], stats: dict, motion: str) -> str:
    head = ["pass", "ROC-AUC", f"AUC, '{motion}' captions only", "linear probe AUC (supervised, 5-fold)",
            "cos(query mean, clean − defect)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, st in stats.items():
        cosine = ev.fmt_interval(st["query_direction_cosine"], signed=True)
        lines.append(f"| {name} | {ev.fmt_interval(st['auc'])} | {ev.fmt_interval(st['auc_target_captioned'])} | "
                     f"{ev.fmt_interval(st['probe_auc'])} | {cosine} |")
    first = next(iter(PASSES))
    losses: dict[str, list[float]] = {}
    for rows in pools.values():
        for kind, value in rows[first]["diagnostics"]["median_loss"].items():
            losses.setdefault(kind, []).append(value)
    lines += ["", "Mean over pools [95% t interval]. Median per-clip attribution loss of the with-mask pass, mean over "
              "pools (how surprised the model is by the clip): "
              + ", ".join(f"{k} {np.mean(v):.2g}" for k, v in losses.items()) + ".", "",
              reading(stats, motion)]
    return "\n".join(lines)


def reading(stats: dict, motion: str) -> str:
    """What the with-mask pass's diagnostics say, with its numbers (mean over pools)."""
    main = stats[next(iter(PASSES))]
    every = stats.get(EVERY_MOTION_PASS)
    text = ("Reading (with-mask pass, means over pools): a linear direction of the 512-d features separates defects "
            f"from clean clips (probe AUC {main['probe_auc']['mean']:.2f}); the score reads the features along the "
            "queries' direction, which is only partly aligned with it (cosine "
            f"{main['query_direction_cosine']['mean']:+.2f}). Among clips captioned '{motion}' the score ranks "
            f"defects lower (AUC {main['auc_target_captioned']['mean']:.2f}); over the whole pool it mostly rewards "
            "the query motion, so clean clips of other motions (and clean still clips, whose gradient the mask "
            f"zeroes) score as low as defects and the overall AUC is "
            f"{main['auc']['mean']:.2f}")
    if every is not None:
        text += f"; querying every direction gives {every['auc']['mean']:.2f}"
    return text + (". Teleports barely change the model's loss: after the VAE's 4x temporal compression a "
                   "one-frame jump is nearly invisible to the model.")


def run_pool(args: argparse.Namespace, pool_seed: int, work, pipe) -> dict:
    """Every pass on one pool and its own query sets; rows keyed by pass name."""
    pool_args = argparse.Namespace(**{**vars(args), "seed": pool_seed,
                                      "query_seed": args.query_seed_offset + pool_seed})
    pool, queries = pool_and_queries(pool_args, work, args.pool)
    meta = read_metadata(pool)
    passes = {name: (queries, overrides) for name, overrides in PASSES.items()}
    if args.every_motion_queries:
        every = make_queries(work / "queries_every_motion", args.every_motion_queries, pool_args.query_seed + 500,
                             [m for m in MOTIONS if m != "still"])
        passes[EVERY_MOTION_PASS] = (every, {})
    rows = {}
    for name, (query_folder, overrides) in passes.items():
        folder = {"with mask": "with_mask", "w/o MM": "without_mask",
                  EVERY_MOTION_PASS: "with_mask_every_motion"}.get(name) or "pass_" + "_".join(
            f"{k}-{v}" for k, v in overrides.items())
        settings = dict(model=args.model, data=str(pool), queries=str(query_folder), out=str(work / folder),
                        latent_cache_dir=str(work / "cache"), max_sequence_length=args.max_sequence_length,
                        projector=args.projector, dim=args.dim, fraction=args.fraction, seed=pool_seed)
        cfg = MotiveConfig(**{**settings, **overrides})
        start = time.perf_counter()
        result = run_attribution(cfg, progress=False, pipeline=pipe)
        rows[name] = {"seconds": time.perf_counter() - start, "counts": result["counts"],
                      "zero_gradient_clips": sum("zero_gradient" in f for f in result["flags"].values()),
                      "detection": detection(result, meta),
                      "shares": shares(result, meta, args.motion, args.draws, pool_seed),
                      "score_groups": score_groups(result, meta, args.motion),
                      "selection": str(Path(cfg.out).relative_to(Path(cfg.out).parents[1])),  # no machine path
                      "diagnostics": diagnostics(cfg.out, meta, args.motion)}
        print(f"pool {pool_seed}, {name}: AUC {fmt(rows[name]['detection']['auc'])}, target share "
              f"{rows[name]['shares']['selected']:.0%}, {rows[name]['seconds']:.0f} s", flush=True)
    return rows


def main() -> None:
    single_thread()
    args = parse_args()
    pool_seeds = ev.parse_ints(args.pool_seeds)
    if not pool_seeds:
        raise SystemExit("--pool_seeds: give at least one pool seed, e.g. 1,2,3,4")
    work, temporary = work_folder(args.work, "mg-motive-defects-")
    try:
        pipe = load_pipeline(args.model)
        pools = {}
        for pool_seed in pool_seeds:
            pools[pool_seed] = run_pool(args, pool_seed, work / f"pool_seed{pool_seed}", pipe)
            if temporary:  # the features of a finished pool are in `pools`; free the disk
                shutil.rmtree(work / f"pool_seed{pool_seed}", ignore_errors=True)
        stats = summary(pools)
        data = {"machine": machine(), "settings": vars(args), "summary": stats,
                "pools": {str(k): v for k, v in pools.items()},
                "interval": "95% Student t interval over pools (the mean of each pool's figure)",
                "orientation": "defect score = -(mean score over queries); positive class = planted defect"}
        text = markdown(pools, stats, args) + "\n\n" + diagnostics_markdown(pools, stats, args.motion)
        write_results("motive_defects", data, text, results_dir=args.results_dir)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
