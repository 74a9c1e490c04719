"""Why does Motive pick turn clips poorly on the toy turn pool, and does one of its documented options fix it?

Runs Motive passes (MotiveConfig settings only; library defaults untouched) on the turn pool of --world_seed
(default 0: settings are explored there, never on the report seed 1 of teach_turn.py) and scores each pass
against the pool's truth table: precision / recall of the clean turn clips in the top --fraction, ROC-AUC of the
mean score for "clean turn" and for "the clip shows a turn" (any caption), for the paper's majority vote and for
the mean score over queries (the vote's tie-break; not a selection mode of the library). Each pass featurises
--query_pool clean turn queries: make_turn_queries seeds each clip by its index, so the first --queries of them
are teach_turn.py's query set, and the default query set is a slice of the same features.

The diagnosis table fits every (query, clip) score on what the clip shares with the query (colour, shape, its
turn), what it shows (a turn, speed), its caption and its defect, and compares the score with the clip's own
attribution loss (how wrong the model is on it, which the cosine discards).

Cost at the defaults: five passes over 618 clips, ~2 min each on one thread (the first also encodes the latent
cache, ~5 min more); a rerun with the same --work reuses every pass.

    python benchmarks/teach_turn_motive_diagnose.py --threads 1 --work runs/teach-turn-motive-diagnose
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import _teach_turn as tt
import _toy_eval as ev
from _common import limit_threads

from motionguide.cli_args import ArgumentParser

#: passes, each a set of MotiveConfig overrides (every name is a documented Motive option)
SETTINGS = {
    "default": {},
    # an error the model makes alike on every frame (appearance) cancels in the temporal-difference loss
    "temporal_difference": {"loss": "temporal_difference"},
    # the blocks the shipped toy profile tracks with (DiffTrack analysis): correspondence, not the embedders
    "blocks_1_2_3": {"params": "blocks", "blocks": [1, 2, 3]},
    # less noise: the model sees the clip, so its error is less about what the object looks like
    "t500": {"timestep": 500.0},
    # the two that cut the colour effect most, together
    "temporal_difference_t500": {"loss": "temporal_difference", "timestep": 500.0},
}


def parse_args():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    ev.add_common_args(parser)
    parser.add_argument("--world_seed", type=int, default=0, help="turn pool seed (explore on 0 only)")
    parser.add_argument("--query_seed", type=int, default=101, help="query set seed (teach_turn.py's)")
    parser.add_argument("--pairs", default="one_order", help="direction pairs: all or one_order")
    parser.add_argument("--pool", type=int, default=600, help="clips in the turn pool")
    parser.add_argument("--queries", type=int, default=6, help="the benchmark's query set: first N query clips")
    parser.add_argument("--query_pool", type=int, default=18, help="query clips featurised per pass")
    parser.add_argument("--fraction", type=float, default=0.1, help="selected share of the pool")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated passes to run")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of clips (AUC differences)")
    parser.add_argument("--work", default="runs/teach-turn-motive-diagnose", help="pools, caches, passes (reused)")
    args = parser.parse_args()
    args.settings = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(args.settings) - set(SETTINGS))
    if unknown:
        parser.error(f"--settings: unknown {unknown}; choose from {', '.join(SETTINGS)}")
    return args


def build_sets(args, work: Path) -> tuple[Path, Path]:
    return tt.turn_sets(work, args.world_seed, args.pool, args.query_seed, args.query_pool, args.pairs)


def run_pass(args, name: str, pool: Path, queries: Path, work: Path) -> dict:
    """The pass's [Q, N] scores with its clip and query ids (reused when the pass already ran)."""
    from motionguide.motive import MotiveConfig, run_attribution

    out = work / f"pass_{name}"
    cfg = MotiveConfig(model=args.model, data=str(pool), queries=str(queries), out=str(out),
                       latent_cache_dir=str(work / "motive-cache"), max_sequence_length=args.max_sequence_length,
                       fraction=args.fraction, seed=0, report=False, **SETTINGS[name])
    stamp, timing = out / "diagnose_config.json", out / "diagnose_seconds.json"
    tick = time.perf_counter()
    if not ((out / "scores.npy").is_file() and stamp.is_file() and stamp.read_text() == json.dumps(vars(cfg))):
        run_attribution(cfg, progress=False)
        stamp.write_text(json.dumps(vars(cfg)))
        if not timing.is_file():  # the pass that featurised the clips (a resumed one would time the rest only)
            timing.write_text(json.dumps(time.perf_counter() - tick))
    seconds = json.loads(timing.read_text()) if timing.is_file() else float("nan")
    selection = json.loads((out / "selection.json").read_text())
    manifest = Path(selection["feature_store"]) / "train" / "merged" / "manifest.json"
    loss = {r["clip_id"]: r.get("loss") for r in json.loads(manifest.read_text())["records"]}
    return {"scores": np.load(out / "scores.npy"), "train_ids": selection["train_ids"],
            "query_ids": selection["query_ids"], "seconds": seconds,
            "loss": np.array([loss.get(i) or 0.0 for i in selection["train_ids"]], dtype=np.float64)}


