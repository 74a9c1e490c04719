"""`motionguide track`: zero-shot point tracks of a real video from a video DiT (DiffTrack's protocol).

    motionguide track --model assets/toy-model --video clip.mp4 --grid 8 --out tracks.json
    motionguide track --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --video v.mp4 --points "100,80;240,200" \
        --block 17 --timestep 20 --device cuda --out tracks.json
    motionguide track --model assets/toy-model --video clip.mp4 --gt clip_gt.npz --out tracks.json   # + PCK

Register on a parent CLI with `add_correspondence_commands(subparsers)`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["add_correspondence_commands", "parse_points", "grid_points"]


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
    if text in ("sqrt_dim", "sqrt_heads"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sqrt_dim, sqrt_heads or a number; got {text!r}") from None


def _ground_truth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """tracks [N, F, 2] and visibility [N, F] from an npz (the toy world's ground-truth files have both)."""
    with np.load(path, allow_pickle=False) as data:
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
    pipe = load_pipeline(args.model, device=args.device)
    with torch.inference_mode():
        tracks = track_video(pipe, frames, queries, block=args.block, timestep=args.timestep,
                             chunk_size=args.chunk_size, profile=args.profile,
                             max_sequence_length=args.max_sequence_length, temperature=args.temperature,
                             method=args.method, descriptor=args.descriptor)
    result = {"video": str(args.video), "model": args.model, "queries": queries.tolist(), "tracks": tracks.tolist(),
              "settings": {k: getattr(args, k) for k in ("block", "timestep", "chunk_size", "profile", "method",
                                                         "temperature", "descriptor")}}
    if gt_tracks is not None:
        result["metrics"] = {**pck_tokens(tracks, gt_tracks, visible, _pixels_per_token(pipe)),
                             "delta_avg": delta_avg(tracks, gt_tracks, visible)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result))
    print(json.dumps({"out": str(out.resolve()), "points": len(queries), "frames": len(frames),
                      **result.get("metrics", {})}))
    return 0


def _pixels_per_token(pipe) -> int:
    from ..backbones import backbone_for

    return backbone_for(pipe).pixels_per_token


def add_correspondence_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `track` on a parent CLI's subparsers (handler in `args.func`)."""
    p = subparsers.add_parser("track", help="zero-shot point tracks of a video from a video DiT's attention")
    p.add_argument("--model", required=True, help="local pipeline folder or hub id (Wan or CogVideoX)")
    p.add_argument("--video", required=True, help="video file; sides divisible by the model's token size")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--points", help="query points in frame 0: 'x,y;x,y' (pixels)")
    where.add_argument("--grid", type=int, default=8, help="an N x N grid of query points (default 8)")
    where.add_argument("--gt", help="ground-truth npz (tracks, visibility): query its frame-0 points, report PCK")
    p.add_argument("--block", type=int, help="tracking block (default: the layer profile's)")
    p.add_argument("--timestep", type=float, help="transformer timestep 0..1000 (default: the profile's step)")
    p.add_argument("--profile", help="layer profile name or YAML (default: the model's shipped one)")
    p.add_argument("--chunk-size", type=int, default=12, help="frames per forward besides frame 0")
    p.add_argument("--method", choices=["argmax", "soft_argmax"], default="argmax")
    p.add_argument("--temperature", type=_temperature, default="sqrt_dim",
                   help="sqrt_dim (default), sqrt_heads or a number")
    p.add_argument("--descriptor", choices=["qk", "output"], default="qk")
    p.add_argument("--max-sequence-length", type=int, help="text length for the empty prompt")
    p.add_argument("--device", help="e.g. cuda; default: CPU")
    p.add_argument("--out", default="tracks.json", help="JSON with queries, tracks [N][F][2] and metrics")
    p.set_defaults(func=_run_track)
    return p
