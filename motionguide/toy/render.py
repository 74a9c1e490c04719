"""Draw a ClipSpec into frames together with its ground truth (masks, point tracks, motion flags).

Shapes are drawn with hard edges on pixel centres, so a mask is exactly the set of pixels that carry the
object's colour. Coordinates are (x, y) with pixel centres at integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from motionguide.toy.captions import caption_for
from motionguide.toy.spec import ClipSpec, ObjectSpec
from motionguide.toy.trajectory import object_paths
from motionguide.toy.vocab import COLORS

__all__ = ["ToyClip", "render_clip", "shape_mask", "clip_labels"]

#: Object points are this many pixels inside the outline, so their nearest pixel is always on the object.
_POINT_INSET = 1.0


@dataclass
class ToyClip:
    """A rendered clip and its ground truth. N tracked points = object grid points, then background."""

    frames: np.ndarray       # uint8 [F, H, W, 3] RGB
    masks: np.ndarray        # bool [F, n_obj, H, W] visible (unoccluded) pixels of each object
    tracks: np.ndarray       # float32 [N, F, 2] (x, y) of each point as rendered
    visibility: np.ndarray   # bool [N, F] False when occluded, hidden or out of frame
    point_owner: np.ndarray  # int64 [N] object index, -1 for background points
    moving: np.ndarray       # bool [F, n_obj] did the object move (relative to the background) since f-1
    centers: np.ndarray      # float32 [F, n_obj, 2] rendered object centres
    caption: str
    labels: dict[str, Any]
    spec: ClipSpec


def shape_mask(shape: str, radius: float, cx: float, cy: float, xs: np.ndarray, ys: np.ndarray,
               inset: float = 0.0) -> np.ndarray:
    """bool mask of a shape centred at (cx, cy) sampled at coordinates (xs, ys); `inset` shrinks the
    outline by that many pixels. Square half-side 0.9·r; triangle equilateral, apex up, circumradius 1.3·r
    with its centroid at the centre."""
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= (radius - inset) ** 2
    if shape == "square":
        half = 0.9 * radius - inset
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":
        circum = 1.3 * radius - 2.0 * inset  # the inradius is half the circumradius
        return (dy <= circum / 2.0) & (math.sqrt(3.0) * np.abs(dx) <= dy + circum)
    raise ValueError(f"unknown shape {shape!r}")


def _background_texture(spec: ClipSpec) -> tuple[np.ndarray, int]:
    """float32 [H+2p, W+2p, 3] world background, larger than the frame so a panning camera can crop it."""
    pad = int(math.ceil(max(abs(v) for v in spec.pan) * (spec.num_frames - 1))) + 2
    height, width = spec.height + 2 * pad, spec.width + 2 * pad
    rng = np.random.default_rng([spec.seed, 0])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if spec.background == "plain":
        angle = rng.uniform(0, 2 * math.pi)
        ramp = (math.cos(angle) * (xs - width / 2) + math.sin(angle) * (ys - height / 2)) / max(height, width)
        gray = 45.0 + 20.0 * ramp
        return np.repeat(gray[..., None], 3, axis=2).astype(np.float32), pad
    # textured: a few low-frequency gratings + blurred noise (luminance), a faint tint, light static noise
    pattern = np.zeros((height, width), np.float32)
    for _ in range(4):
        angle, wavelength, phase = rng.uniform(0, math.pi), rng.uniform(10, 32), rng.uniform(0, 2 * math.pi)
        pattern += np.sin(2 * math.pi * (math.cos(angle) * xs + math.sin(angle) * ys) / wavelength + phase)
    blobs = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 2.0)
    blobs /= blobs.std() + 1e-6
    luminance = 120.0 + 15.0 * pattern + 18.0 * blobs
    tint = rng.uniform(-10, 10, size=3).astype(np.float32)
    texture = luminance[..., None] + tint[None, None, :] + rng.normal(0, 3.0, (height, width, 3))
    return np.clip(texture, 0, 255).astype(np.float32), pad


def _background_frame(texture: np.ndarray, pad: int, spec: ClipSpec, frame: int) -> np.ndarray:
    """Crop of the world texture seen on `frame`: content shifted by frame·pan (sub-pixel, bilinear)."""
    shift_x, shift_y = (frame * v for v in spec.pan)
    matrix = np.array([[1, 0, pad - shift_x], [0, 1, pad - shift_y]], dtype=np.float64)
    return cv2.warpAffine(texture, matrix, (spec.width, spec.height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)


def _object_colors(obj: ObjectSpec, cx: float, cy: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """float32 [H, W, 3]: the object's colour with a mild top-left highlight that moves with it."""
    ramp = np.clip(0.5 - ((xs - cx) + (ys - cy)) / (4.0 * obj.radius), 0.0, 1.0)
    return np.asarray(COLORS[obj.color], np.float32)[None, None, :] * (0.9 + 0.1 * ramp)[..., None]