def clip_table(truth: list[dict]) -> dict[str, np.ndarray]:
    """Per-clip labels from a truth table (colour and shape from the true caption: mislabels change motion only)."""
    from motionguide.toy.turns import mentions_turn
    from motionguide.toy.vocab import split_turn

    words = [r["true_caption"].split() for r in truth]
    return {"colour": np.array([w[1] for w in words]), "shape": np.array([w[2] for w in words]),
            "clean_turn": np.array([bool(r["clean_turn"]) for r in truth]),
            "turn": np.array([split_turn(r["true_motion"]) is not None for r in truth]),
            "pair": np.array([r["true_motion"] if split_turn(r["true_motion"]) else "" for r in truth]),
            "caption_turn": np.array([mentions_turn(r["caption"]) for r in truth]),
            "quick": np.array(["quickly" in r["true_caption"] for r in truth]),
            "defect": np.array([r["defect"] for r in truth])}


def selection_metrics(scores: np.ndarray, clips: dict, fraction: float, rule: str, query_colour: str) -> dict:
    """Precision / recall of clean turns in the top `fraction` by `rule` (votes: the paper's majority vote at
    the 90th percentile; mean: mean score over queries), and ROC-AUC of the mean score."""
    from motionguide.motive.scoring import majority_vote_selection, roc_auc

    mean = scores.mean(axis=0)
    if rule == "votes":
        kept = majority_vote_selection(scores, fraction=fraction, percentile=90.0).indices
    else:
        kept = np.argsort(-mean, kind="stable")[: max(1, int(np.floor(fraction * mean.size + 0.5)))]
    clean, turn = clips["clean_turn"], clips["turn"]
    return {"selected": int(kept.size), "clean_turns": int(clean[kept].sum()), "turns": int(turn[kept].sum()),
            "precision": float(clean[kept].mean()), "recall": float(clean[kept].sum() / clean.sum()),
            "defects": int((clips["defect"][kept] != "none").sum()),
            "top_query_colour_share": float((clips["colour"][kept] == query_colour).mean()),
            "auc_clean_turn": roc_auc(mean, clean), "auc_turn": roc_auc(mean, turn)}


def auc_difference(a: np.ndarray, b: np.ndarray, labels: np.ndarray, resamples: int, seed: int = 0) -> dict:
    """ROC-AUC(a) - ROC-AUC(b) for the same clips, with a 95% bootstrap interval over clips (paired)."""
    from motionguide.motive.scoring import roc_auc

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, labels.size, labels.size)
        if labels[i].any() and (~labels[i]).any():
            diffs.append(roc_auc(a[i], labels[i]) - roc_auc(b[i], labels[i]))
    return {"mean": roc_auc(a, labels) - roc_auc(b, labels), "low": float(np.percentile(diffs, 2.5)),
            "high": float(np.percentile(diffs, 97.5))}


