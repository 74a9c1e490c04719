"""Cost of correspondence guidance (CAG), measured in one run.

1. Sampling on the toy model: time per video and peak memory, guided ÷ unguided, over all steps (with and
   without the perturbed pass reusing the conditional pass's blocks before the first guidance block) and with
   the profile's default window, arms interleaved per prompt. Goals: <= 1.5 over all steps, <= 1.2 with the
   default window, peak memory <= 1.05 (the process's resident high-water mark during the call, model included,
   best of a few calls per arm; also shown: the peak above the start of the call, which is allocator noise on
   the toy model).
2. The frame-local instrument at real-model shapes, one block, one head (the layer costs heads x that): our
   kernel (frames folded into the batch; the renormalised form and DiffTrack's non-renormalised form) vs a
   dense-mask implementation (SDPA with a block-diagonal boolean mask over the whole sequence), time and peak
   memory. The dense mask is what the library avoids: at Wan2.1's 32,760 tokens its scores take 4.3 GB per head.

    python benchmarks/guidance_cost.py [--prompts 6 --repeats 3] [--skip-real]
"""

import statistics
import time

import torch
import torch.nn.functional as F
import _toy_eval as ev
from _common import limit_threads, machine, write_results
from _peak_memory import peak_bytes, peak_total_bytes

from motionguide.attention.kernels import frame_local_attention
from motionguide.cli_args import ArgumentParser

MIB = 2**20
REAL_SHAPES = {  # name: (latent frames, grid h, grid w, heads, head dim, leading text tokens)
    "cogvideox-2b (13x30x45)": (13, 30, 45, 30, 64, 226),
    "wan2.1-t2v-1.3b (21x30x52)": (21, 30, 52, 12, 128, 0),
}


def sampling_costs(args) -> dict:
    from diffusers import WanPipeline

    from motionguide.correspondence import correspondence_guided
    from motionguide.toy import all_combinations, prompts_for_combinations

    pipe = WanPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    text_length = ev.sampling_settings(args.model, max_sequence_length=args.max_sequence_length).max_sequence_length
    moving = [c for c in all_combinations() if c[2] != "still"][:: max(1, len(all_combinations()) // args.prompts)]
    prompts = prompts_for_combinations(moving[: args.prompts])

    def call(prompt: str) -> None:
        pipe(prompt, num_frames=17, height=64, width=64, num_inference_steps=25, guidance_scale=5.0,
             max_sequence_length=text_length, output_type="np", generator=torch.Generator().manual_seed(0))

    from motionguide.backbones import backbone_for

    default_window = tuple(backbone_for(pipe).default_profile().guidance.window)

    def arm(guided: bool, **options):
        def run(prompt: str) -> None:
            if not guided:
                call(prompt)
            else:
                with correspondence_guided(pipe, **options):
                    call(prompt)
        return run

    arms = {"unguided": arm(False),
            "guided, all steps": arm(True, window=(0.0, 1.0)),
            "guided, all steps, prefix recomputed": arm(True, window=(0.0, 1.0), reuse_prefix=False),
            f"guided, default window {default_window[0]:g}–{default_window[1]:g}": arm(True)}
    times = {name: [] for name in arms}
    for name, run in arms.items():  # warm-up
        run(prompts[0])
    for repeat in range(args.repeats):
        for prompt in prompts:
            order = list(arms) if repeat % 2 == 0 else list(reversed(arms))
            for name in order:
                start = time.perf_counter()
                arms[name](prompt)
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    peaks = {name: peak_bytes(lambda run=run: run(prompts[0]), "cpu") for name, run in arms.items()}
    totals = {name: [] for name in arms}
    for _ in range(3):  # interleaved; the minimum drops one-off allocator spikes
        for name, run in arms.items():
            totals[name].append(peak_total_bytes(lambda run=run: run(prompts[0]), "cpu"))
    total = {name: (min(v) if None not in v else None) for name, v in totals.items()}
    return {"prompts": prompts, "repeats": args.repeats, "median_s": medians,
            "ratio": {name: medians[name] / medians["unguided"] for name in arms},
            "peak_bytes": peaks,
            "peak_ratio": {name: (peaks[name] / peaks["unguided"]) if peaks["unguided"] else None for name in arms},
            "peak_total_bytes": total,
            "peak_total_ratio": {name: (total[name] / total["unguided"]) if total["unguided"] else None
                                 for name in arms}}


def dense_mask_attention(q, k, v, frames: int, text_len: int) -> torch.Tensor:
    """Reference: block-diagonal boolean mask over the whole sequence (video queries see their frame + text)."""
    seq = q.shape[1]
    per_frame = (seq - text_len) // frames
    frame_of = torch.full((seq,), -1, dtype=torch.long)
    frame_of[text_len:] = torch.arange(frames).repeat_interleave(per_frame)
    mask = (frame_of[:, None] == frame_of[None, :]) | (frame_of[None, :] < 0) | (frame_of[:, None] < 0)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def real_shape_costs(args) -> list[dict]:
    rows = []
    for name, (frames, h, w, heads, dim, text_len) in REAL_SHAPES.items():
        seq = text_len + frames * h * w
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, seq, 1, dim, generator=gen) for _ in range(3))  # one head, fp32 on the CPU
        variants = {
            "frame-local (renormalised)": lambda: frame_local_attention(q, k, v, frames, text_len, renormalize=True),
            "frame-local (DiffTrack, not renormalised)": lambda: frame_local_attention(q, k, v, frames, text_len,
                                                                                       renormalize=False),
            "dense boolean mask (reference)": lambda: dense_mask_attention(q, k, v, frames, text_len),
        }
        reference = variants["dense boolean mask (reference)"]()
        ours = variants["frame-local (renormalised)"]()
        max_diff = float((reference - ours).abs().max())
        del reference, ours
        for variant, fn in variants.items():
            fn()  # warm-up
            seconds = []
            for _ in range(args.real_repeats):
                start = time.perf_counter()
                fn()
                seconds.append(time.perf_counter() - start)
            rows.append({"shape": name, "sequence": seq, "heads": heads, "head_dim": dim, "variant": variant,
                         "s_per_head": statistics.median(seconds), "s_per_layer": statistics.median(seconds) * heads,
                         "peak_bytes_per_head": peak_bytes(fn, "cpu"), "max_abs_diff_vs_dense": max_diff})
    return rows


