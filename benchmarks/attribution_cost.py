"""What Motive's attribution costs: per-clip featurisation vs plain training compute, projector speed, memory.

Measured in one run, as ratios (the machine is shared and noisy):

* featurisation of one clip (motion-weighted loss, backward with per-parameter projection hooks, default
  projector) / a plain forward+backward of the same clip, inputs and loss (interleaved medians); the motion
  mask (DIS flow on the frames) is timed on its own. Goal: <= 1.25.
* projector throughput on one gradient of D numbers, D in {1e5, 1e6, 4e6}, output dim 512, for every
  projector vs `DenseGaussian` (the library's: matrix regenerated from seeds on each call; and, where it
  fits in `--dense_cache_mb`, with the matrix kept) and vs TRAK's CPU projector if `import trak` works
  (nothing is installed). JL error at the same dim for each (relative error of squared norms and of cosines
  over `--jl_vectors` correlated vectors), so speed is compared at equal error. Goal: >= 5x faster than dense
  for D >= 1e6.
* peak RSS after each section (ru_maxrss, monotone: sections run in increasing memory order).
* how the cost grows with clip length (9 / 17 / 33 frames; synthetic latents of that shape) and with the
  number of featurised parameters (all vs LoRA-only, rank `--lora_rank`).

* with `--like wan2.1-t2v-1.3b` instead (results: attribution_cost_real_arch.*): the released transformer
  architecture with random weights at `--num_layers` blocks (30 is the released depth; fewer to fit memory),
  synthetic latents of each `--latent_grid` size and `--text_tokens` text embeddings, per-clip featurisation
  vs forward+backward: for each projector-state budget of `--projector_cache_mb` (e.g. 256,auto: the old fixed
  cache vs the pass's default) at the first size, for the last budget at every size; with
  `--gradient_checkpointing` both sides checkpointed. From two or more sizes it fits featurize = forward+backward
  + E, E the projection (a cost per parameter, the same at every token count), and forward+backward = a + b
  W(N) (W(N): the FLOPs of a block at N video tokens, attention's N^2 included, as real_arch_stages.py
  projects), then projects the ratio to 81x480x832 (32,760 tokens), also with a linear-in-N forward+backward
  (an upper bound on the ratio) and at the released 30 blocks.

    python benchmarks/attribution_cost.py --like wan2.1-t2v-1.3b --num_layers 4 --repeats 3
    (3x16x16 and 3x32x32: ~12 min of one core on the 2-core machine, ~8 GiB peak RSS)
    python benchmarks/attribution_cost.py --like wan2.1-t2v-1.3b --num_layers 1 --latent_grid 1x4x4,1x8x8 \
        --text_tokens 16 --repeats 1 --projector_cache_mb auto --results_dir /tmp/res       # smoke run

Run for real:  python benchmarks/attribution_cost.py
Smoke run:     python benchmarks/attribution_cost.py --model /tmp/tiny --repeats 2 --proj_repeats 1 \
                   --sizes 1e4,1e5 --frames 9,17 --results_dir /tmp/res
Cost on the project's 2-core CPU, one thread (estimate from a random network of the toy model's size):
about 3 minutes and ~3.5 GB peak RSS; the dense projector dominates (D = 4e6: 2e9 Gaussian numbers, ~9 s
per call; D = 1e6 keeps a 2 GB matrix). Measured there: featurize ÷ forward+backward ~1.8 with
fastfood_blockwise and ~1.3 with sparse_jl at 17 frames (320 tokens), falling as tokens grow.
"""

import argparse
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch
from _common import interleaved_medians, machine, write_results
from _motive import DEFAULT_MODEL, load_pipeline, single_thread

from motionguide.cli_args import ArgumentParser
from motionguide.motive import (PROJECTORS, CommonRandomness, DenseGaussian, GradientFeaturizer,
                                make_projector, motion_weighted_loss, select_parameters)
