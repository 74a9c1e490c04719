"""What the IMAP monitor costs: training wall time with it on, and the capture consumer at a real-model shape.

1. Training (goal: monitored / unmonitored <= 1.05 at the monitor's default interval). The real `Trainer` runs
   twice on the same toy setup and steps, `monitor=[]` vs `["imap"]` with default options (every 50 steps),
   alternating order when repeated. The summary's `step_times_s` stop before the callbacks run, so they do not
   contain the probe at all; a last callback stamps the clock after every step's callbacks, and the ratio of
   those inclusive step times is the headline. Also: the probe's own cost per firing and the ratio it implies,
   1 + probe / (every x unmonitored step), which machine noise disturbs far less.
2. Capture cost at Wan2.1-1.3B's shape, without the model: random q / out [12 heads, 21x30x52 = 32,760 video
   tokens, 128] and text keys [12, 512, 128] (bf16, as captured) fed to `calinski_harabasz`, `gramcol_heads`
   and the `SaliencyAccumulator` (IMAP only, as the monitor runs it; and all three kinds) per head chunk size,
   next to the layer's own cross-attention SDPA. Median time per layer and peak memory above the inputs
   (see _peak_memory.py: torch's allocator peak on CUDA, the kernel's resident high-water mark on CPU).

Run for real (toy model for part 1, defaults for part 2; part 2 at the real shape is heavy on a CPU, minutes
per variant, and meant for a GPU machine):
    python benchmarks/imap_monitor_cost.py --device cuda          # or --skip-capture / --skip-training
Smoke (tiny pipeline saved with `motionguide.testing.tiny_wan_pipeline().save_pretrained(DIR)`):
    python benchmarks/imap_monitor_cost.py --model DIR --steps 12 --every 5 --clips 4 --batch 2 \\
        --heads 4 --latent-frames 3 --grid-height 4 --grid-width 6 --text-slots 16 --head-dim 16 --chunks 1,2 \\
        --threads 1 --results-dir /tmp/results
Writes results/imap_monitor_cost.{json,md}.
"""

import inspect
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import interleaved_medians, limit_threads, machine, write_results
from _peak_memory import peak_bytes

from motionguide.attention.capture import AttentionCapture, ForwardInfo
from motionguide.backbones.base import TokenGrid
from motionguide.cli_args import ArgumentParser
from motionguide.saliency import KINDS, IMAPMonitor, SaliencyAccumulator, calinski_harabasz, gramcol_heads
from motionguide.saliency.gramcol import head_chunk_size
from motionguide.toy import make_dataset
from motionguide.training import TrainerCallback
from motionguide.training.config import TrainConfig
from motionguide.training.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EVERY = inspect.signature(IMAPMonitor).parameters["every"].default
MIB = 2**20


# ---------------------------------------------------------------------- 1. training
class StepClock(TrainerCallback):
    """Registered after every other callback: a time stamp once a step's callbacks are done, so consecutive
    stamps give the whole step, monitor probe included."""

    name = "step_clock"

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_start(self, ctx) -> None:
        self.stamps = [time.perf_counter()]

    def on_step_end(self, ctx, logs) -> None:
        self.stamps.append(time.perf_counter())

    @property
    def step_seconds(self) -> list[float]:
        return np.diff(self.stamps).tolist()


def train_once(args, work: Path, monitored: bool, run: int) -> dict:
    """One Trainer run; per step the loop's own time (`step_times_s`) and the inclusive wall time."""
    options = {} if args.every is None else {"every": args.every}
    cfg = TrainConfig(pretrained_model_name_or_path=args.model, output_dir=str(work / f"out-{run}"),
                      data_root=str(work / "data"), latent_cache_dir=str(work / "cache"), train_steps=args.steps,
                      train_batch_size=args.batch, checkpointing_steps=0, report_to=args.report_to,
                      logging_steps=10, max_sequence_length=args.max_sequence_length,
                      monitor=["imap"] if monitored else [],
                      method_options={"imap": options} if monitored else {})
    clock = StepClock()
    summary = Trainer(cfg, callbacks=[clock]).run()
    return {"monitored": monitored, "step_times_s": summary["step_times_s"], "wall_s": clock.step_seconds}


def training_ratios(runs: list[dict], every: int, warmup: int) -> dict:
    """Totals over the kept steps (first `warmup` dropped), summed over repeats, and the probe cost."""
    def total(monitored: bool, key: str) -> float:
        return sum(sum(r[key][warmup:]) for r in runs if r["monitored"] == monitored)

    plain = [s for r in runs if not r["monitored"] for s in r["wall_s"][warmup:]]
    probe, other = [], []
    for r in (r for r in runs if r["monitored"]):
        for index, (wall, loop) in enumerate(zip(r["wall_s"], r["step_times_s"])):
            if index >= warmup:
                (probe if (index + 1) % every == 0 else other).append(wall - loop)
    probe_s = statistics.mean(probe) - statistics.median(other) if probe and other else float("nan")
    step_s = statistics.median(plain)
    return {
        "ratio_wall": total(True, "wall_s") / total(False, "wall_s"),
        "ratio_step_times_s": total(True, "step_times_s") / total(False, "step_times_s"),
        "ratio_amortised": 1.0 + probe_s / (every * step_s),
        "probe_s": probe_s, "probes_timed": len(probe), "median_step_s": step_s,
        "total_wall_s": {"unmonitored": total(False, "wall_s"), "monitored": total(True, "wall_s")},
    }