def markdown(sampling: dict | None, real: list[dict]) -> str:
    lines = []
    if sampling:
        lines += ["| toy model, 25 steps, CFG 5 | median s / video | ÷ unguided | peak memory (MiB) | ÷ unguided | "
                  "peak above call start ÷ unguided |", "|---|---|---|---|---|---|"]
        for name, seconds in sampling["median_s"].items():
            peak, total = sampling["peak_ratio"][name], sampling["peak_total_bytes"][name]
            ratio = sampling["peak_total_ratio"][name]
            lines.append(f"| {name} | {seconds:.2f} | {sampling['ratio'][name]:.2f} | "
                         f"{'n/a' if total is None else f'{total / MIB:.0f}'} | "
                         f"{'n/a' if ratio is None else f'{ratio:.3f}'} | {'n/a' if peak is None else f'{peak:.2f}'} |")
        lines += ["", f"{len(sampling['prompts'])} moving toy prompts x {sampling['repeats']} interleaved repeats; "
                  "goals: <= 1.5 over all steps, <= 1.2 with the default window, peak memory <= 1.05. Peak memory = "
                  "the process's RSS high-water mark during one call (model and libraries included), least of 3 "
                  "interleaved calls; the last column is the high-water mark above the RSS at the start of the call, "
                  "a few MiB on the toy model and dominated by allocator slack.", ""]
    if real:
        lines += ["| real shape, one block | sequence | variant | s / head | s / layer (x heads) | peak MiB / head |",
                  "|---|---|---|---|---|---|"]
        for r in real:
            peak = r["peak_bytes_per_head"]
            lines.append(f"| {r['shape']} | {r['sequence']:,} | {r['variant']} | {r['s_per_head']:.2f} | "
                         f"{r['s_per_layer']:.1f} ({r['heads']} heads) | "
                         f"{'n/a' if peak is None else f'{peak / MIB:.0f}'} |")
        lines += ["", "fp32 on this CPU, one head at a time (the dense mask cannot hold all heads here); the renormalised "
                  "frame-local output equals the dense-mask reference to "
                  f"{max(r['max_abs_diff_vs_dense'] for r in real):.1e}."]
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    ev.add_common_args(parser)  # --model, --max_sequence_length, --threads, --results_dir
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real_repeats", type=int, default=2)
    parser.add_argument("--skip_real", action="store_true")
    parser.add_argument("--skip_sampling", action="store_true")
    args = parser.parse_args()
    limit_threads(args.threads)
    sampling = None if args.skip_sampling else sampling_costs(args)
    real = [] if args.skip_real else real_shape_costs(args)
    write_results("guidance_cost", {"machine": machine(), "sampling": sampling, "real_shapes": real,
                                    "settings": vars(args)}, markdown(sampling, real), args.results_dir)


if __name__ == "__main__":
    main()