def diagnose(scores: np.ndarray, clips: dict, queries: dict) -> dict:
    """What the (query, clip) scores follow: mean score per group, and a least-squares fit of every pair's score
    on indicators (what the clip shares with the query, what it shows, its caption, its defect)."""
    q, n = scores.shape
    same_colour = queries["colour"][:q, None] == clips["colour"][None]
    same_shape = queries["shape"][:q, None] == clips["shape"][None]
    same_pair = (queries["pair"][:q, None] == clips["pair"][None]) & clips["turn"][None]
    full = lambda a: np.broadcast_to(a[None], (q, n))  # noqa: E731
    indicators = {
        "same colour as the query": same_colour, "same shape as the query": same_shape,
        "shows a turn": full(clips["turn"]), "shows the query's turn (pair)": same_pair,
        "caption says turn": full(clips["caption_turn"]), "quick": full(clips["quick"]),
        **{f"defect: {d}": full(clips["defect"] == d) for d in sorted(set(clips["defect"]) - {"none"})}}
    x = np.stack([np.ones((q, n))] + [v.astype(float) for v in indicators.values()], axis=-1).reshape(q * n, -1)
    coef = np.linalg.lstsq(x, scores.reshape(-1), rcond=None)[0]
    fitted = x @ coef
    resid = scores.reshape(-1) - fitted
    r2 = 1.0 - resid.var() / scores.reshape(-1).var()
    # share of the explained variance that appearance alone explains (colour, shape)
    xa = x[:, :3]
    ra = scores.reshape(-1) - xa @ np.linalg.lstsq(xa, scores.reshape(-1), rcond=None)[0]
    groups = {
        "same colour and shape": same_colour & same_shape, "same colour, other shape": same_colour & ~same_shape,
        "other colour, same shape": ~same_colour & same_shape, "other colour and shape": ~same_colour & ~same_shape,
        "clip shows the query's turn": same_pair, "clip shows another turn": full(clips["turn"]) & ~same_pair,
        "clip is straight or still": full(~clips["turn"]),
        "caption says turn, clip straight": full(clips["caption_turn"] & ~clips["turn"]),
        "no defect": full(clips["defect"] == "none"),
        **{f"defect: {d}": full(clips["defect"] == d) for d in sorted(set(clips["defect"]) - {"none"})}}
    # within appearance: does the score rank the query's turn first among clips that look like the query?
    from motionguide.motive.scoring import roc_auc

    within = []
    for i in range(q):
        look = same_colour[i] & same_shape[i]
        if clips["turn"][look].any() and (~clips["turn"][look]).any():
            within.append(roc_auc(scores[i, look], clips["turn"][look]))
    return {"pair_sd": float(scores.std()), "r2": float(r2),
            "r2_appearance_only": float(1.0 - ra.var() / scores.reshape(-1).var()),
            "coefficients": {"intercept": float(coef[0]),
                             **{k: float(c) for k, c in zip(indicators, coef[1:])}},
            "group_means": {k: {"pairs": int(m.sum()), "mean": float(scores[m].mean()) if m.any() else None}
                            for k, m in groups.items()},
            "auc_turn_within_look_alikes": float(np.mean(within)) if within else None,
            "queries_with_look_alike_turns": len(within)}


def markdown(args, summary, rows, diagnoses, seconds, query_colours) -> str:
    pct = lambda v: f"{v:.0%}"  # noqa: E731
    diff = lambda d: "–" if d is None else f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"  # noqa: E731
    top = max(set(query_colours[: args.queries]), key=list(query_colours[: args.queries]).count)
    table = ev.markdown_table(
        ["setting", "queries", "rule", "clean turns / kept", "precision", "recall", "turns, any caption",
         "defects", f"{top} (pool {summary['top_colour_share']:.0%})", "AUC clean turn", "− default [95%]",
         "AUC turn", "pass (s)"],
        [[f"**{r['setting']}**" if r["setting"] == "default" and r["queries"] == args.queries
          and r["rule"] == "votes" else r["setting"], r["queries"], r["rule"],
          f"{r['clean_turns']}/{r['selected']}", pct(r["precision"]), pct(r["recall"]), r["turns"], r["defects"],
          pct(r["top_query_colour_share"]), f"{r['auc_clean_turn']:.3f}", diff(r.get("auc_clean_turn_minus_default")),
          f"{r['auc_turn']:.3f}", ev.fmt(seconds[r["setting"]], 0)] for r in rows])
    names = list(diagnoses)
    keys = ["same colour as the query", "same shape as the query", "shows a turn", "shows the query's turn (pair)",
            "caption says turn", "quick", "defect: static", "defect: reversed"]
    first = lambda n: diagnoses[n][str(args.queries)]  # noqa: E731
    diag = ev.markdown_table(
        ["(query, clip) score", *names],
        [["pair score sd", *[f"{first(n)['pair_sd']:.3f}" for n in names]],
         *[[f"effect: {k}", *[f"{first(n)['coefficients'][k]:+.3f}" for n in names]] for k in keys],
         ["R² of all these / of colour and shape alone",
          *[f"{first(n)['r2']:.2f} / {first(n)['r2_appearance_only']:.2f}" for n in names]],
         ["AUC turn vs not among the query's look-alikes (same colour and shape)",
          *[f"{first(n)['auc_turn_within_look_alikes']:.2f}" for n in names]],
         ["Spearman of the clip's mean score and its attribution loss",
          *[f"{diagnoses[n]['loss']['spearman_mean_score']:+.2f}" for n in names]],
         ["AUC of the attribution loss alone: clean turn / turn",
          *[f"{diagnoses[n]['loss']['auc_clean_turn']:.2f} / {diagnoses[n]['loss']['auc_turn']:.2f}"
            for n in names]]])
    return "\n".join([
        f"Turn pool of world seed {args.world_seed} ({args.pool} clips, pairs {args.pairs}, {summary['clean_turns']} "
        f"clean turns); queries seed {args.query_seed}: the benchmark's {args.queries} (colours: "
        f"{', '.join(query_colours[: args.queries])}) and all {args.query_pool} featurised. Top {args.fraction:.0%} "
        f"per rule: votes = the paper's majority vote (90th percentile per query), mean = mean score over "
        f"queries (the vote's tie-break, not a library selection mode). Reference: random "
        f"{summary['clean_turns'] / args.pool:.0%} precision; caption keyword "
        f"{summary['keyword_precision']:.0%} precision, {summary['keyword_recall']:.0%} recall. AUC: ROC-AUC of "
        f"the mean score for clean turns and for clips showing a turn (any caption). Pass time includes the "
        f"latent cache for the first pass (one thread, shared machine).", "", table, "",
        f"What the scores follow ({args.queries} queries, every (query, clip) pair; effects: least-squares "
        f"coefficients of the pair score on the indicators, in cosine units):", "", diag])


