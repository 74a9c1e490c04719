"""Dense optical flow with OpenCV, weight-free, so motion metrics run offline on a CPU."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["FLOW_METHODS", "optical_flow", "flow_between", "flow_magnitude", "check_frames"]

FLOW_METHODS = ("dis", "farneback")
_ANCHORS = ("consecutive", "first")


def check_frames(frames: np.ndarray, min_frames: int = 2) -> np.ndarray:
    """Validate uint8 [F, H, W, 3] RGB frames (a grayscale [F, H, W] is accepted too)."""
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(f"frames must be [F, H, W, 3] RGB or [F, H, W] gray, got shape {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (0-255), got {frames.dtype}")
    if frames.shape[0] < min_frames:
        raise ValueError(f"need at least {min_frames} frames, got {frames.shape[0]}")
    return frames


def _gray(frame: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return np.ascontiguousarray(gray)


def _estimator(method: str):
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda a, b: dis.calc(a, b, None)
    if method == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=15,
                                                         iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    raise ValueError(f"unknown flow method {method!r}; valid methods: {', '.join(FLOW_METHODS)}")


def flow_between(source: np.ndarray, target: np.ndarray, method: str = "dis") -> np.ndarray:
    """float32 [H, W, 2] flow (dx, dy) such that source(p) ≈ target(p + flow(p))."""
    return _estimator(method)(_gray(source), _gray(target)).astype(np.float32)


def optical_flow(frames: np.ndarray, method: str = "dis", anchor: str = "consecutive") -> np.ndarray:
    """float32 [F-1, H, W, 2]: flow from frame f to f+1 ("consecutive") or from frame 0 to f+1 ("first").
    Classical flow loses large displacements (above ~8 px on 64-96 px frames, where OpenCV's pyramids are
    shallow), so "first" is reliable only while the accumulated motion stays small."""
    frames = check_frames(frames)
    estimate = _estimator(method)
    if anchor not in _ANCHORS:
        raise ValueError(f"unknown anchor {anchor!r}; valid anchors: {', '.join(_ANCHORS)}")
    gray = [_gray(frame) for frame in frames]
    sources = gray[:-1] if anchor == "consecutive" else [gray[0]] * (len(gray) - 1)
    return np.stack([estimate(a, b) for a, b in zip(sources, gray[1:])]).astype(np.float32)


def flow_magnitude(flow: np.ndarray) -> np.ndarray:
    """Per-pixel length of flow vectors [..., 2] → [...]."""
    return np.linalg.norm(np.asarray(flow, dtype=np.float32), axis=-1)
