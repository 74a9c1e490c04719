"""GPU smoke run: the fine-tune's stages on a random-weight Wan2.1-T2V-1.3B pipeline (the released architecture,
bf16) at the model's 81x480x832 on one CUDA device: step time and peak CUDA memory per stage, checked against the
issue's goals, as a markdown table and JSON in --out.

    python benchmarks/gpu_smoke.py --out gpu-smoke                  # 30 blocks, 24 text layers, 81x480x832
    python benchmarks/gpu_smoke.py --out gpu-smoke --small          # a quick check (9x96x96, 1 text layer)
    python benchmarks/gpu_smoke.py --out /tmp/s --small --device cpu --num_layers 2   # this CPU (the test's path)

Stages (what each one is: `benchmarks/_real_arch.py`), in this order, one process: latent caching (VAE encode +
text encode), then the text encoder leaves the device (moved to the CPU, as a run with a complete cache or model
offload has it), a no-grad forward, an IMAP probe, sampling steps with CFG and with correspondence guidance, the
VAE decode that ends a sampling call, Motive featurization of one clip with gradient checkpointing, and a LoRA
r32 step with gradient checkpointing (last, because it adds the adapter). Each stage: `--warmup` untimed calls
(1), then `--repeats` timed calls (1); the peak is `torch.cuda.max_memory_allocated` over the timed calls,
everything on the device counted (weights included). On the CPU the peak is the process's resident high-water
mark instead (the whole process: libraries included), which is only a check that the script runs.
Last, with the pipeline off the device, the Motive projector's random state: generated as the pass does
(`projector_rng: auto`, on the GPU) vs on the CPU, per 2^20-number block, and bitwise reproducible or not.

Goals (issue 15, Wan2.1-1.3B, LoRA r32, 81x480x832, one GPU): training step <= 24 GB, Motive featurization per
clip <= 40 GB with checkpointing, sampling <= 16 GB with the text encoder offloaded (GB = 1e9 bytes).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch
from _common import limit_threads, machine, write_results
from _real_arch import STAGES, Bench, VideoSize, measure, write_pipeline

from motionguide.cli_args import ArgumentParser

DEFAULT_STAGES = ["cache", "forward", "imap", "sample_cfg", "sample_guided", "decode", "motive_gc", "train_step_gc"]
#: stage -> (goal name, bytes) of the issue's goals
GOALS = {
    "train_step_gc": ("training step <= 24 GB", 24e9),
    "motive_gc": ("Motive featurization per clip <= 40 GB (checkpointing)", 40e9),
    "sample_cfg": ("sampling <= 16 GB (text encoder offloaded)", 16e9),
    "sample_guided": ("sampling <= 16 GB (text encoder offloaded)", 16e9),
    "decode": ("sampling <= 16 GB (text encoder offloaded)", 16e9),
}
SMALL = VideoSize(9, 96, 96)
FULL = VideoSize(81, 480, 832)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_smoke.md / gpu_smoke.json")
    parser.add_argument("--device", default="cuda", help="cuda (the smoke run) or cpu (checks the script runs)")
    parser.add_argument("--model", default=None, help="a random Wan2.1 pipeline folder (default: built under "
                                                      "--work with --num_layers / --text_layers)")
    parser.add_argument("--work", default=None, help="where to build the pipeline (default: <out>/pipeline)")
    parser.add_argument("--small", action="store_true",
                        help=f"a quick check: {SMALL} and 1 text-encoder layer unless --size / --text_layers say")
    parser.add_argument("--size", default=None, help=f"video FxHxW (default {FULL}; with --small {SMALL})")
    parser.add_argument("--num_layers", type=int, default=30, help="transformer blocks (the released 30)")
    parser.add_argument("--text_layers", type=int, default=None,
                        help="text-encoder layers (default: the released 24; with --small 1)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps per timed sampling call")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per stage after the warm-up")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed calls per stage first (0 saves time; the first call then pays CUDA's setup)")
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES), help="comma-separated stages to run")
    parser.add_argument("--vae_tiling", action="store_true", help="decode and encode with VAE tiling")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = parser.parse_args(argv)
    args.size = VideoSize.parse(args.size) if args.size else (SMALL if args.small else FULL)
    if args.text_layers is None:
        args.text_layers = 1 if args.small else 24
    unknown = [s for s in args.stages.split(",") if s not in STAGES]
    if unknown:
        parser.error(f"--stages: unknown {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA device; use --device cpu --small to check the script")
    return args


def run_smoke(args) -> dict:
    limit_threads(args.threads)
    device = torch.device(args.device)
    out = Path(args.out)
    model = args.model
    build_seconds = 0.0
    if model is None:
        start = time.perf_counter()
        model = write_pipeline(Path(args.work or out / "pipeline"), args.num_layers, args.text_layers)
        build_seconds = time.perf_counter() - start
    bench = Bench(model, args.size, device=args.device, dtype="bf16")
    if args.vae_tiling:
        bench.pipe.vae.enable_tiling()
    steps = args.steps
    rows = []
    for stage in args.stages.split(","):
        if stage != "cache" and bench.pipe.text_encoder.device.type != "cpu":
            bench.pipe.text_encoder.to("cpu")  # what sampling and training hold: the cache holds the text
            _release(device)
        run = bench._prepare_sample(False, guided=stage == "sample_guided", steps=steps) \
            if stage in ("sample_cfg", "sample_guided") else bench.stage(stage)
        try:
            result = measure(run, device, repeats=args.repeats, warmup=args.warmup)
            error = None
        except torch.OutOfMemoryError as exc:  # a finding, not a crash: report it and go on
            result, error = {}, f"out of memory: {str(exc).splitlines()[0]}"
        del run
        _release(device)
        per = steps if stage in ("sample_cfg", "sample_guided") else 1
        row = {"stage": stage, "what": STAGES[stage], "seconds": result.get("seconds"),
               "seconds_per_step": None if not result else result["seconds"] / per,
               "peak_bytes": result.get("peak_total_bytes"), "error": error}
        if stage in GOALS:
            goal, limit = GOALS[stage]
            row["goal"] = goal
            row["goal_met"] = None if row["peak_bytes"] is None or not device.type == "cuda" \
                else row["peak_bytes"] <= limit
        rows.append(row)
        print(f"{stage:>14}: {row}", flush=True)
    bench_tokens, bench_layers, weights = bench.tokens, bench.num_layers(), bench.weight_bytes()
    del bench  # the projector check runs without the pipeline on the device
    _release(device)
    projector = projector_state_check(device)
    print(f"projector state: {projector}", flush=True)
    return {"machine": {**machine(), "device": _device_name(device)}, "size": str(args.size),
            "tokens": bench_tokens, "num_layers": bench_layers, "text_layers": args.text_layers,
            "sampling_steps_per_call": steps, "weights_bytes": weights, "build_seconds": build_seconds,
            "rows": rows, "projector_state": projector, "settings": {k: str(v) for k, v in vars(args).items()}}


def projector_state_check(device: torch.device, numel: int = 2**22) -> dict:
    """The Motive projector with its random state made where the pass makes it (`projector_rng: auto`: on the
    GPU when the gradients are there) and on the CPU: seconds to generate the state of one 2^20 block and
    project it (nothing kept, as for every clip when the state cache is too small), and whether two projectors
    built alike give bitwise equal features (the per-device reproducibility the README states)."""
    from motionguide.motive.config import projector_rng_device
    from motionguide.motive.projectors import BlockwiseFastfood

    grad = torch.randn(numel, generator=torch.Generator().manual_seed(0)).to(device)
    found = {}
    for label, rng_device in (("pass", projector_rng_device("auto", device)), ("cpu", None)):
        def make():
            return BlockwiseFastfood([numel], dim=512, cache_bytes=0, rng_device=rng_device)
        first = make().project_parameter(0, grad)  # also the warm-up
        _sync(device)
        start = time.perf_counter()
        second = make().project_parameter(0, grad)
        _sync(device)
        found[label] = {"rng": make().describe()["rng"], "deterministic": bool(torch.equal(first, second)),
                        "seconds_per_block": (time.perf_counter() - start) / (numel / 2**20)}
    return found


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def markdown(report: dict) -> str:
    cuda = report["machine"]["device"] != "cpu"
    peak_name = "peak CUDA memory (GB)" if cuda else "peak RSS of the process (GB; CPU check only)"
    lines = [f"| stage | s per call | s per step | {peak_name} | goal |", "|---|---|---|---|---|"]
    for row in report["rows"]:
        if row["error"]:
            lines.append(f"| {row['stage']} | {row['error']} | | | {row.get('goal', '')} |")
            continue
        verdict = ""
        if "goal" in row:
            met = row["goal_met"]
            verdict = f"{row['goal']}: {'n/a on the CPU' if met is None else ('met' if met else 'MISSED')}"
        peak = "n/a" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 1e9:.2f}"
        lines.append(f"| {row['stage']} | {row['seconds']:.2f} | {row['seconds_per_step']:.2f} | {peak} | {verdict} |")
    w = report["weights_bytes"]
    lines += ["", f"{report['machine']['device']}; random-weight Wan2.1-T2V-1.3B ({report['num_layers']} blocks, "
              f"{report['text_layers']} text-encoder layers; weights: transformer {w['transformer'] / 1e9:.2f} GB, "
              f"VAE {w['vae'] / 1e9:.2f} GB, text encoder {w['text_encoder'] / 1e9:.2f} GB), bf16, "
              f"{report['size']} ({report['tokens']:,} tokens), sampling {report['sampling_steps_per_call']} steps "
              "per call; the text encoder is moved off the device after caching. torch "
              f"{report['machine']['torch']}."]
    state = report.get("projector_state")
    if state:
        lines += ["", "Motive projector, one 2^20-number block with its random state generated and the gradient "
                  f"projected (nothing kept): {state['pass']['seconds_per_block'] * 1e3:.1f} ms with the state made "
                  f"as the pass makes it ({state['pass']['rng']}), {state['cpu']['seconds_per_block'] * 1e3:.1f} ms "
                  f"made on the CPU; two projectors built alike agree bitwise: "
                  f"{'yes' if state['pass']['deterministic'] and state['cpu']['deterministic'] else 'NO'}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run_smoke(args)
    write_results("gpu_smoke", report, markdown(report), args.out)
    missed = [r["stage"] for r in report["rows"] if r.get("goal_met") is False or r["error"]]
    if missed:
        print(f"goals missed or stages failed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
