"""Motive's ablations in small: JL fidelity of each projector, and one timestep vs an average over ten.

What it measures (toy world; the paper's ablation numbers, Wu et al., arXiv 2601.08828, are quoted below):

* JL fidelity. For N pool clips (default 200, 25% planted defects) and Q clean query clips of the target
  motion, the exact gradient of the motion-weighted loss at the shared (t = 751, eps) is computed with
  `torch.autograd.grad` and kept in memory (fine for the ~1.8M-parameter toy model: N x D x 4 bytes). Exact
  scores are the cosines of the full gradients (query x clip); each projector at each dimension (128 / 512 /
  1024) projects the same gradients, and we report the Spearman correlation of projected vs exact scores
  over all Q x N pairs and of the per-clip mean score over queries (what the selection ranks by).
  Paper (Wan2.1, D' = 128 / 512 / 1024): 0.469 / 0.747 / 0.757.
* Timestep agreement. Features at the single t = 751 vs the average of the scores at 10 evenly spaced
  timesteps (50, 150, ..., 950), same eps per shape: Spearman of the per-clip mean scores, of all pair
  scores, and the overlap of the two top-10% selections. Paper: rho = 0.66.
A consistency check also compares the streaming `GradientFeaturizer` with projecting the exact gradient.

Run for real:  python benchmarks/motive_ablations.py
Smoke run:     python benchmarks/motive_ablations.py --model /tmp/tiny --clips 10 --queries 3 --timesteps 2 \
                   --results_dir /tmp/res
Cost on the project's 2-core CPU, one thread (estimate from a random network of the toy model's size):
(N + Q) x (1 exact gradient at ~0.08 s + 11 featurisations at ~0.125 s) ~5 minutes, 12 projections of the
(N + Q) x 1.76M gradient matrix ~2 minutes (dense Gaussian dominates), plus rendering and encoding the
clips: about 8-10 minutes and ~3 GB peak memory (the kept gradients are 1.5 GB) for the defaults.
"""

import argparse
import shutil
import time

import numpy as np
import torch
from _common import machine, write_results
from _motive import DEFAULT_MODEL, load_pipeline, pool_and_queries, single_thread, work_folder

from motionguide.cli_args import ArgumentParser
from motionguide.motive import (PROJECTORS, CommonRandomness, DenseGaussian, GradientFeaturizer,
                                majority_vote_selection, make_projector, motion_weighted_loss,
                                select_parameters, spearman)
from motionguide.backbones import backbone_for
from motionguide.motive import motion_mask
from motionguide.training import LatentCache, VideoDataset


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--clips", type=int, default=200, help="pool clips")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--defect_rate", type=float, default=0.25)
    parser.add_argument("--motion", default="right")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--query_seed", type=int, default=1)
    parser.add_argument("--projectors", default=",".join(PROJECTORS))
    parser.add_argument("--dims", default="128,512,1024")
    parser.add_argument("--timestep", type=float, default=751.0, help="the single shared timestep")
    parser.add_argument("--timesteps", type=int, default=10, help="how many timesteps to average")
    parser.add_argument("--projector", default="fastfood_blockwise", help="projector of the timestep study")
    parser.add_argument("--dim", type=int, default=512, help="dimension of the timestep study")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=16, help="gradients per projector call (Fastfood memory)")
    parser.add_argument("--max_sequence_length", type=int, default=16)
    parser.add_argument("--work", default=None)
    parser.add_argument("--results_dir", default=None)
    return parser.parse_args()


