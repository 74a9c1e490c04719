"""DiffTrack evidence: does the layer analysis pick blocks that really track best?

Runs `motionguide.correspondence.analyze_layers` (all blocks, ~5 steps of the model's sampling schedule,
clean clips re-noised to each step, clip captions as prompts) on N toy clips scored against their
ground-truth tracks, turns the result into a `LayerProfile` named "toy-model" (base: the analysed model),
and reports
- the PCK table [blocks x steps] (plus harmonic mean, confidence and cross-frame attention at the last step);
- whether the chosen tracking block is among the top-3 blocks by PCK at the last step, on the clips it was
  chosen on (true by construction unless ties) and on fresh clips it has not seen (the real test);
- how many of the chosen guidance (CAG) blocks are top-3 by PCK over the later steps;
- the tracking descriptor: on a toy world whose backgrounds stay still, the all-point PCK rewards matching every
  token to its own position (the rotary term of q.k does exactly that), so the shipped tracking section is
  chosen among descriptors (`--tracking-descriptors`: DiffTrack's post-RoPE q-k, pre-RoPE q-k and their mix
  with a few content weights) and blocks by the balanced PCK = mean of the all-point and the moving-point PCK
  at the last step, then checked on the fresh clips. Guidance blocks stay DiffTrack's rule on its descriptor.

The profile is written to motionguide/backbones/profiles/toy-model.yaml only with --ship. The toy model
ships no IMAP values, so an `imap` section (the middle half of the blocks, top_k 1) is added, marked
provisional, when the base has none.

Real run (after the toy model exists; a few minutes on a CPU):
    python benchmarks/difftrack_analysis.py --ship
Smoke run on a tiny random pipeline (never --ship it):
    python benchmarks/difftrack_analysis.py --model /tmp/tiny --clips 2 --check-clips 1 --steps 2 \
        --max-sequence-length 16 --threads 1 --results-dir /tmp/results
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import _common
import _toy_eval as ev
import numpy as np

from motionguide.backbones import SaliencyProfile
from motionguide.backbones.profiles import PROFILE_DIR
from motionguide.cli_args import ArgumentParser
from motionguide.correspondence import analyze_layers
from motionguide.correspondence.analysis import default_steps

TOP = 3
IMAP_RENOISE_FRACTION = 0.4  # the IMAP reference re-noises at step 20 of 50 on Wan2.1


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    ev.add_common_args(parser)
    parser.add_argument("--clips", type=int, default=24, help="toy clips the profile is chosen on")
    parser.add_argument("--check_clips", type=int, default=16,
                        help="fresh toy clips (another seed) to check the chosen block on; 0 skips the check")
    parser.add_argument("--data_seed", type=int, default=0, help="seed of the selection clips (check: +1)")
    parser.add_argument("--objects", default="1,2", help="objects per clip to draw from, e.g. '1,2'")
    parser.add_argument("--steps", type=int, default=None, help="schedule length (default: model's sampling steps)")
    parser.add_argument("--analysis_steps", type=int, default=5, help="steps analysed, spread over the schedule")
    parser.add_argument("--max_points", type=int, default=400, help="query points per clip")
    parser.add_argument("--threshold_px", type=float, default=None,
                        help="PCK threshold (default: the library's, 1 token on 64 px toy clips)")
    parser.add_argument("--tracking_descriptors", default="qk,qk_no_rope,qk_mixed:2,qk_mixed:4,qk_mixed:8",
                        help="candidates for the tracking section: descriptor[:content weight], comma separated")
    parser.add_argument("--guidance_window", default="0,0.5",
                        help="guidance window written to the profile (start,stop fractions of the steps); the "
                             "analysis does not choose it: benchmarks/cag_sweep.py compares windows")
    parser.add_argument("--profile_name", default="toy-model")
    parser.add_argument("--ship", action="store_true",
                        help=f"write the profile to {PROFILE_DIR.relative_to(ev.ROOT)}/<profile-name>.yaml")
    parser.add_argument("--name", default="difftrack_analysis", help="result file name")
    return parser.parse_args()


def top_blocks(blocks: list[int], scores: np.ndarray, count: int = TOP) -> list[int]:
    """Blocks whose score is at least the `count`-th best (ties at the cut are all in); NaN ranks last."""
    values = np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)
    cut = np.sort(values)[::-1][min(count, len(values)) - 1]
    return [b for b, v in zip(blocks, values) if v >= cut]


def rank_of(blocks: list[int], scores: np.ndarray, block: int) -> int:
    """1-based rank of `block` by score (ties share the better rank)."""
    values = np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)
    return int(np.sum(values > values[blocks.index(block)])) + 1


def analyse(pipe, folder: Path, args, settings, steps: list[int], num_steps: int, about: str,
            descriptor: str = "qk", content_weight: float = 4.0):
    command = shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    result = analyze_layers(pipe, folder, steps=steps, num_inference_steps=num_steps,
                            threshold_px=args.threshold_px, max_sequence_length=settings.max_sequence_length,
                            max_points=args.max_points, descriptor=descriptor, content_weight=content_weight,
                            command=command)
    result.produced_by["data"] = about  # not the temporary folder the clips lived in
    return result


def parse_candidates(text: str) -> list[tuple[str, float]]:
    """'qk,qk_mixed:4' -> [("qk", 4.0), ("qk_mixed", 4.0)] (the weight only matters for qk_mixed)."""
    out = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, _, weight = item.partition(":")
        out.append((name, float(weight) if weight else 4.0))
    return out


def candidate_label(descriptor: str, weight: float) -> str:
    """How a tracking candidate reads in the tables."""
    return {"qk": "q·k after RoPE (DiffTrack)", "qk_no_rope": "q·k before RoPE"}.get(
        descriptor, f"q·k + {weight:g} × pre-RoPE q·k")


def balanced(result, column: int = -1) -> np.ndarray:
    """Per block: mean of the all-point and the moving-point PCK at one analysed step."""
    return (result.accuracy[:, column] + result.tables["moving_accuracy"][:, column]) / 2


def choose_tracking(pipe, folder: Path, args, settings, last_step: int, num_steps: int, about: str) -> dict:
    """Analyse each candidate descriptor at the last step; the (descriptor, block) with the best balanced PCK."""
    sweep = []
    for descriptor, weight in parse_candidates(args.tracking_descriptors):
        result = analyse(pipe, folder, args, settings, [last_step], num_steps, about, descriptor, weight)
        sweep.append({"descriptor": descriptor, "content_weight": weight, "blocks": result.blocks,
                      "pck": result.accuracy[:, 0].tolist(), "moving_pck": result.tables["moving_accuracy"][:, 0].tolist(),
                      "balanced": balanced(result, 0).tolist()})
    best = max(((c, i) for c in sweep for i in range(len(c["blocks"]))),
               key=lambda ci: (np.nan_to_num(ci[0]["balanced"][ci[1]], nan=-1), -ci[1]))
    candidate, index = best
    return {"sweep": sweep, "descriptor": candidate["descriptor"], "content_weight": candidate["content_weight"],
            "block": candidate["blocks"][index], "balanced": candidate["balanced"][index],
            "pck": candidate["pck"][index], "moving_pck": candidate["moving_pck"][index]}


def model_label(model: str) -> str:
    """The model path as the profile records it: relative to the repository when inside it."""
    path = Path(model).resolve()
    return str(path.relative_to(ev.ROOT)) if path.is_relative_to(ev.ROOT) else str(model)


def add_provisional_imap(profile, backbone, num_steps: int) -> bool:
    """Give the profile an IMAP section when its base had none; True if one was added."""
    if profile.imap is not None:
        return False
    profile.imap = SaliencyProfile(
        blocks=ev.middle_half(backbone.num_blocks), top_k=1,
        renoise_step=min(num_steps - 1, round(IMAP_RENOISE_FRACTION * num_steps)), num_inference_steps=num_steps,
        provisional=True,
        source="placeholder: the middle half of the blocks, top-1 head, re-noised at the IMAP reference's "
               "relative step (20 of 50); not analysed on this model",
    )
    return True


def main() -> None:
    args = parse_args()
    if args.ship and not (Path(args.model) / "training_report.json").is_file():
        raise SystemExit(f"--ship writes {args.profile_name}.yaml into the package, where it becomes the default for "
                         f"every model of the same shape; {args.model} has no training_report.json, so it is not "
                         "the trained toy model: run without --ship")
    _common.limit_threads(args.threads)
    pipe, backbone = ev.load_model(args.model)
    settings = ev.sampling_settings(args.model, max_sequence_length=args.max_sequence_length)
    num_steps = args.steps or settings.steps
    steps = default_steps(num_steps, args.analysis_steps)
    objects = ev.parse_ints(args.objects)
    about = f"toy world, make_dataset(seed={args.data_seed}, num_objects={tuple(objects)})"
    with tempfile.TemporaryDirectory(prefix="difftrack_analysis_") as tmp:
        clips = ev.toy_clips(Path(tmp) / "select", args.clips, args.data_seed, objects)
        result = analyse(pipe, Path(tmp) / "select", args, settings, steps, num_steps, about)
        tracking = choose_tracking(pipe, Path(tmp) / "select", args, settings, steps[-1], num_steps, about)
        check = check_tracking = None
        if args.check_clips:
            check_about = f"toy world, make_dataset(seed={args.data_seed + 1}, num_objects={tuple(objects)})"
            check_clips = ev.toy_clips(Path(tmp) / "check", args.check_clips, args.data_seed + 1, objects)
            check = analyse(pipe, Path(tmp) / "check", args, settings, [steps[-1]], num_steps, check_about)
            check_tracking = analyse(pipe, Path(tmp) / "check", args, settings, [steps[-1]], num_steps, check_about,
                                     tracking["descriptor"], tracking["content_weight"])

    profile = result.to_profile(pipe, name=args.profile_name, model=model_label(args.model))
    start, stop = (float(v) for v in args.guidance_window.split(","))
    profile.guidance.window = (start, stop)
    profile.guidance.source += (f"; window [{start:g}, {stop:g}] from benchmarks/cag_sweep.py (the window arms "
                                "compare it with all steps and the later half)")
    profile.tracking.block = tracking["block"]
    profile.tracking.descriptor, profile.tracking.content_weight = tracking["descriptor"], tracking["content_weight"]
    profile.tracking.source = (
        f"benchmarks/difftrack_analysis.py on {about} ({args.clips} clips): of the descriptors "
        f"{args.tracking_descriptors} and all blocks, the best balanced PCK (mean of all-point and moving-point PCK) "
        f"at step {steps[-1]} of {num_steps}: {tracking['balanced']:.1f} (all {tracking['pck']:.1f}, moving "
        f"{tracking['moving_pck']:.1f}); DiffTrack's rule (all-point PCK, post-RoPE q.k) picks block "
        f"{result.tracking_choice()[0]}")
    imap_added = add_provisional_imap(profile, backbone, num_steps)
    shipped = profile.save(PROFILE_DIR / f"{args.profile_name}.yaml") if args.ship else None

    blocks, last = result.blocks, int(np.argmax(result.steps))
    track_block, track_step = result.tracking_choice()
    guidance = result.guidance_choice()
    acc_last = result.accuracy[:, last]
    top_select = top_blocks(blocks, acc_last)
    late = result.late_step_columns()
    top_late = top_blocks(blocks, np.nanmean(result.accuracy[:, late], axis=1))
    guidance_in_top = [b for b in guidance if b in top_late]
    evidence = {
        "tracking_block": track_block, "tracking_step": track_step, "num_inference_steps": num_steps,
        "top3_last_step": top_select, "tracking_block_in_top3": track_block in top_select,
        "guidance_blocks": guidance, "guidance_blocks_in_top3_late": guidance_in_top,
    }
    rows = [["tracking block (highest PCK at the last analysed step)",
             f"{track_block} (step {track_step} of {num_steps})"],
            [f"among the top-{TOP} blocks by PCK at the last step, selection clips ({len(clips)})",
             f"{'yes' if evidence['tracking_block_in_top3'] else 'no'} (top-{TOP}: {top_select})"]]
    if check is not None:
        check_acc = check.accuracy[:, 0]
        top_check = top_blocks(check.blocks, check_acc)
        evidence.update(top3_check=top_check, tracking_block_in_top3_check=track_block in top_check,
                        tracking_block_rank_check=rank_of(check.blocks, check_acc, track_block))
        rows.append([f"among the top-{TOP} on fresh clips ({len(check_clips)}, seed {args.data_seed + 1})",
                     f"{'yes' if evidence['tracking_block_in_top3_check'] else 'no'} (rank "
                     f"{evidence['tracking_block_rank_check']} of {len(check.blocks)}; top-{TOP}: {top_check})"])
    chosen = candidate_label(tracking["descriptor"], tracking["content_weight"])
    rows.append(["shipped tracking: descriptor and block by balanced PCK (all + moving points) / 2, last step",
                 f"{chosen}, block {tracking['block']}: {tracking['balanced']:.1f} (all {tracking['pck']:.1f}, "
                 f"moving {tracking['moving_pck']:.1f})"])
    if check_tracking is not None:
        i = check_tracking.blocks.index(tracking["block"])
        dt = check.blocks.index(track_block)
        fresh = {"balanced": float(balanced(check_tracking, 0)[i]), "pck": float(check_tracking.accuracy[i, 0]),
                 "moving_pck": float(check_tracking.tables["moving_accuracy"][i, 0]),
                 "difftrack_balanced": float(balanced(check, 0)[dt]), "difftrack_pck": float(check.accuracy[dt, 0]),
                 "difftrack_moving_pck": float(check.tables["moving_accuracy"][dt, 0])}
        evidence["tracking_fresh"] = fresh
        rows.append([f"the same on fresh clips vs DiffTrack's choice (post-RoPE, block {track_block})",
                     f"{fresh['balanced']:.1f} (all {fresh['pck']:.1f}, moving {fresh['moving_pck']:.1f}) vs "
                     f"{fresh['difftrack_balanced']:.1f} (all {fresh['difftrack_pck']:.1f}, moving "
                     f"{fresh['difftrack_moving_pck']:.1f})"])
    evidence["tracking_choice"] = {k: v for k, v in tracking.items() if k != "sweep"}
    rows += [[f"guidance blocks (top-{TOP} harmonic mean, later steps)",
              f"{guidance}: {len(guidance_in_top)} of {len(guidance)} in the top-{TOP} by PCK over those steps"],
             ["profile", (f"written to {shipped.relative_to(ev.ROOT)}" if shipped else "not written (pass --ship)")
              + ("; IMAP section added as a provisional placeholder" if imap_added else "")]]

    hm = result.hm[:, last]
    step_cols = [f"PCK step {s}" for s in result.steps]
    header = ["block", *step_cols, "moving-point PCK (last)", "HM (last)", "confidence (last)",
              "cross-frame attention (last)"]
    if check is not None:
        header.append("PCK fresh clips (last)")
    table = []
    for i, block in enumerate(blocks):
        marks = (" ★" if block in top_select else "") + (" (tracking)" if block == track_block else "")
        cells = [f"{block}{marks}", *(ev.fmt(v) for v in result.accuracy[i]),
                 ev.fmt(result.tables["moving_accuracy"][i, last]), ev.fmt(hm[i], 2),
                 ev.fmt(result.confidence[i, last], 3), ev.fmt(result.attention[i, last], 3)]
        if check is not None:
            cells.append(ev.fmt(check.accuracy[i, 0]))
        table.append(cells)
    threshold = result.produced_by.get("threshold_px")
    sweep_rows = [[candidate_label(c["descriptor"], c["content_weight"]),
                   *(f"{ev.fmt(b)} ({ev.fmt(p)} / {ev.fmt(m)})" for b, p, m in zip(c["balanced"], c["pck"],
                                                                                  c["moving_pck"]))]
                  for c in tracking["sweep"]]
    md = "\n".join([
        ev.markdown_table(["evidence", "value"], rows), "",
        ev.markdown_table(header, table), "",
        "Tracking descriptors at the last step (balanced PCK, then all-point / moving-point PCK) per block:", "",
        ev.markdown_table(["descriptor", *(f"block {b}" for b in blocks)], sweep_rows), "",
        f"★ top-{TOP} by PCK at the last analysed step. PCK = % of visible (point, frame) pairs within "
        f"{threshold} px (frame 0 included, as in DiffTrack's analysis); steps index a {num_steps}-step schedule "
        f"(0 = noisiest); "
        f"clean latents re-noised to each step, clip captions as prompts.",
        f"Selection: {ev.describe_clips(clips)}. Model: {args.model} ({backbone.family}, {backbone.num_blocks} "
        f"blocks x {backbone.num_heads} heads).",
    ])
    data = {"settings": vars(args), "evidence": evidence, "analysis": result.to_dict(),
            "check": check.to_dict() if check is not None else None, "tracking_sweep": tracking["sweep"],
            "profile": profile.to_dict(),
            "shipped": str(shipped) if shipped else None}
    ev.write(args.name, data, md, args.results_dir)


if __name__ == "__main__":
    main()
