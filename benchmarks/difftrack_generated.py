"""DiffTrack on generated videos: q–k tracks captured while the toy model samples, scored against reference
tracks read off the generated frames.

There is no rendered ground truth for a generated video, so the reference comes from the video itself: points
on the prompted object (its colour blob at frame 0) move with the blob's centroid, hidden where the blob is not
found; background points stay put (toy backgrounds are static) and are hidden where the object covers them.
Methods: q–k matching at the profile's tracking block, step and descriptor (`track_generation`, captured during
sampling), the same with DiffTrack's post-RoPE descriptor (the same seed, so the same video),
chained OpenCV DIS and Farneback flow on the decoded frames, and zero motion. PCK at ½ and 1 token, on all and on object points.

    python benchmarks/difftrack_generated.py [--prompts 20 --seeds 1 --threads 1]
"""

import time

import numpy as np
import torch
import _toy_eval as ev
from _common import limit_threads, machine, write_results
from _tracking_baselines import flow_chain_tracks, zero_motion_tracks

from motionguide.backbones import backbone_for
from motionguide.cli_args import ArgumentParser
from motionguide.correspondence import track_generation
from motionguide.metrics import pck_tokens
from motionguide.metrics.adherence import detect_object, parse_toy_caption
from motionguide.sampling.generate import to_uint8
from motionguide.toy import all_combinations, prompts_for_combinations