def _point_grid(obj: ObjectSpec, cx: float, cy: float) -> np.ndarray:
    """float [K, 2]: a regular grid of points on the object (inset from the outline), centred on it."""
    spacing = max(2.0, obj.radius / 2.5)
    steps = np.arange(-math.ceil(1.5 * obj.radius / spacing), math.ceil(1.5 * obj.radius / spacing) + 1)
    gx, gy = np.meshgrid(steps * spacing + cx, steps * spacing + cy)
    inside = shape_mask(obj.shape, obj.radius, cx, cy, gx, gy, inset=_POINT_INSET)
    return np.stack([gx[inside], gy[inside]], axis=1)


def _background_grid(spec: ClipSpec) -> np.ndarray:
    spacing = max(8, min(spec.height, spec.width) // 8)
    gx, gy = np.meshgrid(np.arange(spacing / 2, spec.width, spacing), np.arange(spacing / 2, spec.height, spacing))
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64)


def clip_labels(spec: ClipSpec, caption: str) -> dict[str, Any]:
    """JSON-ready labels. Flat keys describe the first object (the only one in single-object clips);
    `objects` lists every object. A turning object's motion is its phrase ("right then left") and it adds
    `turn_frame` (flat too when it is the first object); straight objects carry no turn key."""
    objects = [{
        "shape": o.shape, "color": o.color, "motion": o.motion_name,
        "speed": o.speed if o.motion != "still" else "none", "speed_px": o.speed_px,
        "radius": o.radius, "motion_start": o.motion_start, "motion_stop": o.motion_stop,
        **({"turn_frame": o.turn_frame} if o.turn_frame is not None else {}),
    } for o in spec.objects]
    flat_keys = ("shape", "color", "motion", "speed", "speed_px")
    flat_keys += ("turn_frame",) if "turn_frame" in objects[0] else ()
    return {
        **{key: objects[0][key] for key in flat_keys},
        "defect": spec.defect or "none",
        "defect_object": spec.defect_object,
        "background": spec.background,
        "camera_pan": list(spec.camera_pan) if spec.camera_pan is not None else None,
        "num_objects": len(objects),
        "caption": caption,
        "objects": objects,
    }


def render_clip(spec: ClipSpec) -> ToyClip:
    """Render a clip and its ground truth; deterministic in `spec` (its seed included)."""
    num_frames, height, width, num_objects = spec.num_frames, spec.height, spec.width, len(spec.objects)
    paths = object_paths(spec)
    texture, pad = _background_texture(spec)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)

    frames = np.empty((num_frames, height, width, 3), np.uint8)
    drawn = np.zeros((num_frames, num_objects, height, width), bool)
    for f in range(num_frames):
        image = _background_frame(texture, pad, spec, f)
        for i, (obj, path) in enumerate(zip(spec.objects, paths)):
            if not path.drawn[f]:
                continue
            cx, cy = path.centers[f]
            drawn[f, i] = shape_mask(obj.shape, obj.radius, cx, cy, xs, ys)
            image[drawn[f, i]] = _object_colors(obj, cx, cy, xs, ys)[drawn[f, i]]
        frames[f] = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    masks = drawn.copy()  # an object is hidden wherever a later (front) object is drawn
    for i in range(num_objects - 1):
        masks[:, i] &= ~drawn[:, i + 1:].any(axis=1)

    starts = [_point_grid(obj, *path.centers[0]) for obj, path in zip(spec.objects, paths)]
    tracks = [p[None, :, :] + (path.centers - path.centers[0])[:, None, :] for p, path in zip(starts, paths)]
    background = _background_grid(spec)
    pan = np.arange(num_frames)[:, None, None] * np.asarray(spec.pan)[None, None, :]
    tracks.append(background[None, :, :] + pan)
    tracks = np.concatenate(tracks, axis=1).transpose(1, 0, 2)  # [N, F, 2]
    owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(starts)] + [np.full(len(background), -1)])

    col = np.floor(tracks[..., 0] + 0.5).astype(np.int64)
    row = np.floor(tracks[..., 1] + 0.5).astype(np.int64)
    in_frame = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    col_c, row_c = np.clip(col, 0, width - 1), np.clip(row, 0, height - 1)
    frame_index = np.arange(num_frames)[None, :]
    owner_visible = masks[frame_index, np.maximum(owner, 0)[:, None], row_c, col_c]
    background_free = ~drawn[frame_index, :, row_c, col_c].any(axis=-1)
    visibility = in_frame & np.where(owner[:, None] >= 0, owner_visible, background_free)

    world = np.stack([p.world_centers for p in paths], axis=1)  # [F, n_obj, 2]
    moving = np.zeros((num_frames, num_objects), bool)
    moving[1:] = np.linalg.norm(np.diff(world, axis=0), axis=-1) > 1e-6

    caption = caption_for(spec)
    return ToyClip(
        frames=frames, masks=masks, tracks=tracks.astype(np.float32), visibility=visibility,
        point_owner=owner.astype(np.int64), moving=moving,
        centers=np.stack([p.centers for p in paths], axis=1).astype(np.float32),
        caption=caption, labels=clip_labels(spec, caption), spec=spec,
    )
