"""Object-level temporal consistency on toy videos: does the prompted object keep its colour and shape, and does
its centroid move smoothly? Found per frame by colour (`detect_object`), so no learned model is involved.

- colour drift: mean RGB distance of the object's mean colour in each frame from its median over the clip (↓);
- shape consistency: mean IoU of consecutive frames' object masks with their centroids aligned (↑; 1 = the same
  blob shifted), so motion itself does not count against it;
- trajectory jerk: mean |second difference| of the centroid over runs of consecutive found frames,
  px / frame² (↓; 0 = constant velocity).
Each is NaN when the object is found on too few frames to say.
"""

from __future__ import annotations

import numpy as np

from motionguide.metrics.adherence import ObjectDetection, detect_object, parse_toy_caption
from motionguide.metrics.flow import check_frames

__all__ = ["object_consistency", "aligned_mask_iou"]


def aligned_mask_iou(a: ObjectDetection, b: ObjectDetection) -> float:
    """IoU of two blobs after shifting `b` so its centroid lands on `a`'s (integer shift, no wrap-around)."""
    dx = int(round(a.centroid[0] - b.centroid[0]))
    dy = int(round(a.centroid[1] - b.centroid[1]))
    height, width = b.mask.shape
    shifted = np.zeros_like(b.mask)
    src = b.mask[max(0, -dy): height - max(0, dy), max(0, -dx): width - max(0, dx)]
    shifted[max(0, dy): max(0, dy) + src.shape[0], max(0, dx): max(0, dx) + src.shape[1]] = src
    union = np.logical_or(a.mask, shifted).sum()
    return float(np.logical_and(a.mask, shifted).sum() / union) if union else float("nan")


def object_consistency(frames: np.ndarray, caption: str) -> dict[str, float]:
    """colour_drift, shape_consistency and trajectory_jerk of the caption's first object (module docstring)."""
    frames = check_frames(frames)
    objects = parse_toy_caption(caption)
    if not objects:
        raise ValueError(f"caption {caption!r} names no toy object (e.g. 'a red circle moves left')")
    colour = objects[0].color
    found = [detect_object(frame, colour) for frame in frames]
    colours = np.array([frame[d.mask].mean(axis=0) if d is not None else [np.nan] * 3
                        for frame, d in zip(frames, found)], np.float64)
    present = ~np.isnan(colours[:, 0])
    drift = (float(np.linalg.norm(colours[present] - np.median(colours[present], axis=0), axis=1).mean())
             if present.sum() >= 2 else float("nan"))
    ious = [aligned_mask_iou(a, b) for a, b in zip(found[:-1], found[1:]) if a is not None and b is not None]
    centroids = np.array([d.centroid if d is not None else (np.nan, np.nan) for d in found], np.float64)
    second = centroids[2:] - 2 * centroids[1:-1] + centroids[:-2]  # NaN wherever a frame of the triple is missing
    jerk = np.linalg.norm(second, axis=1)
    jerk = jerk[~np.isnan(jerk)]
    return {"colour_drift": drift,
            "shape_consistency": float(np.nanmean(ious)) if ious else float("nan"),
            "trajectory_jerk": float(jerk.mean()) if len(jerk) else float("nan")}
