"""Frame grids: one row per clip, a few frames per row, the caption above each row."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..files import atomic_write


def _pick(num_frames: int, count: int) -> list[int]:
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, min(count, num_frames))})


def frame_grid(
    clips: Sequence[np.ndarray],
    captions: Sequence[str] | None = None,
    frames_per_row: int = 6,
    scale: int = 2,
    gap: int = 2,
) -> Image.Image:
    """Clips are uint8 [F, H, W, 3]; frames are picked evenly from first to last and upscaled `scale`x."""
    if not clips:
        raise ValueError("frame_grid needs at least one clip")
    h, w = clips[0].shape[1] * scale, clips[0].shape[2] * scale
    label_h = 14 if captions else 0
    cols = frames_per_row
    canvas = Image.new("RGB", (cols * (w + gap) + gap, len(clips) * (h + label_h + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for row, clip in enumerate(clips):
        top = gap + row * (h + label_h + gap)
        if captions:
            draw.text((gap, top), captions[row], fill=(0, 0, 0))
        for col, f in enumerate(_pick(clip.shape[0], cols)):
            tile = Image.fromarray(np.ascontiguousarray(clip[f])).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (gap + col * (w + gap), top + label_h))
    return canvas


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write atomically so a report never links a half-written picture."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
