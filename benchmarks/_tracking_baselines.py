"""Model-free point trackers that the DiffTrack tracks are compared with.

- `flow_chain_tracks`: classical optical flow (OpenCV DIS) chained frame to frame, each point moved by the
  flow read bilinearly at its current position. The usual weight-free baseline: exact on textured
  content with small motion, drifts where there is no texture (flat toy shapes, plain backgrounds).
- `zero_motion_tracks`: every point stays where it was queried. A floor: on clips where most points are
  static background, a tracker must beat this to show it follows anything.

Coordinates are (x, y) pixel centres (pixel i at i), as in the toy ground truth.
"""

from __future__ import annotations

import numpy as np

from motionguide.metrics import flow_between


def bilinear_lookup(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Values of an [H, W, C] field at (x, y) points [N, 2], bilinear, positions clamped to the frame."""
    height, width = field.shape[:2]
    x = np.clip(points[:, 0], 0, width - 1)
    y = np.clip(points[:, 1], 0, height - 1)
    x0 = np.minimum(np.floor(x).astype(int), max(width - 2, 0))
    y0 = np.minimum(np.floor(y).astype(int), max(height - 2, 0))
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def flow_chain_tracks(frames: np.ndarray, queries: np.ndarray, method: str = "dis") -> np.ndarray:
    """[N, F, 2] tracks of frame-0 `queries` [N, 2] by chaining frame f-1 -> f flow."""
    position = np.asarray(queries, np.float64).reshape(-1, 2)
    tracks = [position]
    for f in range(1, len(frames)):
        flow = flow_between(frames[f - 1], frames[f], method=method)  # frames[f-1](p) ~ frames[f](p + flow(p))
        position = position + bilinear_lookup(flow.astype(np.float64), position)
        tracks.append(position)
    return np.stack(tracks, axis=1).astype(np.float32)


def zero_motion_tracks(queries: np.ndarray, num_frames: int) -> np.ndarray:
    """[N, F, 2]: every point stays at its query position."""
    queries = np.asarray(queries, np.float32).reshape(-1, 1, 2)
    return np.repeat(queries, num_frames, axis=1)
