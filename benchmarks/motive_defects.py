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
  kind vs all clean clips). Goal: >= 0.9.
* share of target clips (clean and captioned with the target motion) in the Motive top 10%, in a random 10%
  (seeded, mean over 100 draws) and in the whole pool; share of defects in the top 10%.
* diagnostics of the AUC, read from the stored features: the AUC within clips captioned with the target
  motion; a 5-fold ridge probe of defect vs clean on the features (supervised: an upper bound on what a linear
  direction of the features can tell apart); the cosine between the queries' mean feature and the direction
  from the defects' mean to the clean clips' mean; the median per-clip loss of each defect kind.

Run for real (after the toy model exists; keeps data, cache and selections for motive_finetune.py):
    python benchmarks/motive_defects.py --work runs/motive-bench
Smoke run on a tiny random pipeline:
    python benchmarks/motive_defects.py --model /tmp/tiny --pool 12 --queries 3 --results_dir /tmp/res
Cost on the project's 2-core CPU, one thread (estimate from a random network of the toy model's size):
~1 minute to render the pool, then ~0.33 s per clip for the first pass (it also encodes the latent cache)
and ~0.1 s per clip for the others: about 5-6 minutes for the defaults. The JSON records each pass's time.
"""

import argparse
import shutil
import time

import numpy as np
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


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--pool", type=int, default=500, help="clips in the training pool")
    parser.add_argument("--defect_rate", type=float, default=0.25)
    parser.add_argument("--queries", type=int, default=20, help="clean query clips of --motion")
    parser.add_argument("--motion", default="right", help="the target motion of the queries")
    parser.add_argument("--seed", type=int, default=0, help="pool seed (queries use --query_seed)")
    parser.add_argument("--query_seed", type=int, default=1)
    parser.add_argument("--every_motion_queries", type=int, default=48,
                        help="clean queries spread over every direction for one more pass (0: skip it)")
    parser.add_argument("--projector", default="fastfood_blockwise")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--draws", type=int, default=100, help="random selections to average")
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
    return {"k": k, "selected": float(target[chosen].mean()), "random_mean": float(random.mean()),
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
            "auc_target_captioned": roc_auc(score[captioned], defect[captioned]),
            "target_captioned_counts": [int((captioned & defect).sum()), int((captioned & ~defect).sum())],
            "median_loss": {k: float(np.nanmedian(losses[kinds == k])) for k in ("none", *DEFECTS)
                            if (kinds == k).any()}}


def diagnostics_markdown(rows: dict, motion: str) -> str:
    head = ["pass", "ROC-AUC", f"AUC, '{motion}' captions only", "linear probe AUC (supervised, 5-fold)",
            "cos(query mean, clean − defect)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, r in rows.items():
        d = r["diagnostics"]
        lines.append(f"| {name} | {fmt(r['detection']['auc'])} | {fmt(d['auc_target_captioned'])} | "
                     f"{fmt(d['probe_auc'])} | {d['query_direction_cosine']:+.2f} |")
    first = next(iter(rows.values()))["diagnostics"]["median_loss"]
    lines += ["", "Median per-clip attribution loss of the with-mask pass (how surprised the model is by the clip): "
              + ", ".join(f"{k} {v:.2g}" for k, v in first.items()) + ".", "",
              "Reading: the probe shows that a linear direction of the 512-d features separates defects from clean "
              "clips; the score reads the features along the queries' direction, which is only partly aligned "
              "with it. Clips of other motions give the queries no reason to score defects low, yet restricting the "
              f"pool to '{motion}' captions, or querying every direction, leaves the AUC in the same range. "
              "Teleports barely change the model's loss: after the VAE's 4x temporal compression a one-frame jump "
              "is nearly invisible to the model."]
    return "\n".join(lines)


def pass_time(row: dict) -> str:
    """Seconds of a pass, or "reused" when every feature was already stored (only scoring ran)."""
    featurised = sum(split.get("featurised", 0) for split in row["counts"].values())
    return f"{row['seconds']:.0f}" if featurised else "reused"


def fmt(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown(rows: dict, args: argparse.Namespace, n_pool: int) -> str:
    head = ["pass", "ROC-AUC", *DEFECTS, "target share: top 10%", "random 10%", "pool", "defects in top 10%",
            "zero-grad clips", "pass time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, r in rows.items():
        d, s = r["detection"], r["shares"]
        lines.append("| " + " | ".join([
            name, fmt(d["auc"]), *(fmt(d["per_kind"][k]) for k in DEFECTS), f"{s['selected']:.0%}",
            f"{s['random_mean']:.0%} ± {s['random_sd']:.0%}", f"{s['pool']:.0%}",
            f"{s['defects_in_selected']:.0%} (pool {s['defects_in_pool']:.0%})", str(r["zero_gradient_clips"]),
            pass_time(r)]) + " |")
    lines += ["", f"Pool {n_pool} clips ({args.defect_rate:.0%} planted defects), {args.queries} clean "
              f"'{args.motion}' queries, projector {args.projector} d={args.dim}, top {args.fraction:.0%} by "
              f"majority vote. Defect score = -(mean score over queries); per-kind columns: that kind vs all "
              f"clean clips. Target share: clean clips captioned '{args.motion}'; random: mean ± sd of "
              f"{args.draws} seeded draws. The first pass's time includes encoding the latent cache when --work "
              "lacks it; \"reused\": the features were already in --work. "]
    if EVERY_MOTION_PASS in rows:
        lines[-1] += (f"The last pass scores the same pool against {args.every_motion_queries} clean queries spread "
                      "over the eight directions (the paper's generalist set), so its target share is not comparable.")
    return "\n".join(lines)


def main() -> None:
    single_thread()
    args = parse_args()
    work, temporary = work_folder(args.work, "mg-motive-defects-")
    try:
        pool, queries = pool_and_queries(args, work, args.pool)
        meta = read_metadata(pool)
        pipe = load_pipeline(args.model)
        passes = {name: (queries, overrides) for name, overrides in PASSES.items()}
        if args.every_motion_queries:
            every = make_queries(work / "queries_every_motion", args.every_motion_queries, args.query_seed + 1,
                                 [m for m in MOTIONS if m != "still"])
            passes[EVERY_MOTION_PASS] = (every, {})
        rows = {}
        for name, (query_folder, overrides) in passes.items():
            folder = {"with mask": "with_mask", "w/o MM": "without_mask",
                      EVERY_MOTION_PASS: "with_mask_every_motion"}.get(name) or "pass_" + "_".join(
                f"{k}-{v}" for k, v in overrides.items())
            settings = dict(model=args.model, data=str(pool), queries=str(query_folder), out=str(work / folder),
                            latent_cache_dir=str(work / "cache"), max_sequence_length=args.max_sequence_length,
                            projector=args.projector, dim=args.dim, fraction=args.fraction, seed=args.seed)
            cfg = MotiveConfig(**{**settings, **overrides})
            start = time.perf_counter()
            result = run_attribution(cfg, progress=False, pipeline=pipe)
            rows[name] = {"seconds": time.perf_counter() - start, "counts": result["counts"],
                          "zero_gradient_clips": sum("zero_gradient" in f for f in result["flags"].values()),
                          "detection": detection(result, meta),
                          "shares": shares(result, meta, args.motion, args.draws, args.seed),
                          "score_groups": score_groups(result, meta, args.motion), "selection": cfg.out,
                          "diagnostics": diagnostics(cfg.out, meta, args.motion)}
        data = {"machine": machine(), "settings": vars(args), "passes": rows,
                "orientation": "defect score = -(mean score over queries); positive class = planted defect"}
        text = markdown(rows, args, len(meta)) + "\n\n" + diagnostics_markdown(rows, args.motion)
        write_results("motive_defects", data, text, results_dir=args.results_dir)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