def clip_inputs(folder, backbone, cache_root, msl: int) -> list[dict]:
    """Per clip: cached latents and embeddings plus its motion mask on the latent grid."""
    dataset = VideoDataset(folder, num_frames=17, height=64, width=64)
    cache = LatentCache.for_dataset(cache_root, dataset, backbone, msl)
    cache.build(dataset, backbone, msl, progress=False)
    items = []
    for i, entry in enumerate(dataset.entries):
        frames = ((dataset[i]["pixels"].permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        mask = motion_mask(frames.numpy(), backbone, "dis").latent
        items.append({"id": entry.clip_id, "mask": mask, **cache.load(entry.clip_id)})
    return items


def exact_gradient(backbone, params, randomness: CommonRandomness, item: dict, num_frames: int) -> torch.Tensor:
    """The full flat gradient (named_parameters order) of the motion-weighted loss at the shared (t, eps)."""
    x0 = item["latents"][None].float()
    noise = randomness.noise_for(item["latents"].shape)[None]
    t = torch.tensor([float(randomness.timestep)])
    pred = backbone.predict(backbone.add_noise(x0, noise, t), t, item["prompt_embeds"][None])
    loss = motion_weighted_loss(pred, backbone.training_target(x0, noise, t), item["mask"], num_frames)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def normalized(rows: torch.Tensor) -> torch.Tensor:
    """Row-wise l2 normalisation; zero rows (static clips under the mask) stay zero, so they score 0."""
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-30)


def project_rows(projector, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """Project many flat gradients in batches; the dense projector takes all at once, since its matrix (too
    big to cache) is regenerated on every call while its memory does not grow with the batch."""
    step = rows.shape[0] if isinstance(projector, DenseGaussian) else batch
    return torch.cat([projector.project_full(rows[i:i + step]) for i in range(0, rows.shape[0], step)])


def jl_fidelity(grads: torch.Tensor, n_queries: int, sizes: list[int], args) -> tuple[list[dict], dict]:
    """Spearman of projected vs exact scores per (projector, dim). Clips with a zero gradient (static under
    the mask) score exactly 0 either way, so they are left out: their ties would inflate the correlation."""
    keep = torch.cat([torch.ones(n_queries, dtype=torch.bool), grads[n_queries:].norm(dim=1) > 0])
    grads = grads[keep]
    exact = normalized(grads)
    exact_scores = (exact[:n_queries] @ exact[n_queries:].T).numpy()
    spread = {"clips_used": int(keep[n_queries:].sum()), "zero_gradient_clips_left_out": int((~keep).sum()),
              "exact_score_mean": float(exact_scores.mean()), "exact_score_sd": float(exact_scores.std())}
    rows = []
    for name in args.projectors.split(","):
        for dim in (int(d) for d in args.dims.split(",")):
            start = time.perf_counter()
            projected = normalized(project_rows(make_projector(name, sizes, dim=dim, seed=args.seed), grads,
                                                args.batch))
            seconds = time.perf_counter() - start
            scores = (projected[:n_queries] @ projected[n_queries:].T).numpy()
            rows.append({"projector": name, "dim": dim, "seconds": seconds,
                         "spearman_pairs": spearman(scores.ravel(), exact_scores.ravel()),
                         "spearman_mean_score": spearman(scores.mean(0), exact_scores.mean(0))})
    return rows, spread


def timestep_scores(backbone, items: list[dict], n_queries: int, timestep: float, args) -> np.ndarray:
    """[Q, N] cosine scores of the streaming featurizer at one timestep."""
    randomness = CommonRandomness(timestep=timestep, seed=args.seed)
    featurizer = GradientFeaturizer(backbone, lambda s: make_projector(args.projector, s, dim=args.dim,
                                                                       seed=args.seed), randomness)
    feats = torch.stack([featurizer.featurize(it["latents"], it["prompt_embeds"], it["mask"], 17).feature
                         for it in items])
    return (feats[:n_queries] @ feats[n_queries:].T).numpy()


def timestep_agreement(backbone, items: list[dict], n_queries: int, args) -> dict:
    single = timestep_scores(backbone, items, n_queries, args.timestep, args)
    grid = [float(t) for t in np.linspace(1000 / (2 * args.timesteps), 1000 - 1000 / (2 * args.timesteps),
                                          args.timesteps)]
    multi = np.mean([timestep_scores(backbone, items, n_queries, t, args) for t in grid], axis=0)
    top_single = set(majority_vote_selection(single, args.fraction).indices.tolist())
    top_multi = set(majority_vote_selection(multi, args.fraction).indices.tolist())
    return {"single_timestep": args.timestep, "timesteps": grid,
            "spearman_mean_score": spearman(single.mean(0), multi.mean(0)),
            "spearman_pairs": spearman(single.ravel(), multi.ravel()),
            "top_fraction_overlap": len(top_single & top_multi) / max(1, len(top_single))}


def featurizer_consistency(backbone, item: dict, flat: torch.Tensor, sizes: list[int], args) -> float:
    """Max |streaming feature - normalised projection of the exact gradient| for one clip (expect ~1e-6)."""
    projector = make_projector(args.projector, sizes, dim=args.dim, seed=args.seed)
    featurizer = GradientFeaturizer(backbone, lambda s: projector,
                                    CommonRandomness(timestep=args.timestep, seed=args.seed))
    streamed = featurizer.featurize(item["latents"], item["prompt_embeds"], item["mask"], 17).feature
    reference = normalized(projector.project_full(flat)[None])[0]
    return float((streamed - reference).abs().max())


def markdown(jl: list[dict], ts: dict, consistency: float, spread: dict, n_queries: int, params: int) -> str:
    dims = sorted({r["dim"] for r in jl})
    names = list(dict.fromkeys(r["projector"] for r in jl))
    cell = {(r["projector"], r["dim"]): r for r in jl}
    lines = ["| projector | " + " | ".join(f"d={d}: pairs / mean score" for d in dims) + " |",
             "|---" * (len(dims) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            f"{cell[name, d]['spearman_pairs']:.3f} / {cell[name, d]['spearman_mean_score']:.3f}" for d in dims) + " |")
    lines += ["", f"Spearman of projected vs exact gradient cosines ({n_queries} queries x {spread['clips_used']} "
              f"clips with a nonzero gradient, {spread['zero_gradient_clips_left_out']} zero-gradient clips left "
              f"out; {params:,} parameters, t = {ts['single_timestep']:.0f}). Exact cosines: mean "
              f"{spread['exact_score_mean']:.3f}, sd {spread['exact_score_sd']:.3f}; the wider their spread "
              "relative to the JL error (~1/sqrt(d)), the higher the rank agreement, so compare with the paper "
              "(d = 128 / 512 / 1024: 0.469 / 0.747 / 0.757) with that in mind. Streaming featurizer vs "
              f"projecting the exact gradient: max abs difference {consistency:.1e}.", "",
              "| timestep study | value |", "|---|---|",
              f"| Spearman of mean scores, t = {ts['single_timestep']:.0f} vs mean of {len(ts['timesteps'])} "
              f"timesteps | {ts['spearman_mean_score']:.3f} |",
              f"| Spearman of all pair scores | {ts['spearman_pairs']:.3f} |",
              f"| overlap of the two top-10% selections | {ts['top_fraction_overlap']:.0%} |",
              "", "Paper: rho = 0.66 between t = 751 and a 10-timestep average."]
    return "\n".join(lines)


def main() -> None:
    single_thread()
    args = parse_args()
    work, temporary = work_folder(args.work, "mg-motive-ablations-")
    try:
        pool, queries = pool_and_queries(args, work, args.clips)
        backbone = backbone_for(load_pipeline(args.model))
        items = (clip_inputs(queries, backbone, work / "cache", args.max_sequence_length)
                 + clip_inputs(pool, backbone, work / "cache", args.max_sequence_length))
        n_queries = args.queries
        transformer = backbone.transformer.eval().requires_grad_(False)
        named = select_parameters(transformer, "all")
        params = [p.requires_grad_(True) for _, p in named]
        sizes = [p.numel() for p in params]
        randomness = CommonRandomness(timestep=args.timestep, seed=args.seed)
        start = time.perf_counter()
        grads = torch.stack([exact_gradient(backbone, params, randomness, it, 17) for it in items])
        exact_seconds = time.perf_counter() - start
        transformer.requires_grad_(False)
        consistency = featurizer_consistency(backbone, items[-1], grads[-1], sizes, args)
        jl, spread = jl_fidelity(grads, n_queries, sizes, args)
        del grads
        start = time.perf_counter()
        ts = timestep_agreement(backbone, items, n_queries, args)
        ts["seconds"] = time.perf_counter() - start
        data = {"machine": machine(), "settings": vars(args), "parameters": sum(sizes), "clips": len(items) - n_queries,
                "exact_gradient_seconds": exact_seconds, "featurizer_vs_exact_max_abs_diff": consistency,
                "jl_fidelity": jl, "exact_scores": spread, "timestep_agreement": ts}
        write_results("motive_ablations", data, markdown(jl, ts, consistency, spread, n_queries, sum(sizes)),
                      results_dir=args.results_dir)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
