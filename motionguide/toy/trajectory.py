"""Where each object is on every frame, with the planted defect applied.

Positions are object centres (x, y) in image pixels with pixel centres at integer coordinates. "World"
positions exclude the camera pan: they are what the caption talks about (motion relative to the background).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from motionguide.toy.spec import ClipSpec

__all__ = ["ObjectPath", "shape_extent", "object_paths", "offsets_from_start", "EDGE_MARGIN"]

#: Pixels kept free between an object's extent and the frame edge.
EDGE_MARGIN = 1.0

#: Half-size of the box around the centre that holds each shape, in units of its radius (render.shape_mask).
_BOX_HALF_SIZE = {"circle": 1.0, "square": 0.9, "triangle": 1.3}


def shape_extent(shape: str, radius: float) -> float:
    """Half-size of the box that holds the shape around its centre (a safe bound for staying in frame)."""
    return _BOX_HALF_SIZE[shape] * radius


@dataclass(frozen=True)
class ObjectPath:
    """One object's centre on every frame, with and without camera pan, and whether it is drawn."""

    centers: np.ndarray        # float64 [F, 2] image position of the centre as rendered
    world_centers: np.ndarray  # float64 [F, 2] the same without the camera pan
    drawn: np.ndarray          # bool [F]: False on frames where a flicker defect hides the object


def _defect_rng(spec: ClipSpec) -> np.random.Generator:
    return np.random.default_rng([spec.seed, 1])


def _intended_steps(spec: ClipSpec, index: int) -> np.ndarray:
    """float [F, 2]: displacement applied between frame f-1 and f (row 0 is zero), defect-aware."""
    obj = spec.objects[index]
    steps = obj.frame_velocities(spec.num_frames)
    if index == spec.defect_object and spec.defect == "static":
        steps = np.zeros_like(steps)
    if index == spec.defect_object and spec.defect == "reversed":
        steps = -steps
    return steps


def _jitter_offsets(spec: ClipSpec) -> np.ndarray:
    """float [F, 2]: ±2-3 px per axis and frame, around the intended path."""
    rng = _defect_rng(spec)
    size = (spec.num_frames, 2)
    return rng.uniform(2.0, 3.0, size) * rng.choice([-1.0, 1.0], size)


def _teleport_events(spec: ClipSpec) -> list[tuple[int, str]]:
    """1-2 (frame, kind) events, kind "jump" (far away for one frame) or "vanish" (not drawn)."""
    rng = _defect_rng(spec)
    first, last = (2, spec.num_frames - 2) if spec.num_frames >= 6 else (1, spec.num_frames)
    candidates = np.arange(first, last)
    count = min(len(candidates), int(rng.integers(1, 3)))
    frames = np.sort(rng.choice(candidates, size=count, replace=False))
    kinds = rng.choice(["jump", "vanish"], size=count)
    return [(int(f), str(k)) for f, k in zip(frames, kinds)]


def offsets_from_start(spec: ClipSpec, index: int) -> np.ndarray:
    """float [F, 2]: image displacement of object `index` from its start_xy, camera pan and jitter
    included; teleport jumps are left out because they always land inside the frame."""
    offsets = np.cumsum(_intended_steps(spec, index), axis=0)
    if index == spec.defect_object and spec.defect == "jitter":
        offsets = offsets + _jitter_offsets(spec)
    pan = np.asarray(spec.pan, dtype=np.float64)
    return offsets + np.arange(spec.num_frames)[:, None] * pan[None, :]


def _far_corner(spec: ClipSpec, index: int, xy: np.ndarray) -> np.ndarray:
    """The corner of the in-frame box for this object that is farthest from `xy`."""
    obj = spec.objects[index]
    inset = shape_extent(obj.shape, obj.radius) + EDGE_MARGIN
    xs = (inset, spec.width - 1 - inset)
    ys = (inset, spec.height - 1 - inset)
    corners = np.array([(x, y) for x in xs for y in ys], dtype=np.float64)
    return corners[np.argmax(np.linalg.norm(corners - xy[None, :], axis=1))]


def object_paths(spec: ClipSpec) -> list[ObjectPath]:
    """The rendered path of every object of the clip, defect included."""
    pan_track = np.arange(spec.num_frames)[:, None] * np.asarray(spec.pan, dtype=np.float64)[None, :]
    paths = []
    for index, obj in enumerate(spec.objects):
        centers = np.asarray(obj.start_xy, dtype=np.float64)[None, :] + offsets_from_start(spec, index)
        drawn = np.ones(spec.num_frames, dtype=bool)
        if index == spec.defect_object and spec.defect == "teleport":
            for frame, kind in _teleport_events(spec):
                if kind == "jump":
                    centers[frame] = _far_corner(spec, index, centers[frame])
                else:
                    drawn[frame] = False
        paths.append(ObjectPath(centers=centers, world_centers=centers - pan_track, drawn=drawn))
    return paths