def main() -> None:
    args = parse_args()
    limit_threads(args.threads)
    if args.max_sequence_length is None:
        args.max_sequence_length = ev.sampling_settings(args.model).max_sequence_length
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pool, queries = build_sets(args, work)
    from motionguide.toy.turn_pool import load_truth, pool_summary

    from motionguide.motive.scoring import roc_auc, spearman

    clips, query_clips = clip_table(load_truth(pool)), clip_table(load_truth(queries))
    clip_ids, query_ids = [r["id"] for r in load_truth(pool)], [r["id"] for r in load_truth(queries)]
    rows, diagnoses, seconds, defaults = [], {}, {}, {}
    first = list(query_clips["colour"][: args.queries])
    top = max(set(first), key=first.count)
    summary = {**pool_summary(load_truth(pool)), "top_colour": top,
               "top_colour_share": float((clips["colour"] == top).mean())}
    for name in args.settings:
        result = run_pass(args, name, pool, queries, work)
        scores, seconds[name] = result["scores"], result["seconds"]
        if result["train_ids"] != clip_ids or result["query_ids"] != query_ids:
            raise SystemExit(f"pass {name}: its clips or queries are not the truth tables' (a clip was skipped?)")
        for nq in dict.fromkeys((args.queries, args.query_pool)):
            for rule in ("votes", "mean"):
                rows.append({"setting": name, "queries": nq, "rule": rule,
                             **selection_metrics(scores[:nq], clips, args.fraction, rule, top)})
        diagnoses[name] = {str(nq): diagnose(scores[:nq], clips, query_clips)
                           for nq in dict.fromkeys((args.queries, args.query_pool))}
        # the per-clip attribution loss (how wrong the model is on the clip), which the cosine ignores
        loss = result["loss"]
        diagnoses[name]["loss"] = {"spearman_mean_score": spearman(scores[: args.queries].mean(axis=0), loss),
                                   "auc_clean_turn": roc_auc(loss, clips["clean_turn"]),
                                   "auc_turn": roc_auc(loss, clips["turn"])}
        if name == "default":
            defaults = {nq: scores[:nq].mean(axis=0) for nq in (args.queries, args.query_pool)}
        elif defaults:  # the AUC change over the default pass with the same queries (the rule does not enter)
            for row in (r for r in rows if r["setting"] == name):
                row["auc_clean_turn_minus_default"] = auc_difference(
                    scores[: row["queries"]].mean(axis=0), defaults[row["queries"]], clips["clean_turn"], args.boot)
        print(name, json.dumps([r for r in rows if r["setting"] == name]), flush=True)
    query_colours = [str(c) for c in query_clips["colour"]]
    # args without the folders: no machine paths in the results
    ev.write("teach_turn_motive_diagnose",
             {"args": {k: v for k, v in vars(args).items() if k not in ("work", "results_dir")}, "pool": summary,
              "rows": rows, "diagnosis": diagnoses, "pass_seconds": seconds, "query_colours": query_colours},
             markdown(args, summary, rows, diagnoses, seconds, query_colours), args.results_dir)


if __name__ == "__main__":
    main()
