"""`motionguide track`: zero-shot point tracks of a real video from a video DiT (DiffTrack's protocol).

    motionguide track --model assets/toy-model --video clip.mp4 --grid 8 --out tracks.npz --viz tracks.mp4
    motionguide track --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --video v.mp4 --points "100,80;240,200" \
        --block 17 --timestep 20 --device cuda --out tracks.json
    motionguide track --model assets/toy-model --video clip.mp4 --gt clip_gt.npz --out tracks.json   # + PCK

`motionguide analyze-layers`: which blocks and steps carry correspondence -> a LayerProfile (+ JSON, heatmap).

    motionguide analyze-layers --model assets/toy-model --data toy-data --steps 0,12,24 --out toy.yaml
    motionguide analyze-layers --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --data my-clips --tracks cotracker/ \
        --blocks 10-29 --device cuda --dtype bf16 --out wan-1.3b.yaml

Register on a parent CLI with `add_correspondence_commands(subparsers)`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from ..arg_checks import (block_count_of, check_block_indices, check_model_folder, check_positive, check_profile,
                          check_range, check_seed)
from ..cli_args import add_subcommand, parse_index_list
from ..files import atomic_write, atomic_write_text
from ..output_paths import check_output_file
from ..placement_args import add_placement_arguments, placement_from_args
from .matching import TEMPERATURES

__all__ = ["add_correspondence_commands", "parse_points", "grid_points", "parse_index_list"]


def parse_points(text: str) -> np.ndarray:
    """'x,y;x,y;...' -> [N, 2] float32 pixel positions."""
    try:
        points = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError:
        points = []
    if not points or any(len(p) != 2 for p in points):
        raise ValueError(f"--points {text!r}: write x,y pairs separated by ';', e.g. '12,30;40.5,8'")
    return np.asarray(points, dtype=np.float32)


def grid_points(n: int, height: int, width: int) -> np.ndarray:
    """An n x n grid of query points at the centres of an even split of the frame."""
    if n < 1:
        raise ValueError(f"--grid must be >= 1, got {n}")
    xs = (np.arange(n) + 0.5) * width / n - 0.5
    ys = (np.arange(n) + 0.5) * height / n - 0.5
    return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)


def _temperature(text: str) -> str | float:
    if text in TEMPERATURES:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {', '.join(TEMPERATURES)} or a number; got {text!r}") from None


_temperature.__name__ = "temperature"  # what --help shows as its type


def _ground_truth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """tracks [N, F, 2] and visibility [N, F] from an npz (the toy world's ground-truth files have both)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--gt {path}: no such file; give an npz with arrays 'tracks' [N, F, 2] and "
                                "'visibility' [N, F]")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"--gt {path}: not a readable npz ({str(exc).split('.')[0]}); give an npz with arrays "
                         "'tracks' [N, F, 2] and 'visibility' [N, F]") from None
    if not hasattr(data, "files"):
        raise ValueError(f"--gt {path}: one array, not an npz archive; give an npz with arrays 'tracks' [N, F, 2] "
                         "and 'visibility' [N, F]")
    with data:
        missing = {"tracks", "visibility"} - set(data.files)
        if missing:
            raise ValueError(f"--gt {path}: needs arrays 'tracks' [N, F, 2] and 'visibility' [N, F]; missing "
                             f"{', '.join(sorted(missing))}")
        return np.asarray(data["tracks"], np.float32), np.asarray(data["visibility"], bool)