def measure_training(args) -> dict:
    every = args.every or DEFAULT_EVERY
    if args.steps < every + args.warmup:
        raise SystemExit(f"--steps {args.steps} never reaches a probe after {args.warmup} warm-up steps "
                         f"(every {every}); use --steps >= {every + args.warmup}, ideally a multiple of {every}")
    work = Path(tempfile.mkdtemp(prefix="mg-imap-cost-"))
    try:
        make_dataset(work / "data", num_clips=args.clips, seed=0, progress=False)
        runs = []
        for repeat in range(args.repeats):
            order = (False, True) if repeat % 2 == 0 else (True, False)  # alternate so drift hits both
            for monitored in order:
                runs.append(train_once(args, work, monitored, len(runs)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"every": every, "steps": args.steps, "batch": args.batch, "repeats": args.repeats,
            "warmup_steps_dropped": args.warmup, **training_ratios(runs, every, args.warmup), "runs": runs}


# ---------------------------------------------------------------------- 2. capture at a real shape
def real_shape_inputs(args) -> tuple[AttentionCapture, torch.Tensor]:
    """A capture of one Wan cross-attention call with random tensors of the requested shape, plus values."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.input_dtype]
    grid = TokenGrid(args.latent_frames, args.grid_height, args.grid_width)
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype).to(args.device)

    n = grid.num_tokens
    query, output = randn(1, args.heads, n, args.head_dim), randn(1, args.heads, n, args.head_dim)
    text_shape = (1, args.heads, args.text_slots, args.head_dim)
    key, value = randn(*text_shape), randn(*text_shape)
    info = ForwardInfo(forward_id=0, grid=grid, batch_size=1)
    return AttentionCapture(block=0, attention="text", info=info, query=query, key=key, output=output), value


def capture_variants(capture: AttentionCapture, chunk: int, args) -> dict:
    """Callables for one chunk size: CHI, GramCol over all heads, and the two accumulator configurations."""
    q, k, out = capture.video_query()[0], capture.text_key()[0], capture.video_output()[0]
    grid, heads = capture.grid, q.shape[0]
    tokens = {f"w{i}": [i] for i in range(args.words)}  # the first `words` slots, as a prompt's words would be
    keep = list(range(args.words))

    def gramcol_all() -> None:
        total = 0
        for start in range(0, heads, chunk):
            part = slice(start, start + chunk)
            total = total + gramcol_heads(q[part], k[part], out[part], grid, keep=keep).sum(dim=0)

    def accumulator(kinds):
        return lambda: SaliencyAccumulator(tokens, None, args.top_k, kinds=kinds, head_chunk=chunk)(capture)

    return {
        "CHI, all heads": lambda: calinski_harabasz(out, grid.frames, head_chunk=chunk),
        "GramCol, all heads": gramcol_all,
        "accumulator, IMAP only (monitor)": accumulator(("imap",)),
        "accumulator, IMAP + GramCol + cross-attn": accumulator(KINDS),
    }


def synced(fn, device: str):
    def run() -> None:
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return run


def measure_capture(args) -> dict:
    capture, value = real_shape_inputs(args)
    heads, n = args.heads, capture.grid.num_tokens
    auto = head_chunk_size(heads, n, args.text_slots)
    chunks = sorted({int(c) for c in args.chunks.split(",") if c} | {auto})
    sdpa = synced(lambda: F.scaled_dot_product_attention(capture.query, capture.key, value), args.device)
    rows = []
    with torch.no_grad():
        reference_s = interleaved_medians({"sdpa": sdpa}, args.capture_repeats)["sdpa"]
        reference_peak = peak_bytes(sdpa, args.device)
        for chunk in chunks:
            variants = {name: synced(fn, args.device) for name, fn in capture_variants(capture, chunk, args).items()}
            times = interleaved_medians(variants, args.capture_repeats)
            for name, fn in variants.items():
                peak = peak_bytes(fn, args.device)
                rows.append({"component": name, "head_chunk": chunk, "auto_chunk": chunk == auto,
                             "chunks_per_layer": -(-heads // chunk), "seconds_per_layer": times[name],
                             "ratio_to_sdpa": times[name] / reference_s,
                             "peak_mib": None if peak is None else peak / MIB})
    inputs = sum(t.numel() * t.element_size() for t in (capture.query, capture.key, capture.output))
    return {"shape": {"heads": heads, "grid": capture.grid.as_tuple(), "video_tokens": n,
                      "text_slots": args.text_slots, "head_dim": args.head_dim, "words": args.words,
                      "top_k": args.top_k, "input_dtype": args.input_dtype},
            "device": args.device, "auto_chunk": auto, "input_mib": inputs / MIB,
            "sdpa_seconds": reference_s, "sdpa_peak_mib": None if reference_peak is None else reference_peak / MIB,
            "rows": rows}


# ---------------------------------------------------------------------- report
def training_markdown(t: dict, args) -> list[str]:
    return [
        "| training (same setup, same steps) | value |",
        "|---|---|",
        f"| monitored / unmonitored wall time, callbacks included (goal <= 1.05) | {t['ratio_wall']:.3f} |",
        "| same from the summary's `step_times_s` (exclude callbacks, so not the probe) | "
        f"{t['ratio_step_times_s']:.3f} |",
        f"| probe cost per firing (s) | {t['probe_s']:.3f} ({t['probes_timed']} timed) |",
        f"| median unmonitored step (s) | {t['median_step_s']:.3f} |",
        f"| implied ratio 1 + probe / ({t['every']} x step) | {t['ratio_amortised']:.3f} |",
        "",
        f"`{Path(args.model).name}`, LoRA, batch {t['batch']}, {t['steps']} steps per run, monitor every "
        f"{t['every']} steps (its default: {DEFAULT_EVERY}) with default probes, {t['repeats']} run pair(s) in "
        f"alternating order, first {t['warmup_steps_dropped']} steps dropped, tracker {args.report_to}.",
    ]


def capture_markdown(c: dict) -> list[str]:
    s = c["shape"]
    lines = [
        "| component | head chunk | chunks / layer | ms / layer | ÷ SDPA | peak MiB above inputs |",
        "|---|---|---|---|---|---|",
        f"| cross-attention SDPA (the observed call) | – | – | {c['sdpa_seconds'] * 1e3:.2f} | 1.00 | "
        f"{_mib(c['sdpa_peak_mib'])} |",
    ]
    for row in c["rows"]:
        chunk = f"{row['head_chunk']}{' (auto)' if row['auto_chunk'] else ''}"
        lines.append(f"| {row['component']} | {chunk} | {row['chunks_per_layer']} | "
                     f"{row['seconds_per_layer'] * 1e3:.2f} | "
                     f"{row['ratio_to_sdpa']:.2f} | {_mib(row['peak_mib'])} |")
    peak_how = "torch allocator peak" if c["device"].startswith("cuda") else "resident high-water mark (VmHWM reset)"
    lines += ["", f"Random tensors of {s['heads']} heads x {s['video_tokens']:,} video tokens (grid {s['grid']}) x "
                  f"{s['text_slots']} text slots x head dim {s['head_dim']} ({s['input_dtype']}, inputs "
                  f"{c['input_mib']:.0f} MiB), {s['words']} kept word slots, top-k {s['top_k']}, on {c['device']}; "
                  f"median of interleaved repeats; memory: {peak_how}."]
    return lines


def _mib(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "toy-model"))
    parser.add_argument("--steps", type=int, default=2 * DEFAULT_EVERY, help="training steps per run")
    parser.add_argument("--every", type=int, default=None,
                        help=f"probe interval (default: the monitor's, {DEFAULT_EVERY})")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--clips", type=int, default=16, help="toy clips in the training set")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of training runs")
    parser.add_argument("--warmup", type=int, default=3, help="first steps of each run left out")
    parser.add_argument("--max_sequence_length", type=int, default=16)
    parser.add_argument("--report_to", default="tensorboard", choices=("tensorboard", "none"))
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--latent_frames", type=int, default=21)
    parser.add_argument("--grid_height", type=int, default=30)
    parser.add_argument("--grid_width", type=int, default=52)
    parser.add_argument("--text_slots", type=int, default=512)
    parser.add_argument("--head_dim", type=int, default=128)
    parser.add_argument("--words", type=int, default=2, help="word slots kept (a noun and a verb)")
    parser.add_argument("--top_k", type=int, default=3)
    parser.add_argument("--chunks", default="1,2,4", help="head chunk sizes (the automatic one is always added)")
    parser.add_argument("--input_dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--capture_repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="for part 2 (part 1 runs where accelerate puts it)")
    parser.add_argument("--skip_training", action="store_true")
    parser.add_argument("--skip_capture", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch / OpenCV threads (0: their defaults)")
    parser.add_argument("--results_dir", default=None,
                        help="write the results here instead of benchmarks/results (smoke runs)")
    args = parser.parse_args()
    limit_threads(args.threads)
    data: dict = {"machine": machine(), "settings": vars(args)}
    md: list[str] = []
    if not args.skip_training:
        data["training"] = measure_training(args)
        md += training_markdown(data["training"], args) + [""]
    if not args.skip_capture:
        data["capture"] = measure_capture(args)
        md += capture_markdown(data["capture"])
    write_results("imap_monitor_cost", data, "\n".join(md), results_dir=args.results_dir)


if __name__ == "__main__":
    main()
