"""Per-stage time and peak memory at the real Wan2.1-T2V-1.3B architecture (random weights, bf16), measured on
this CPU at two small videos and projected to the model's 81x480x832 (32,760 tokens).

Each stage (`_real_arch.STAGES`: latent caching, a no-grad forward, a LoRA r32 step with and without gradient
checkpointing, Motive featurization of one clip with and without it, a sampling step with CFG and with
correspondence guidance, an IMAP probe) runs in its own subprocess, so one stage's allocations cannot hide
another's: its memory is that process's resident high-water mark during the timed call, minus the RSS before
the pipeline was loaded, i.e. the weights plus everything the stage allocates ("rest").

Projection (stated in the output too), from the two measured token counts N1 < N2 at L transformer blocks:

* weights: exact, from the architecture (transformer at 30 blocks, the released 24-layer UMT5-XXL encoder with
  its 256,384-token vocabulary, the VAE), in bf16; each stage counts the components it needs;
* rest (activations, gradients, LoRA and optimizer state, projector state, allocator slack): linear in tokens
  (rest = c + d N, fit through the two points); attention scores are never materialised (SDPA), so nothing in it
  grows as N^2; times 30 / L for transformer stages (every block holds its share; conservative with
  checkpointing, whose per-block share is smaller). Caching's VAE encodes causally in 4-frame chunks: its memory
  is fit against pixels per frame and does not grow with the frame count;
* time: t = a + b W(N), W(N) = N (2 P + 4 T D) + 4 D N^2 per block (P linear weights per block and token, T = 512
  text tokens, D = 1536: matrix products at the rate the measured points show, attention's N^2 term included),
  fit through the two points; reported as ratios to the forward at the same N (the depth cancels), because
  this machine's absolute times say nothing about a GPU's. Caching's time is linear in latent frames x pixels.

    python benchmarks/real_arch_stages.py      # ~5 min of CPU at one thread (20 subprocesses, each < 2.5 GiB RSS);
                                               # 25 min of wall time on the shared 2-core machine
    python benchmarks/real_arch_stages.py --sizes 5x64x64,9x96x96 --stages forward,train_step --results_dir /tmp/r
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from _common import limit_threads, machine, write_results
from _real_arch import STAGES, Bench, VideoSize, measure, resident_bytes, write_pipeline

from motionguide.cli_args import ArgumentParser

GIB = 2**30
TARGET = VideoSize(81, 480, 832)
RELEASED_LAYERS = 30
TEXT_LENGTH = 512
HIDDEN = 1536  # Wan2.1-1.3B's model width
#: which components' weights each stage holds at the target (sampling: text encoder offloaded after encoding)
STAGE_WEIGHTS = {
    "cache": ("vae", "text_encoder"),
    "forward": ("transformer",),
    "train_step": ("transformer",),
    "train_step_gc": ("transformer",),
    "motive": ("transformer",),
    "motive_gc": ("transformer",),
    "sample_cfg": ("transformer", "vae"),
    "sample_guided": ("transformer", "vae"),
    "imap": ("transformer",),
    "decode": ("transformer", "vae"),
}
#: stages that run the VAE (memory ~ pixels per frame, time ~ latent frames x pixels), not the transformer
VAE_STAGES = {"cache", "decode"}
#: the issue's single-GPU goals at 81x480x832 (GB = 1e9 bytes)
GOALS_GB = {"train_step_gc": 24, "motive_gc": 40, "sample_cfg": 16, "sample_guided": 16, "decode": 16}


# ---------------------------------------------------------------------------------------------- one stage
def run_one_stage(args) -> None:
    """Child process: load, run one stage (warm-up + timed calls), print one JSON line."""
    import diffusers  # noqa: F401  (libraries imported before the baseline: it counts them out)
    import peft  # noqa: F401
    import transformers  # noqa: F401

    import motionguide.correspondence  # noqa: F401
    import motionguide.motive  # noqa: F401
    import motionguide.saliency.monitor  # noqa: F401

    limit_threads(args.threads)
    baseline = resident_bytes()
    bench = Bench(args.model, VideoSize.parse(args.size), device="cpu", dtype="bf16")
    loaded = resident_bytes()
    run = bench.stage(args.run_stage)
    result = measure(run, bench.device, repeats=args.repeats, warmup=1)
    weights = bench.weight_bytes()
    lora_params = sum(p.numel() for n, p in bench.pipe.transformer.named_parameters() if "lora_" in n)
    result["wall_seconds"], result["seconds"] = result["seconds"], result["cpu_seconds"]  # see measure()
    result.update(stage=args.run_stage, size=args.size, tokens=bench.tokens, layers=bench.num_layers(),
                  weights=weights, baseline_bytes=baseline, loaded_bytes=loaded, lora_parameters=lora_params,
                  kept_bytes=result["start_bytes"] - loaded, transient_bytes=result["peak_above_bytes"],
                  rest_bytes=result["peak_total_bytes"] - baseline - sum(weights.values()))
    print("RESULT " + json.dumps(result), flush=True)


def run_stage_subprocess(args, stage: str, size: str) -> dict:
    command = [sys.executable, __file__, "--run_stage", stage, "--size", size, "--model", str(args.model),
               "--threads", str(args.threads), "--repeats", str(args.repeats)]
    # glibc: large blocks straight from mmap and freed memory returned at once, so the resident set follows
    # the live tensors (otherwise freed pages linger in the heap and the high-water mark is allocator noise)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads)), "MALLOC_MMAP_THRESHOLD_": "65536",
           "MALLOC_TRIM_THRESHOLD_": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"stage {stage} at {size} failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    print(f"  {stage:>14} {size:>10}: {result['seconds']:.2f} s, kept {result['kept_bytes'] / GIB:.3f} GiB, "
          f"transient {result['transient_bytes'] / GIB:.3f} GiB, rest {result['rest_bytes'] / GIB:.3f} GiB",
          flush=True)
    return result


# ---------------------------------------------------------------------------------------------- projection
def released_weight_bytes(measured: dict, layers: int, transformer_block_bytes: int) -> dict[str, int]:
    """Bytes of each component at the released size in bf16: transformer at 30 blocks (measured per block),
    the VAE as measured, the released UMT5-XXL encoder counted from its config on the meta device."""
    from transformers import UMT5Config, UMT5EncoderModel

    from motionguide.backbones.wan.reference import UMT5_XXL

    with torch.device("meta"):
        encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
    text_params = sum(p.numel() for p in encoder.parameters())
    return {"transformer": measured["transformer"] + (RELEASED_LAYERS - layers) * transformer_block_bytes,
            "vae": measured["vae"], "text_encoder": text_params * 2}


#: stages whose activations are kept for a backward (the others free each block's as they go)
GRADIENT_STAGES = {"train_step", "train_step_gc", "motive", "motive_gc"}


def _depth_scaled_slope(stage: str, slope: float, layers: int, results: dict, small: str, large: str):
    """Transient bytes per token at 30 blocks from the slope measured at `layers` blocks.

    No-grad stages free each block's activations before the next: one block's worth, independent of depth.
    A backward without checkpointing keeps every block's: x 30 / layers. With checkpointing it keeps each
    block's input plus one block's full activations while that block is recomputed: with the same stage's
    plain slope (all blocks' full activations) at the same depth, per block full = plain / layers and
    input = (checkpointed - full) / layers, so at 30 blocks: 30 input + full."""
    if stage not in GRADIENT_STAGES:
        return slope, "no grad: one block at a time"
    plain = stage.removesuffix("_gc")
    if stage == plain:
        return slope * RELEASED_LAYERS / layers, f"x {RELEASED_LAYERS}/{layers}"
    if plain not in results:
        return slope * RELEASED_LAYERS / layers, f"x {RELEASED_LAYERS}/{layers} (no {plain} run to separate terms)"
    p_small, p_large = results[plain][small], results[plain][large]
    _, plain_slope = linear_fit(p_small["tokens"], p_small["transient_bytes"], p_large["tokens"],
                                p_large["transient_bytes"])
    full = plain_slope / layers
    saved_input = max(0.0, (slope - full) / layers)
    return RELEASED_LAYERS * saved_input + full, (f"30 x {saved_input / 2**10:.3g} KiB saved input + "
                                                  f"{full / 2**10:.3g} KiB one block recomputed")


def linear_fit(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float]:
    """(intercept, slope) of the line through two points."""
    slope = (y2 - y1) / (x2 - x1)
    return y1 - slope * x1, slope


def block_work(tokens: float, per_token_linear: float) -> float:
    """Multiply-add FLOPs of one block's forward at `tokens` video tokens (see the module docstring)."""
    return tokens * (2 * per_token_linear + 4 * TEXT_LENGTH * HIDDEN) + 4 * HIDDEN * tokens**2


def project(results: dict[str, dict[str, dict]], sizes: list[str], block_linear_params: int,
            block_bytes: int) -> dict:
    """Per stage: the fits and the values at TARGET (see the module docstring)."""
    small, large = sizes
    first = results["forward"][small] if "forward" in results else next(iter(results.values()))[small]
    layers = first["layers"]
    weights = released_weight_bytes(first["weights"], layers, block_bytes)
    bench_grid = {s: results[next(iter(results))][s]["tokens"] for s in sizes}
    target_tokens = 21 * 30 * 52  # Wan2.1: 81 frames -> 21 latent frames, 480x832 -> 60x104 latent -> 30x52 patches
    out = {"target": str(TARGET), "target_tokens": target_tokens, "measured_layers": layers,
           "released_weight_bytes": weights, "stages": {}}
    for stage, by_size in results.items():
        a, b = by_size[small], by_size[large]
        # loading overhead (tokenizer, configs, ...): constant; kept: what the stage holds between calls
        overhead = max(0, a["loaded_bytes"] - a["baseline_bytes"] - sum(a["weights"].values()))
        kept = max(a["kept_bytes"], b["kept_bytes"])
        if stage in VAE_STAGES:  # VAE: memory ~ pixels per frame (chunked), time ~ latent frames x pixels
            sa, sb = VideoSize.parse(small), VideoSize.parse(large)
            xa, xb = sa.height * sa.width, sb.height * sb.width
            x_target = TARGET.height * TARGET.width
            c, d = linear_fit(xa, a["transient_bytes"], xb, b["transient_bytes"])
            rest = overhead + kept + c + d * x_target
            ta, tb = ((1 + (s.frames - 1) // 4) * s.height * s.width for s in (sa, sb))
            t0, t1 = linear_fit(ta, a["seconds"], tb, b["seconds"])
            seconds = t0 + t1 * (1 + (TARGET.frames - 1) // 4) * x_target
            time_fit = f"t = {t0:.3g} s + {t1:.3g} s x latent frames x pixels per frame"
            memory_fit = (f"transient = {c / GIB:.3g} GiB + {d:.3g} B x pixels per frame; kept {kept / GIB:.3g} GiB, "
                          f"loading overhead {overhead / GIB:.3g} GiB")
            depth = 1.0
        else:
            c, d = linear_fit(a["tokens"], a["transient_bytes"], b["tokens"], b["transient_bytes"])
            depth = RELEASED_LAYERS / layers
            slope, how = _depth_scaled_slope(stage, d, layers, results, small, large)
            # what a stage keeps between calls grows with depth only for the LoRA and its optimizer state
            # (Motive's projector state is bounded by its cache budget; the rest is allocator leftovers)
            kept_depth = depth if stage.startswith("train_step") else 1.0
            rest = overhead + kept * kept_depth + c * (depth if stage in GRADIENT_STAGES else 1.0) \
                + slope * target_tokens
            wa, wb = (block_work(r["tokens"], block_linear_params) for r in (a, b))
            t0, t1 = linear_fit(wa, a["seconds"], wb, b["seconds"])
            seconds = t0 + t1 * block_work(target_tokens, block_linear_params)
            time_fit = f"t = {t0:.3g} s + {t1:.3g} s x W(N) / FLOP"
            memory_fit = (f"transient = {c / GIB:.3g} GiB + {d / 2**10:.3g} KiB x N at {layers} blocks; at 30: "
                          f"{slope / 2**10:.3g} KiB x N ({how}); kept {kept / GIB:.3g} GiB x {kept_depth:.3g}"
                          f"; loading overhead {overhead / GIB:.3g} GiB")
        needed = sum(weights[k] for k in STAGE_WEIGHTS[stage])
        out["stages"][stage] = {"time_intercept_s": t0, "rest_bytes": rest, "weight_bytes": needed,
                                "total_bytes": needed + rest,
                                "seconds_at_measured_depth": seconds, "time_fit": time_fit,
                                "memory_fit": memory_fit, "rest_depth_factor": depth}
    if "forward" in out["stages"]:
        forward = out["stages"]["forward"]["seconds_at_measured_depth"]
        for stage, row in out["stages"].items():
            if stage in VAE_STAGES:  # VAE (+ 1-layer text encoder) vs a forward of the full depth
                row["ratio_to_forward"] = row["seconds_at_measured_depth"] / (forward * RELEASED_LAYERS / layers)
            else:
                row["ratio_to_forward"] = row["seconds_at_measured_depth"] / forward
    out["bench_tokens"] = bench_grid
    return out


# ---------------------------------------------------------------------------------------------- report
def markdown(results: dict, sizes: list[str], projection: dict, layers: int) -> str:
    small, large = sizes
    tokens = [results[next(iter(results))][s]["tokens"] for s in sizes]
    mib = 2**20
    lines = [f"| stage | {small} ({tokens[0]} tokens): CPU s (÷ forward) | transient MiB | {large} ({tokens[1]} "
             "tokens): CPU s (÷ forward) | transient MiB | kept MiB | 81x480x832 (32,760 tokens): ÷ forward | "
             "weights GB | rest GB | total GB | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for stage, by_size in results.items():
        cells = []
        for s in sizes:
            r = by_size[s]
            fwd = results.get("forward", {}).get(s, {}).get("seconds")
            ratio = r["seconds"] / fwd if fwd else float("nan")
            if stage in VAE_STAGES and fwd:
                ratio = r["seconds"] / (fwd * RELEASED_LAYERS / layers)
            cells += [f"{r['seconds']:.2f} ({ratio:.2f})", f"{r['transient_bytes'] / mib:.0f}"]
        cells.append(f"{max(by_size[s]['kept_bytes'] for s in sizes) / mib:.0f}")
        p = projection["stages"][stage]
        goal = GOALS_GB.get(stage)
        verdict = "" if goal is None else (f"≤ {goal} GB: {'met' if p['total_bytes'] / 1e9 <= goal else 'missed'}")
        lines.append(f"| {stage} | {' | '.join(cells)} | {p.get('ratio_to_forward', float('nan')):.2f} | "
                     f"{p['weight_bytes'] / 1e9:.2f} | {p['rest_bytes'] / 1e9:.2f} | {p['total_bytes'] / 1e9:.2f} | "
                     f"{verdict} |")
    w = projection["released_weight_bytes"]
    lines += ["", *_motive_cost_lines(results, sizes, projection)]
    lines += [
        "",
        f"Measured: random-weight Wan2.1-T2V-1.3B pipeline (`motionguide random-pipeline --like wan2.1-t2v-1.3b "
        f"--num_layers {layers} --text_layers 1`: {layers} of the 30 transformer blocks, 1 of the 24 text-encoder "
        "layers, real widths), bf16 weights (diffusers' fp32 modules kept), on this CPU at one thread, one "
        "subprocess per stage (the stages: `benchmarks/_real_arch.py`). CPU s: the process's CPU time of one call "
        "after a warm-up (the machine is shared; wall times carry other jobs' load); ÷ forward: over a no-grad "
        f"conditional forward at the same size (caching and decode, which do not run the transformer: over a "
        f"30-block forward, the {layers}-block one x 30/{layers}). transient: the resident high-water mark "
        "above the call's start (activations, gradients); "
        "kept: what the stage holds between calls beyond the loaded weights (LoRA + AdamW state, projector state).",
        "",
        "Projected to 81x480x832, per stage: weights (exact, bf16, released sizes: transformer "
        f"{w['transformer'] / 1e9:.2f} GB at 30 blocks, VAE {w['vae'] / 1e9:.2f} GB, UMT5-XXL encoder "
        f"{w['text_encoder'] / 1e9:.2f} GB; caching holds VAE + text encoder; training, Motive and IMAP the "
        "transformer, the latents coming from the cache; a sampling step the transformer + VAE, the text encoder "
        "offloaded; the decode the transformer + VAE) + rest: kept (x 30/" + f"{layers} for the LoRA and AdamW "
        "state; Motive's projector state is bounded by its cache budget) + transient, linear in tokens through the "
        "two points: attention runs in SDPA and never stores its N^2 scores (checked here: bf16 SDPA at 4,096 "
        "tokens x 12 heads peaks at 18 MiB where the scores alone would take 384 MiB), so every activation is linear "
        "in N. "
        "Depth: a no-grad stage frees each block's activations (one block's worth at any depth); a backward keeps "
        f"every block's (x 30/{layers}); with gradient checkpointing, each block's input plus one block's full "
        "activations, separated using the same stage without checkpointing (memory_fit in the JSON). VAE stages: "
        "memory linear in pixels per frame (the causal VAE works in 4-frame chunks), time linear in latent frames "
        "x pixels. Time: a + b W(N), W(N) = N (2P + 4TD) + 4DN^2 FLOPs per block "
        "(P: linear weights per token, T = 512 text tokens, D = 1536), through the two points; at 32,760 tokens "
        "attention is ~70% of a forward's FLOPs, so the projected ratios weigh each stage's attention share. "
        "Absolute times and GPU memory need a GPU (`benchmarks/gpu_smoke.py`, below). Fits per stage: "
        "`benchmarks/results/real_arch_stages.json`. GB = 1e9 bytes; the rest includes CPU allocator slack, so "
        "it bounds a GPU's from above.",
    ]
    return "\n".join(lines)


def _motive_cost_lines(results: dict, sizes: list[str], projection: dict) -> list[str]:
    """Motive featurization over a LoRA training step (forward + backward) at the same checkpointing: the issue's
    goal is <= 1.25."""
    out = []
    for motive, step in (("motive", "train_step"), ("motive_gc", "train_step_gc")):
        if motive in results and step in results:
            measured = ", ".join(f"{results[motive][s]['seconds'] / results[step][s]['seconds']:.2f} at "
                                 f"{results[motive][s]['tokens']} tokens" for s in sizes)
            p = projection["stages"]
            projected = p[motive]["seconds_at_measured_depth"] / p[step]["seconds_at_measured_depth"]
            fixed = p[motive]["time_intercept_s"]
            out.append(f"- {motive} ÷ {step} (Motive featurization over a forward+backward, goal <= 1.25): "
                       f"{measured}; projected to 32,760 tokens: {projected:.2f} (a {fixed:.1f} s CPU fixed cost per "
                       "clip at this depth, independent of tokens).")
    if out:
        out.append("  Motive's fixed per-clip cost is the projector (its random state regenerated on the CPU, "
                   "proportional to the parameters): at these token counts it dominates, at 32,760 tokens the CPU's "
                   "forward+backward dwarfs it, so the projected ratio rests on the two-point slopes (a 2-3 s "
                   "difference over the fixed cost: uncertain to a factor ~2). On a GPU the forward+backward is "
                   "~100x faster; the projector state is then generated on the GPU too (`projector_rng: auto`; "
                   "with `cpu` it is made on one CPU core, and the GPU ratio would be far above this).")
    return out


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="a random Wan2.1 pipeline folder (default: built in --work with --num_layers)")
    parser.add_argument("--work", default=None, help="folder for the built pipeline (default: a temporary one)")
    parser.add_argument("--num_layers", type=int, default=4, help="transformer blocks of the built pipeline")
    parser.add_argument("--sizes", default="9x96x96,9x160x160", help="two video sizes FxHxW (tokens must differ)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages (forward is the unit)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per stage after one warm-up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results_dir", default=None)
    parser.add_argument("--from_json", default=None,
                        help="a results JSON (this script's, or <work>/measured.json) whose measurements to reuse")
    parser.add_argument("--run_stage", default=None, help="(internal) run one stage in this process")
    parser.add_argument("--size", default=None, help="(internal) the size of --run_stage")
    args = parser.parse_args()
    if args.run_stage:
        run_one_stage(args)
        return
    sizes = args.sizes.split(",")
    stages = args.stages.split(",")
    if len(sizes) != 2 or "forward" not in stages:
        parser.error("--sizes needs exactly two sizes and --stages must include forward (the time unit)")
    work = Path(args.work or tempfile.mkdtemp(prefix="real-arch-"))
    if args.model is None:
        args.model = write_pipeline(work / f"wan2.1-random-{args.num_layers}", args.num_layers)
    results: dict[str, dict[str, dict]] = {}
    if args.from_json:  # re-project saved measurements (e.g. after changing the projection)
        saved = json.loads(Path(args.from_json).read_text())["results"]
        results = {stage: saved[stage] for stage in stages if stage in saved}
    for stage in stages:
        for size in sizes:
            if size not in results.get(stage, {}):
                results.setdefault(stage, {})[size] = run_stage_subprocess(args, stage, size)
                (work / "measured.json").write_text(json.dumps({"results": results}, indent=1))
    block_linear, block_bytes, layers = _block_numbers(args.model)
    projection = project(results, sizes, block_linear, block_bytes)
    settings = {**vars(args), "model": f"random wan2.1-t2v-1.3b pipeline, {layers} blocks, 1 text layer",
                "work": None, "from_json": None}  # no machine paths in the committed results
    write_results("real_arch_stages", {"machine": machine(), "settings": settings, "results": results,
                                       "projection": projection, "stages": STAGES},
                  markdown(results, sizes, projection, layers), args.results_dir)


def _block_numbers(model: str | Path) -> tuple[int, int, int]:
    """(linear weights per token per block (what each video token multiplies through, excluding the
    cross-attention's key/value projections of the text), bytes per block, blocks) of the pipeline's
    transformer, from its config on the meta device."""
    from diffusers import WanTransformer3DModel

    config = WanTransformer3DModel.load_config(str(Path(model) / "transformer"))
    with torch.device("meta"):
        transformer = WanTransformer3DModel.from_config(config)
    block = transformer.blocks[0]
    linear = sum(m.weight.numel() for name, m in block.named_modules()
                 if isinstance(m, torch.nn.Linear) and not name.startswith(("attn2.to_k", "attn2.to_v")))
    size = sum(p.numel() * 2 for p in block.parameters())
    return linear, size, len(transformer.blocks)


if __name__ == "__main__":
    main()