def _run_track(args: argparse.Namespace) -> int:
    import torch

    from ..metrics.tracking import delta_avg, pck_tokens
    from ..sampling.generate import load_pipeline
    from ..video import read_video
    from .tracker import track_video

    check_positive("--chunk_size", args.chunk_size)
    check_positive("--max_sequence_length", args.max_sequence_length)
    if args.timestep is not None and not 0 <= args.timestep <= 1000:
        raise ValueError(f"--timestep {args.timestep}: give a transformer timestep in 0..1000")
    if isinstance(args.temperature, float):
        check_range("--temperature", args.temperature, 0.0, low_open=True)
    check_range("--content_weight", args.content_weight, 0.0, low_open=True)
    placement = placement_from_args(args)  # everything checkable is checked before the video is read
    check_model_folder(args.model)
    check_profile("--profile", args.profile)
    check_block_indices("--block", args.block, block_count_of(args.model))
    check_output_file(args.out, "--out")
    if args.viz:
        check_output_file(args.viz, "--viz")
    from ..conditioning_image import check_image_flag, check_image_for_pipeline

    image = check_image_flag("--image", args.image, args.model)  # before the model loads
    frames = read_video(args.video)
    gt_tracks = visible = None
    if args.gt:
        gt_tracks, visible = _ground_truth(args.gt)
        keep = visible[:, 0]  # DiffTrack's "first" query mode: points visible in frame 0
        gt_tracks, visible = gt_tracks[keep], visible[keep]
        queries = gt_tracks[:, 0]
    elif args.points:
        queries = parse_points(args.points)
    else:
        queries = grid_points(args.grid, frames.shape[1], frames.shape[2])
    _check_queries(queries, frames.shape[1], frames.shape[2], "--gt" if args.gt else "--points")
    if len(frames) < 2:
        raise ValueError(f"--video {args.video} has {len(frames)} frame; tracking needs at least 2")
    pipe = load_pipeline(args.model, placement=placement)
    check_block_indices("--block", args.block, _num_blocks(pipe))  # a family the config files did not tell
    check_image_for_pipeline("--image", image, pipe)
    with torch.inference_mode():
        tracks = track_video(pipe, frames, queries, block=args.block, timestep=args.timestep, image=image,
                             chunk_size=args.chunk_size, profile=args.profile,
                             max_sequence_length=args.max_sequence_length, temperature=args.temperature,
                             method=args.method, descriptor=args.descriptor, content_weight=args.content_weight)
    result = {"video": str(args.video), "model": args.model, "queries": queries.tolist(), "tracks": tracks.tolist(),
              "settings": {k: getattr(args, k) for k in ("block", "timestep", "chunk_size", "profile", "method",
                                                         "temperature", "descriptor", "content_weight")}}
    if gt_tracks is not None:
        result["metrics"] = {**pck_tokens(tracks, gt_tracks, visible, _pixels_per_token(pipe)),
                             "delta_avg": delta_avg(tracks, gt_tracks, visible)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_tracks(out, result, queries, tracks)
    printed = {"out": str(out.resolve()), "points": len(queries), "frames": len(frames), **result.get("metrics", {})}
    if args.viz:
        from ..video import write_video
        from ..viz.tracks import draw_tracks

        printed["viz"] = str(write_video(args.viz, draw_tracks(frames, tracks)).resolve())
    print(json.dumps(printed))
    return 0


def _check_queries(queries: np.ndarray, height: int, width: int, flag: str) -> None:
    """Query points are finite and inside the frame (a point outside matches nothing; a NaN one writes NaN)."""
    inside = np.isfinite(queries).all(axis=1) & (queries[:, 0] >= -0.5) & (queries[:, 0] <= width - 0.5) & (
        queries[:, 1] >= -0.5) & (queries[:, 1] <= height - 0.5)
    if not inside.all():
        x, y = queries[int(np.argmin(inside))]
        raise ValueError(f"{flag}: query point ({x:g}, {y:g}) is not inside the {width}x{height} video frame; give "
                         f"x in 0..{width - 1} and y in 0..{height - 1} (pixels)")


def _write_tracks(out: Path, result: dict, queries: np.ndarray, tracks: np.ndarray) -> None:
    """`.npz`: arrays `tracks` [N, F, 2], `queries` [N, 2] and a JSON string `info`; anything else: one JSON file.
    Written to a temporary name first, so a killed run leaves no half file."""
    if out.suffix == ".npz":
        info = {k: v for k, v in result.items() if k not in ("tracks", "queries")}

        def write_npz(tmp: str) -> None:
            with open(tmp, "wb") as handle:  # a file handle: np.savez would append ".npz" to a temp name
                np.savez(handle, tracks=np.asarray(tracks, np.float32), queries=np.asarray(queries, np.float32),
                         info=np.array(json.dumps(info)))

        atomic_write(out, write_npz)
    else:
        atomic_write_text(out, json.dumps(result))


def _pixels_per_token(pipe) -> int:
    from ..backbones import backbone_for

    return backbone_for(pipe).pixels_per_token


def _num_blocks(pipe) -> int:
    from ..backbones import backbone_for

    return backbone_for(pipe).num_blocks


def _analysis_command_line(args: argparse.Namespace) -> str:
    """The command as run, options in a fixed order with their values (defaults included), for provenance."""
    parts = ["motionguide", "analyze-layers"]
    for name in ("model", "data", "tracks", "blocks", "steps", "num_inference_steps", "max_clips", "max_points",
                 "threshold_px", "seed", "descriptor", "content_weight", "prompt", "max_sequence_length", "dtype", "name",
                 "out"):
        value = getattr(args, name)
        if value is not None:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    return " ".join(parts)


def _run_analyze_layers(args: argparse.Namespace) -> int:
    import torch

    from ..sampling.generate import SamplingSettings, load_pipeline
    from .analysis import analyze_layers
    from .analysis_report import write_report

    out = Path(args.out)
    if out.suffix not in (".yaml", ".yml"):
        raise ValueError(f"--out {out}: give the profile's YAML path, e.g. --out profiles/my-model.yaml")
    num_steps = args.num_inference_steps
    steps = parse_index_list(args.steps, "steps") if args.steps else None
    blocks = parse_index_list(args.blocks, "blocks") if args.blocks else None
    for flag in ("num_inference_steps", "max_clips", "max_points", "max_sequence_length"):
        check_positive(f"--{flag}", getattr(args, flag))
    check_range("--threshold_px", args.threshold_px, 0.0, low_open=True)
    check_range("--content_weight", args.content_weight, 0.0, low_open=True)
    check_seed("--seed", args.seed)
    bad_steps = [i for i in steps or () if not -num_steps <= i < num_steps]
    if bad_steps:
        raise ValueError(f"--steps {args.steps}: step {', '.join(map(str, bad_steps))} does not exist; "
                         f"--num_inference_steps {num_steps} numbers them 0-{num_steps - 1} (or from the end, "
                         f"-1 to -{num_steps})")
    placement = placement_from_args(args)
    check_model_folder(args.model)
    check_block_indices("--blocks", blocks, block_count_of(args.model))
    check_output_file(out, "--out")
    from .analysis_data import load_analysis_clips

    load_analysis_clips(args.data, args.tracks, args.max_clips)  # the clips and their tracks, before the load
    pipe = load_pipeline(args.model, placement=placement)
    check_block_indices("--blocks", blocks, _num_blocks(pipe))
    max_len = args.max_sequence_length
    if max_len is None:
        max_len = SamplingSettings.for_model(args.model, pipeline=pipe).max_sequence_length
    with torch.inference_mode():
        result = analyze_layers(
            pipe, args.data, reference_tracks=args.tracks, blocks=blocks, steps=steps, num_inference_steps=num_steps,
            threshold_px=args.threshold_px, use_captions=args.prompt == "caption", max_sequence_length=max_len,
            max_clips=args.max_clips, max_points=args.max_points, seed=args.seed, descriptor=args.descriptor,
            content_weight=args.content_weight,
            command=_analysis_command_line(args), progress=lambda line: print(line, flush=True),
        )
    profile = result.to_profile(pipe, args.name or out.stem, model=args.model, path=out)
    report = write_report(result, out.parent)
    block, step = result.tracking_choice()
    print(json.dumps({"profile": str(out.resolve()), "json": str(report["json"].resolve()),
                      "png": str(report["png"].resolve()), "tracking": {"block": block, "step": step},
                      "guidance": profile.guidance.blocks, "clips": result.produced_by["clips"]}))
    return 0


def add_correspondence_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `track` and `analyze-layers` on a parent CLI's subparsers (handlers in `args.func`)."""
    from ..backbones.profiles import DEFAULT_CONTENT_WEIGHT
    p = add_subcommand(subparsers, "track", help="zero-shot point tracks of a video from a video DiT's attention")
    p.add_argument("--model", type=str, required=True, help="local pipeline folder or hub id (Wan or CogVideoX)")
    p.add_argument("--video", type=str, required=True, help="video file; sides divisible by the model's token size")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--points", type=str, help="query points in frame 0: 'x,y;x,y' (pixels)")
    where.add_argument("--grid", type=int, default=8, help="an N x N grid of query points (default 8)")
    where.add_argument("--gt", type=str,
                       help="ground-truth npz (tracks, visibility): query its frame-0 points, report PCK")
    p.add_argument("--block", type=int, help="tracking block (default: the layer profile's)")
    p.add_argument("--timestep", type=float, help="transformer timestep 0..1000 (default: the profile's step)")
    p.add_argument("--profile", type=str, help="layer profile name or YAML (default: the model's shipped one)")
    p.add_argument("--chunk_size", type=int, default=12, help="frames per forward besides frame 0")
    p.add_argument("--method", type=str, choices=["argmax", "soft_argmax"], default="argmax",
                   help="argmax (DiffTrack) or soft_argmax over the matching cost")
    p.add_argument("--temperature", type=_temperature, default="sqrt_dim",
                   help=f"{' or '.join(TEMPERATURES)} (default {TEMPERATURES[0]}), or a number")
    p.add_argument("--descriptor", type=str, choices=["qk", "qk_no_rope", "qk_mixed", "output"],
                   help="qk: after RoPE (DiffTrack), qk_no_rope: before it, qk_mixed: both, output: attention "
                        "output (default: the profile's when it supplies the block, else qk)")
    p.add_argument("--content_weight", type=float,
                   help="weight of the pre-RoPE logits in qk_mixed (default: the profile's)")
    p.add_argument("--max_sequence_length", type=int, help="text length for the empty prompt")
    p.add_argument("--image", type=str,
                   help="conditioning image (PNG / JPEG) of an image-to-video model (CogVideoX-5B-I2V), resized to "
                        "the video, e.g. the video's first frame; required there, refused for text-to-video models")
    add_placement_arguments(p)
    p.add_argument("--out", type=str, default="tracks.npz",
                   help="tracks.npz (arrays tracks [N, F, 2], queries [N, 2], JSON info) or a .json file with the "
                        "same content")
    p.add_argument("--viz", type=str, help="also write the video with the tracks drawn on it (e.g. tracks.mp4)")
    p.set_defaults(func=_run_track)

    a = add_subcommand(subparsers, "analyze-layers", help="score every block and step for correspondence -> a layer "
                       "profile (+ analysis.json and analysis.png next to it)")
    a.add_argument("--model", type=str, required=True, help="local pipeline folder or hub id (Wan or CogVideoX)")
    a.add_argument("--data", type=str, required=True,
                   help="dataset folder (metadata.jsonl/csv, ...); toy datasets carry reference tracks as gt_file")
    a.add_argument("--tracks", type=str,
                   help="reference tracks: a folder of <clip id>.npz (tracks [N, F, 2] px + visibility [N, F], or "
                        "CoTracker's pred_tracks / pred_visibility), or one npz for a one-clip dataset")
    a.add_argument("--blocks", type=str, help="blocks to analyse, e.g. '0-29' or '10-20,25' (default: all)")
    a.add_argument("--steps", type=str,
                   help="step indices of the schedule, e.g. '0,12,24,36,49' (default: 5 spread over it, the last "
                        "included; 0 = noisiest)")
    a.add_argument("--num_inference_steps", type=int, default=50, help="schedule the steps index (default 50)")
    a.add_argument("--max_clips", type=int, help="analyse at most this many clips")
    a.add_argument("--max_points", type=int, default=400, help="query points per clip (default 400)")
    a.add_argument("--threshold_px", type=float, help="PCK threshold (default: 8 px at 480p scaled to the clip, "
                   "one token for clips too small for that)")
    a.add_argument("--prompt", type=str, choices=["caption", "empty"], default="caption",
                   help="condition on each clip's caption (default) or the empty prompt")
    a.add_argument("--seed", type=int, default=0, help="noise seed (clip i uses seed + i)")
    a.add_argument("--descriptor", type=str, choices=["qk", "qk_no_rope", "qk_mixed"], default="qk",
                   help="matching descriptor scored for accuracy: qk (after RoPE, DiffTrack), qk_no_rope or qk_mixed")
    a.add_argument("--content_weight", type=float, default=DEFAULT_CONTENT_WEIGHT,
                   help=f"pre-RoPE weight of qk_mixed (default {DEFAULT_CONTENT_WEIGHT:g})")
    a.add_argument("--max_sequence_length", type=int, help="text length (default: the model's sampling default)")
    a.add_argument("--name", type=str, help="profile name (default: the --out file name without extension)")
    add_placement_arguments(a)
    a.add_argument("--out", type=str, required=True,
                   help="profile YAML to write; analysis.json and analysis.png go next to it")
    a.set_defaults(func=_run_analyze_layers)
    return p
