"""Weight-free video quality proxies (OpenCV flow instead of RAFT/AMT), named as proxies.

They follow VBench's rules where VBench has one, but with classical flow; their numbers are comparable
across runs of this project, not with published VBench scores.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from motionguide.metrics.flow import check_frames, flow_between, flow_magnitude, optical_flow

__all__ = ["DynamicDegree", "dynamic_degree_rule", "dynamic_degree_proxy", "mean_flow_magnitude",
           "flow_warp_smoothness", "temporal_flicker"]


class DynamicDegree(NamedTuple):
    """Result of the dynamic-degree proxy: the verdict and the per-pair flow scores."""

    is_dynamic: bool
    pair_scores: np.ndarray  # float32 [F-1]: mean of the top-5% flow magnitudes per consecutive pair


def dynamic_degree_rule(height: int, width: int, num_pairs: int) -> tuple[float, int]:
    """VBench's thresholds: (px a pair must exceed = 6·min(H,W)/256, pairs needed = max(1, round(4n/16)))."""
    return 6.0 * min(height, width) / 256.0, max(1, round(4 * num_pairs / 16))


def dynamic_degree_proxy(frames: np.ndarray, method: str = "dis") -> DynamicDegree:
    """VBench's dynamic-degree rule with OpenCV flow: per consecutive pair, the mean of the top 5% flow
    magnitudes; the clip is dynamic if at least round(4n/16) of the n pairs exceed 6·min(H,W)/256
    (see dynamic_degree_rule; at least 1 pair, so a very short static clip is not called dynamic).
    VBench first resamples to ~8 fps; pass frames at the rate you want judged.
    Returns (is_dynamic, pair_scores)."""
    frames = check_frames(frames)
    height, width = frames.shape[1:3]
    scores = []
    for flow in optical_flow(frames, method=method):
        magnitudes = flow_magnitude(flow).ravel()
        top = max(1, int(magnitudes.size * 0.05))
        scores.append(float(np.mean(np.partition(magnitudes, -top)[-top:])))
    scores = np.asarray(scores, dtype=np.float32)
    threshold, required = dynamic_degree_rule(height, width, len(scores))
    return DynamicDegree(bool(np.sum(scores > threshold) >= required), scores)


def mean_flow_magnitude(frames: np.ndarray, method: str = "dis") -> float:
    """Mean flow length in px/frame over all pixels and consecutive pairs (a motion-amount proxy)."""
    return float(flow_magnitude(optical_flow(frames, method=method)).mean())


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample `image` at p + flow(p): brings the frame the flow points to back onto the flow's source."""
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def flow_warp_smoothness(frames: np.ndarray, method: str = "dis") -> float:
    """Proxy for VBench motion smoothness: warp frames t-1 and t+1 onto t with flow estimated from t,
    take the mean absolute error on the 255 scale, and return (255 - MAE)/255 (1 = perfectly predictable)."""
    frames = check_frames(frames, min_frames=3)
    errors = []
    for t in range(1, len(frames) - 1):
        target = frames[t].astype(np.float32)
        for neighbour in (t - 1, t + 1):
            warped = _warp(frames[neighbour].astype(np.float32), flow_between(frames[t], frames[neighbour], method))
            errors.append(np.abs(warped - target).mean())
    return float((255.0 - np.mean(errors)) / 255.0)


def temporal_flicker(frames: np.ndarray) -> float:
    """VBench temporal flickering: (255 - mean frame-to-frame MAE)/255; 1 means no change at all."""
    frames = check_frames(frames).astype(np.float32)
    return float((255.0 - np.abs(np.diff(frames, axis=0)).mean()) / 255.0)