def query_grid(height: int, width: int, step: int = 4) -> np.ndarray:
    """Frame-0 queries [N, 2] (x, y): a `step` px grid over the whole frame (sorted into object / background
    once the video exists, so each prompt is sampled only once)."""
    ys, xs = np.mgrid[step // 2:height:step, step // 2:width:step]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def split_queries(points: np.ndarray, mask: np.ndarray, pad: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(kept query indices, on-object flags): grid points inside the frame-0 blob, and background points
    outside the blob's bounding box grown by `pad` px (points near its edge are ambiguous and left out)."""
    px = points.round().astype(int)
    on = mask[px[:, 1], px[:, 0]]
    yy, xx = np.nonzero(mask)
    near = ((px[:, 0] >= xx.min() - pad) & (px[:, 0] <= xx.max() + pad)
            & (px[:, 1] >= yy.min() - pad) & (px[:, 1] <= yy.max() + pad))
    keep = np.nonzero(on | ~near)[0]
    return keep, on[keep]


def reference_tracks(frames: np.ndarray, color: str, points: np.ndarray, on_object: np.ndarray):
    """[N, F, 2] reference tracks and [N, F] visibility from the blob's centroid track (see the docstring)."""
    detections = [detect_object(frame, color) for frame in frames]
    origin = np.asarray(detections[0].centroid, np.float32)
    tracks = np.repeat(points[:, None, :], len(frames), axis=1).copy()
    visible = np.ones(tracks.shape[:2], bool)
    for f, det in enumerate(detections):
        if det is None:
            visible[on_object, f] = False
            continue
        tracks[on_object, f] = points[on_object] + (np.asarray(det.centroid, np.float32) - origin)
        px = np.clip(points[~on_object].round().astype(int), 0, [frames.shape[2] - 1, frames.shape[1] - 1])
        visible[~on_object, f] = ~det.mask[px[:, 1], px[:, 0]]
    return tracks, visible


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    ev.add_common_args(parser)  # --model, --max_sequence_length, --threads, --results_dir
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    limit_threads(args.threads)
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    text_length = ev.sampling_settings(args.model, max_sequence_length=args.max_sequence_length).max_sequence_length
    token_px = backbone_for(pipe).pixels_per_token
    moving = [c for c in all_combinations() if c[2] != "still"]
    order = np.random.default_rng(0).permutation(len(moving))[: args.prompts]
    prompts = prompts_for_combinations([moving[i] for i in order])
    profile_tracking = backbone_for(pipe).default_profile().tracking
    shipped = (f"q–k matching, profile: block {profile_tracking.block}, step {profile_tracking.step}, "
               f"{profile_tracking.descriptor}"
               + (f" (pre-RoPE weight {profile_tracking.content_weight:g})"
                  if profile_tracking.descriptor == "qk_mixed" else ""))
    difftrack = f"q–k matching after RoPE (DiffTrack's descriptor), block {profile_tracking.block}"
    preds = {shipped: [], difftrack: [], "classical flow (OpenCV DIS, chained)": [],
             "classical flow (OpenCV Farneback, chained)": [], "zero motion": []}
    refs, visibles, on_flags, skipped, seconds = [], [], [], [], []
    grid = query_grid(64, 64)
    for prompt in prompts:
        color = parse_toy_caption(prompt)[0].color
        for seed in range(args.seeds):
            call = dict(prompt=prompt, num_frames=17, height=64, width=64, num_inference_steps=args.steps,
                        guidance_scale=5.0, max_sequence_length=text_length, output_type="np",
                        generator=torch.Generator().manual_seed(seed))
            start = time.perf_counter()
            tracks, out = track_generation(pipe, grid, **call)
            seconds.append(time.perf_counter() - start)
            call["generator"] = torch.Generator().manual_seed(seed)  # the same video again, read with DiffTrack's q-k
            post_rope, _ = track_generation(pipe, grid, descriptor="qk", **call)
            frames = to_uint8(out.frames[0])
            first = detect_object(frames[0], color)
            if first is None:
                skipped.append(f"{prompt} (seed {seed}): prompted colour not found on frame 0")
                continue
            keep, on_object = split_queries(grid, first.mask)
            points = grid[keep]
            reference, visible = reference_tracks(frames, color, points, on_object)
            preds[shipped].append(np.asarray(tracks, np.float32)[keep])
            preds[difftrack].append(np.asarray(post_rope, np.float32)[keep])
            preds["classical flow (OpenCV DIS, chained)"].append(flow_chain_tracks(frames, points).astype(np.float32))
            preds["classical flow (OpenCV Farneback, chained)"].append(
                flow_chain_tracks(frames, points, method="farneback").astype(np.float32))
            preds["zero motion"].append(zero_motion_tracks(points, len(frames)))
            refs.append(reference)
            visibles.append(visible)
            on_flags.append(on_object)
    gt, vis, on = np.concatenate(refs), np.concatenate(visibles), np.concatenate(on_flags)
    vis[:, 0] = False  # frame 0 is the query itself
    rows, scores = [], {}
    for name, parts in preds.items():
        pred = np.concatenate(parts)
        all_points = pck_tokens(pred, gt, vis, token_px)
        objects = pck_tokens(pred, gt, vis & on[:, None], token_px)
        scores[name] = {"all": all_points, "object": objects}
        rows.append(f"| {name} | {all_points['pck@0.5tok']:.1f} | {all_points['pck@1tok']:.1f} | "
                    f"{objects['pck@0.5tok']:.1f} | {objects['pck@1tok']:.1f} |")
    md = ["| method (generated videos) | PCK@½ token | PCK@1 token | object points PCK@½ | object points PCK@1 |",
          "|---|---|---|---|---|", *rows, "",
          f"{len(refs)} videos generated by the toy model ({args.prompts} moving prompts x {args.seeds} seed(s), "
          f"{args.steps} steps, CFG 5), {len(gt)} query points ({int(on.sum())} on the prompted object), frame 0 "
          "excluded. Reference tracks come from the generated frames (the object's colour-blob centroid; static "
          f"background), so they are approximate at the ~1 px level. 1 token = {token_px:g} px."
          + (f" Skipped: {len(skipped)} (object not found on frame 0)." if skipped else "")]
    write_results("difftrack_generated", {"machine": machine(), "scores": scores, "videos": len(refs),
                                          "skipped": skipped, "seconds_per_video_tracked": float(np.median(seconds)),
                                          "settings": vars(args)}, "\n".join(md), args.results_dir)


if __name__ == "__main__":
    main()
