"""Point tracks drawn over a video: a dot per point and a fading trail of its last positions."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw


def _palette(count: int) -> list[tuple[int, int, int]]:
    """Distinct hues so neighbouring points can be told apart."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.9, 1.0)) for i in range(count)]


def draw_tracks(frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray | None = None, trail: int = 6,
                min_side: int = 256) -> np.ndarray:
    """Overlay tracks [N, F, 2] (x, y pixels) on uint8 frames [F, H, W, 3]; returns new uint8 frames.

    Frames are upscaled (nearest) so the short side is at least `min_side`, so dots stay visible on small toy clips;
    points where `visibility` [N, F] is False are not drawn.
    """
    frames = np.asarray(frames)
    tracks = np.asarray(tracks, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.shape}")
    if tracks.ndim != 3 or tracks.shape[1] != frames.shape[0] or tracks.shape[2] != 2:
        raise ValueError(f"tracks must be [N, {frames.shape[0]}, 2] for {frames.shape[0]} frames, got {tracks.shape}")
    visible = np.ones(tracks.shape[:2], bool) if visibility is None else np.asarray(visibility, bool)
    scale = max(1, int(np.ceil(min_side / min(frames.shape[1:3]))))
    size = (frames.shape[2] * scale, frames.shape[1] * scale)
    colours = _palette(len(tracks))
    radius = max(2, scale)
    out = []
    for f, frame in enumerate(frames):
        image = Image.fromarray(np.ascontiguousarray(frame)).resize(size, Image.NEAREST)
        draw = ImageDraw.Draw(image)
        for n, colour in enumerate(colours):
            start = max(0, f - trail)
            path = [tuple(((tracks[n, g] + 0.5) * scale).tolist()) for g in range(start, f + 1) if visible[n, g]]
            if len(path) > 1:
                draw.line(path, fill=colour, width=max(1, scale // 2))
            if visible[n, f]:
                x, y = ((tracks[n, f] + 0.5) * scale).tolist()
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))
        out.append(np.asarray(image))
    return np.stack(out)