from motionguide.backbones import backbone_for
from motionguide.motive import motion_mask
from motionguide.toy import make_dataset
from motionguide.training import LatentCache, VideoDataset
from motionguide.training.lora import add_lora


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--projector", default="fastfood_blockwise", help="projector of the featurizer")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20, help="interleaved repeats of per-clip timings")
    parser.add_argument("--proj_repeats", type=int, default=5, help="interleaved repeats of projector timings")
    parser.add_argument("--sizes", default="1e5,1e6,4e6", help="gradient sizes D for the projector study")
    parser.add_argument("--dense_cache_mb", type=float, default=2048, help="largest dense matrix to keep")
    parser.add_argument("--jl_vectors", type=int, default=32)
    parser.add_argument("--frames", default="9,17,33", help="clip lengths for the scaling study")
    parser.add_argument("--lora_rank", type=int, default=16)
    parser.add_argument("--max_sequence_length", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results_dir", default=None)
    real = parser.add_argument_group("real architecture", "instead of the toy model: a released transformer "
                                     "architecture with random weights (only the per-clip ratio is measured)")
    real.add_argument("--like", default=None, help="wan2.1-t2v-1.3b or cogvideox-2b (default: the toy model)")
    real.add_argument("--num_layers", type=int, default=4, help="transformer blocks (released: 30)")
    real.add_argument("--latent_grid", default="3x16x16,3x32x32",
                      help="latent sizes FxHxW of the clip, comma separated (e.g. 3x16x16: 192 tokens; one "
                           "size in the older F,H,W spelling also works); two or more fit the projection")
    real.add_argument("--text_tokens", type=int, default=512, help="text embedding length")
    real.add_argument("--dtype", default="fp32", help="weights' dtype (bf16, fp16, fp32)")
    real.add_argument("--projector_cache_mb", default="256,auto",
                      help="projector-state budgets to compare, comma separated (MiB or auto)")
    real.add_argument("--gradient_checkpointing", action="store_true", help="checkpoint blocks on both sides")
    return parser.parse_args()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def real_clip(backbone, work: Path, msl: int) -> dict:
    """One toy clip through the real data path: video file, latent cache, frames for the mask."""
    folder = make_dataset(work / "clip", num_clips=1, seed=3, fmt=("jsonl",), progress=False)
    dataset = VideoDataset(folder, num_frames=17, height=64, width=64)
    cache = LatentCache.for_dataset(work / "cache", dataset, backbone, msl)
    cache.build(dataset, backbone, msl, progress=False)
    frames = ((dataset[0]["pixels"].permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return {"frames": frames, **cache.load(dataset.entries[0].clip_id)}


def plain_step(backbone, params, randomness, latents, embeds, mask, num_frames):
    """The baseline: forward + backward of the same loss on the same inputs; gradients land in .grad."""
    def run() -> None:
        x0 = latents[None].float()
        noise = randomness.noise_for(latents.shape)[None]
        t = torch.tensor([float(randomness.timestep)])
        dtype = params[0].dtype if params else x0.dtype  # the weights' dtype (bf16 runs of --like)
        pred = backbone.predict(backbone.add_noise(x0, noise, t).to(dtype), t, embeds[None].to(dtype))
        motion_weighted_loss(pred, backbone.training_target(x0, noise, t), mask, num_frames).backward()
        for p in params:
            p.grad = None
    return run


def featurize_vs_plain(backbone, latents, embeds, mask, num_frames, args, scope="all", extra=None,
                       projector_options=None, gradient_checkpointing=False) -> dict:
    """Median seconds of featurize and of the plain step (interleaved) and their ratio."""
    randomness = CommonRandomness(seed=args.seed)
    featurizer = GradientFeaturizer(backbone, lambda s: make_projector(args.projector, s, dim=args.dim,
                                                                       seed=args.seed, **(projector_options or {})),
                                    randomness, scope=scope, gradient_checkpointing=gradient_checkpointing)
    transformer = backbone.transformer.eval().requires_grad_(False)
    params = [p.requires_grad_(True) for _, p in select_parameters(transformer, scope)]
    variants = {"featurize": lambda: featurizer.featurize(latents, embeds, mask, num_frames),
                "forward_backward": plain_step(backbone, params, randomness, latents, embeds, mask, num_frames),
                **(extra or {})}
    med = interleaved_medians(variants, args.repeats)
    transformer.requires_grad_(False)
    return {"median_s": med, "ratio": med["featurize"] / med["forward_backward"],
            "parameters": int(sum(p.numel() for p in params))}


def per_clip(backbone, clip: dict, args) -> dict:
    mask = motion_mask(clip["frames"], backbone, "dis").latent
    out = featurize_vs_plain(backbone, clip["latents"], clip["prompt_embeds"], mask, 17, args,
                             extra={"motion_mask": lambda: motion_mask(clip["frames"], backbone, "dis")})
    med = out["median_s"]
    out["ratio_with_mask"] = (med["featurize"] + med["motion_mask"]) / med["forward_backward"]
    return out


def by_length(backbone, clip: dict, args) -> list[dict]:
    """Synthetic latents of each clip length (cost does not depend on content), real prompt embeddings."""
    rows = []
    channels = clip["latents"].shape[0]
    g = torch.Generator().manual_seed(args.seed)
    for frames in (int(f) for f in args.frames.split(",")):
        grid = backbone.latent_shape(frames, 64, 64)
        latents = torch.randn(channels, *grid, generator=g)
        mask = torch.rand(*grid, generator=g)
        out = featurize_vs_plain(backbone, latents, clip["prompt_embeds"], mask, frames, args)
        rows.append({"frames": frames, "latent_grid": list(grid),
                     "tokens": backbone.token_grid_for_video(frames, 64, 64).num_tokens, **out})
    return rows


def by_parameters(backbone, clip: dict, args) -> list[dict]:
    """All transformer weights vs LoRA-only; attaches a LoRA adapter, so it runs last."""
    mask = motion_mask(clip["frames"], backbone, "dis").latent
    add_lora(backbone.transformer, args.lora_rank, float(args.lora_rank), ["to_q", "to_k", "to_v", "to_out.0"])
    return [{"scope": scope, **featurize_vs_plain(backbone, clip["latents"], clip["prompt_embeds"], mask, 17,
                                                  args, scope=scope)} for scope in ("all", "lora")]


def test_vectors(d: int, count: int, seed: int) -> torch.Tensor:
    """Gradient-like vectors (heavy-tailed scales) sharing a common part, so their cosines spread over (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.randn(d, generator=g).exp()
    base = torch.randn(d, generator=g) * scale
    mix = torch.linspace(0.0, 3.0, count)[:, None]
    return mix * base + torch.randn(count, d, generator=g) * scale


def cosines(rows: torch.Tensor) -> torch.Tensor:
    unit = rows.double() / rows.double().norm(dim=1, keepdim=True)
    return unit @ unit.T


def jl_error(projected: torch.Tensor, exact: torch.Tensor) -> dict:
    """RMS relative error of squared norms and RMS error of pairwise cosines."""
    norm_err = projected.double().square().sum(1) / exact.double().square().sum(1) - 1
    upper = torch.triu_indices(len(exact), len(exact), 1)
    cos_err = (cosines(projected) - cosines(exact))[upper[0], upper[1]]
    return {"norm_rmse": float(norm_err.square().mean().sqrt()), "cosine_rmse": float(cos_err.square().mean().sqrt())}


def trak_projector(d: int, dim: int, seed: int):
    """TRAK's CPU projector (BasicProjector, Gaussian) if the package is importable, else the reason."""
    try:
        from trak.projectors import BasicProjector, ProjectionType
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return None, f"not available: {type(exc).__name__}: {exc}"
    proj = BasicProjector(grad_dim=d, proj_dim=dim, seed=seed, proj_type=ProjectionType.normal,
                          device=torch.device("cpu"))
    return (lambda x: proj.project(x, model_id=0)), "trak BasicProjector (normal)"


def projector_study(args) -> list[dict]:
    rows = []
    for d in (int(float(s)) for s in args.sizes.split(",")):
        one = torch.randn(1, d, generator=torch.Generator().manual_seed(args.seed))
        vectors = test_vectors(d, args.jl_vectors, args.seed)
        projectors = {name: make_projector(name, [d], dim=args.dim, seed=args.seed) for name in PROJECTORS}
        matrix_mb = d * args.dim * 4 / 2**20
        if matrix_mb <= args.dense_cache_mb:
            projectors["dense_gaussian (matrix kept)"] = DenseGaussian([d], dim=args.dim, seed=args.seed,
                                                                       cache_bytes=int((matrix_mb + 64) * 2**20))
        calls = {name: (lambda p=p: p.project_full(one)) for name, p in projectors.items()}
        trak, trak_note = trak_projector(d, args.dim, args.seed)
        if trak is not None:
            calls["trak"] = lambda: trak(one)
        med = interleaved_medians(calls, args.proj_repeats)
        errors = {name: jl_error(torch.cat([p.project_full(v) for v in vectors.split(8)]), vectors)
                  for name, p in projectors.items()}
        if trak is not None:
            errors["trak"] = jl_error(trak(vectors).float(), vectors)
        dense = med["dense_gaussian"]
        for name, seconds in med.items():
            rows.append({"D": d, "projector": name, "seconds": seconds, "numbers_per_s": d / seconds,
                         "speedup_vs_dense": dense / seconds,
                         "speedup_vs_dense_kept": (med["dense_gaussian (matrix kept)"] / seconds
                                                   if "dense_gaussian (matrix kept)" in med else None),
                         **errors[name]})
        if trak is None:
            rows.append({"D": d, "projector": "trak", "note": trak_note})
    return rows


def markdown(clip: dict, lengths: list, params: list, projs: list, rss: dict, args) -> str:
    med = clip["median_s"]
    lines = ["| per clip (17 frames) | median (ms) | ÷ forward+backward |", "|---|---|---|"]
    for name in ("forward_backward", "featurize", "motion_mask"):
        lines.append(f"| {name} | {med[name] * 1e3:.1f} | {med[name] / med['forward_backward']:.2f} |")
    lines.append(f"| featurize + motion mask | {(med['featurize'] + med['motion_mask']) * 1e3:.1f} | "
                 f"{clip['ratio_with_mask']:.2f} |")
    lines += ["", f"Projector {args.projector} d={args.dim}, {clip['parameters']:,} parameters; goal: featurize ÷ "
              "forward+backward <= 1.25.", "",
              "| frames | latent grid | tokens | forward+backward (ms) | featurize (ms) | ratio |",
              "|---|---|---|---|---|---|"]
    for r in lengths:
        lines.append(f"| {r['frames']} | {'x'.join(map(str, r['latent_grid']))} | {r['tokens']} | "
                     f"{r['median_s']['forward_backward'] * 1e3:.1f} | {r['median_s']['featurize'] * 1e3:.1f} | "
                     f"{r['ratio']:.2f} |")
    lines += ["", "| parameters featurised | count | forward+backward (ms) | featurize (ms) | ratio |",
              "|---|---|---|---|---|"]
    for r in params:
        lines.append(f"| {r['scope']} | {r['parameters']:,} | {r['median_s']['forward_backward'] * 1e3:.1f} | "
                     f"{r['median_s']['featurize'] * 1e3:.1f} | {r['ratio']:.2f} |")
    lines += ["", "| D | projector | ms / gradient | M numbers/s | × faster than dense (regenerated / kept) | "
              "norm² RMSE | cosine RMSE |", "|---|---|---|---|---|---|---|"]
    for r in projs:
        if "seconds" not in r:
            lines.append(f"| {r['D']:.0e} | {r['projector']} | {r['note']} | | | | |")
            continue
        kept = f"{r['speedup_vs_dense_kept']:.1f}" if r["speedup_vs_dense_kept"] is not None else "–"
        lines.append(f"| {r['D']:.0e} | {r['projector']} | {r['seconds'] * 1e3:.1f} | {r['numbers_per_s'] / 1e6:.1f} | "
                     f"{r['speedup_vs_dense']:.1f} / {kept} | {r['norm_rmse']:.3f} | {r['cosine_rmse']:.3f} |")
    lines += ["", f"Output dim {args.dim}; JL errors over {args.jl_vectors} correlated heavy-tailed vectors "
              f"(Gaussian theory: norm² RMSE ≈ √(2/{args.dim}) = {math.sqrt(2 / args.dim):.3f}). "
              "`dense_gaussian` is the library's: its matrix is regenerated from seeds on every call unless it "
              "fits the 256 MiB state cache (D ≲ 1.3e5 at d = 512); '(matrix kept)' holds it in memory. Goal: >= 5x "
              "faster than dense for D >= 1e6 at equal error.", "",
              "Peak RSS after each section (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()) + "."]
    return "\n".join(lines)


def latent_grids(text: str) -> list[list[int]]:
    """`--latent_grid`: "3x16x16,3x32x32" (sizes) or the older single "3,16,16"."""
    if "x" not in text.lower():
        return [[int(v) for v in text.split(",")]]
    return [[int(v) for v in size.lower().split("x")] for size in text.split(",") if size.strip()]


def real_architecture(args) -> None:
    """Per-clip featurize ÷ forward+backward at a released architecture, for each projector-state budget and
    latent size; the ratio projected to 81x480x832."""
    from motionguide.backbones.random_pipeline import reference_pipeline
    from motionguide.backbones.random_weights import build_in_dtype
    from motionguide.loading import parse_dtype
    from motionguide.motive.config import projector_cache_bytes

    dtype = parse_dtype(args.dtype)
    transformer = build_in_dtype(reference_pipeline(args.like).transformer, dtype, seed=args.seed,
                                 num_layers=args.num_layers)
    backbone = backbone_for(transformer)
    if args.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()  # the plain step checkpoints too (featurize leaves it on)
    rss = {"model built": peak_rss_mb()}
    budgets = args.projector_cache_mb.split(",")
    channels = transformer.config.in_channels
    rows = []
    for index, grid in enumerate(latent_grids(args.latent_grid)):
        g = torch.Generator().manual_seed(args.seed)
        latents = torch.randn(channels, *grid, generator=g)
        embeds = torch.randn(args.text_tokens, transformer.config.text_dim, generator=g).to(dtype)
        mask = torch.rand(*grid, generator=g)
        num_frames = 4 * (grid[0] - 1) + 1
        tokens = backbone.token_grid(latents[None].shape).num_tokens
        for budget in budgets if index == 0 else budgets[-1:]:  # budgets compared at the first size
            cache_bytes = projector_cache_bytes(budget)
            start = time.perf_counter()
            out = featurize_vs_plain(backbone, latents, embeds, mask, num_frames, args,
                                     projector_options={"cache_bytes": cache_bytes},
                                     gradient_checkpointing=args.gradient_checkpointing)
            rows.append({"latent_grid": grid, "tokens": tokens, "projector_cache_mb": budget,
                         "cache_bytes": cache_bytes, **out, "section_seconds": time.perf_counter() - start})
            rss[f"{'x'.join(map(str, grid))}, budget {budget}"] = peak_rss_mb()
            print(f"{'x'.join(map(str, grid))} ({tokens} tokens), budget {budget}: ratio {out['ratio']:.2f}",
                  flush=True)
    parameters = int(sum(p.numel() for p in transformer.parameters()))
    kept = [r for r in rows if r["projector_cache_mb"] == budgets[-1]]
    data = {"machine": machine(), "settings": vars(args), "rows": rows, "peak_rss_mb": rss,
            "parameters": parameters, "projection": token_projection(kept, transformer, args)}
    lines = [f"{args.like} transformer architecture, random {args.dtype} weights, {args.num_layers} blocks "
             f"({parameters:,} parameters), {args.text_tokens} text tokens, projector {args.projector} d={args.dim}"
             + (", gradient checkpointing" if args.gradient_checkpointing else "") + f", one thread, "
             f"{args.repeats} interleaved repeats (medians).", "",
             "| latents (tokens) | projector state kept (MiB) | forward+backward (s) | featurize (s) | "
             "featurize − forward+backward (s) | ratio |", "|---|---|---|---|---|---|"]
    for r in rows:
        med = r["median_s"]
        lines.append(f"| {'x'.join(map(str, r['latent_grid']))} ({r['tokens']}) | {r['projector_cache_mb']} "
                     f"({r['cache_bytes'] / 2**20:.0f}) | {med['forward_backward']:.2f} | {med['featurize']:.2f} | "
                     f"{med['featurize'] - med['forward_backward']:+.2f} | {r['ratio']:.2f} |")
    lines += ["", *projection_lines(data["projection"], budgets[-1])]
    lines += ["", "Peak RSS (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()) + "."]
    write_results("attribution_cost_real_arch", data, "\n".join(lines), results_dir=args.results_dir)


TARGET_TOKENS = 21 * 30 * 52  # Wan2.1 at 81x480x832: 21 latent frames, 60x104 latents, 2x2 patches


def token_projection(rows: list[dict], transformer, args) -> dict | None:
    """The fits and the projected ratio at TARGET_TOKENS from `rows` (one per size, the same budget); None
    with fewer than two token counts.

    featurize(N) = fb(N) + E: E, the projection, is a cost per featurised parameter (the same at every N;
    its value at each size is reported, so a trend shows); E = the mean of the measured excesses.
    fb(N) = a + b W(N), least squares; W(N) = real_arch_stages.block_work (one block's FLOPs at N video tokens,
    attention's N^2 term included). Also fb linear in N (a' + b' N: ignores attention's growth, so its
    projected ratio is an upper bound). At the released 30 blocks: E x (parameters at 30 / measured) and fb x
    30 / measured blocks (every block's work is the same; the embeddings and head, outside the blocks, are
    counted as blocks: a small overestimate of fb)."""
    from real_arch_stages import RELEASED_LAYERS, block_work

    if len({r["tokens"] for r in rows}) < 2 or not hasattr(transformer, "blocks"):
        return None  # one token count; or not Wan2.1's block layout (W(N) and the target are Wan2.1's)
    import numpy as np

    tokens = np.array([r["tokens"] for r in rows], dtype=float)
    fb = np.array([r["median_s"]["forward_backward"] for r in rows])
    excess = np.array([r["median_s"]["featurize"] - r["median_s"]["forward_backward"] for r in rows])
    block = transformer.blocks[0]
    linear = sum(m.weight.numel() for name, m in block.named_modules()  # as real_arch_stages._block_numbers
                 if isinstance(m, torch.nn.Linear) and not name.startswith(("attn2.to_k", "attn2.to_v")))
    work = np.array([block_work(n, linear) for n in tokens])
    (a, b), (a_lin, b_lin) = (np.polyfit(x, fb, 1)[::-1] for x in (work, tokens))
    e = float(excess.mean())
    parameters = sum(p.numel() for p in transformer.parameters())
    block_parameters = sum(p.numel() for p in block.parameters())
    layers = len(transformer.blocks)
    released_parameters = parameters + (RELEASED_LAYERS - layers) * block_parameters
    fb_target = float(a + b * block_work(TARGET_TOKENS, linear))
    fb_target_linear = float(a_lin + b_lin * TARGET_TOKENS)
    e_released = e * released_parameters / parameters
    fb_released = fb_target * RELEASED_LAYERS / layers
    return {
        "target_tokens": TARGET_TOKENS, "tokens": tokens.tolist(), "excess_s": excess.tolist(),
        "projection_s": e, "projection_ns_per_parameter": e / parameters * 1e9,
        "fb_fit": {"intercept_s": float(a), "s_per_flop": float(b), "block_linear_weights": int(linear)},
        "fb_linear_fit": {"intercept_s": float(a_lin), "s_per_token": float(b_lin)},
        "fb_s_per_token_measured": (fb / tokens).tolist(),
        "target_fb_s": fb_target, "target_ratio": 1 + e / fb_target,
        "target_fb_linear_s": fb_target_linear, "target_ratio_linear": 1 + e / fb_target_linear,
        "released_layers": RELEASED_LAYERS, "released_parameters": int(released_parameters),
        "target_ratio_released": 1 + e_released / fb_released,
    }


def projection_lines(p: dict | None, budget: str) -> list[str]:
    if p is None:
        return ["(One latent size: no projection; give two or more to `--latent_grid`.)"]
    excess = ", ".join(f"{e:+.2f} s at {int(n)}" for n, e in zip(p["tokens"], p["excess_s"]))
    per_token = ", ".join(f"{s * 1e3:.1f} ms at {int(n)}" for n, s in zip(p["tokens"], p["fb_s_per_token_measured"]))
    return [
        f"Projection (budget {budget}), featurize = forward+backward + E: E, the projection, is a cost per "
        f"parameter, the same at every token count (measured: {excess} tokens; E = {p['projection_s']:.2f} s, "
        f"{p['projection_ns_per_parameter']:.1f} ns per parameter). Forward+backward per token: {per_token}; "
        f"fit a + b W(N), W(N) = N (2P + 4TD) + 4DN^2 one block's FLOPs (P = {p['fb_fit']['block_linear_weights']:,} "
        "linear weights a video token passes through, T = 512 text tokens, D = 1536; attention's N^2 included, "
        "as `real_arch_stages.py` projects). At 81x480x832 (32,760 tokens): forward+backward "
        f"{p['target_fb_s']:.0f} s on this CPU, ratio **{p['target_ratio']:.3f}** "
        f"(at the released 30 blocks, E x parameters {p['released_parameters']:,} / measured, forward+backward x "
        f"30 / measured blocks: {p['target_ratio_released']:.3f}); with a forward+backward linear in N "
        f"({p['fb_linear_fit']['s_per_token'] * 1e3:.2f} ms per token, attention's growth ignored: an upper bound) "
        f"{p['target_ratio_linear']:.3f}. Goal <= 1.25.",
    ]


def main() -> None:
    single_thread()
    args = parse_args()
    if args.like:
        return real_architecture(args)
    work = Path(tempfile.mkdtemp(prefix="mg-attribution-cost-"))
    try:
        backbone = backbone_for(load_pipeline(args.model))
        rss = {"model loaded": peak_rss_mb()}
        clip = real_clip(backbone, work, args.max_sequence_length)
        timings = per_clip(backbone, clip, args)
        rss["per-clip featurisation"] = peak_rss_mb()
        lengths = by_length(backbone, clip, args)
        rss["clip lengths"] = peak_rss_mb()
        params = by_parameters(backbone, clip, args)
        rss["LoRA vs all"] = peak_rss_mb()
        start = time.perf_counter()
        projs = projector_study(args)
        rss["projectors"] = peak_rss_mb()
        data = {"machine": machine(), "settings": vars(args), "per_clip": timings, "by_length": lengths,
                "by_parameters": params, "projectors": projs, "projector_study_seconds": time.perf_counter() - start,
                "peak_rss_mb": rss}
        write_results("attribution_cost", data, markdown(timings, lengths, params, projs, rss, args),
                      results_dir=args.results_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
