"""Heatmaps of a layer analysis: one panel per metric (blocks down, steps across) plus the harmonic mean.

Drawn with PIL only (matplotlib is not a dependency). Each panel is min-max normalised on its own (that is what
the harmonic mean combines); NaN cells are grey. The tracking choice is outlined in the accuracy and HM panels,
the guidance blocks are marked with a dot left of the HM panel.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..viz import save_png
from .analysis_result import AnalysisResult, minmax_normalise

# viridis at five anchors: dark (low) to yellow (high)
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
_NAN_COLOUR = (200, 200, 200)
_TEXT = (0, 0, 0)
_MARK = (255, 64, 64)


def colourise(values: np.ndarray) -> np.ndarray:
    """[..] values in [0, 1] (NaN allowed) -> uint8 RGB [.., 3] on a viridis-like ramp, NaN grey."""
    values = np.asarray(values, np.float64)
    pos = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.minimum(np.floor(pos).astype(int), len(_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac
    rgb[~np.isfinite(values)] = _NAN_COLOUR
    return rgb.round().astype(np.uint8)


def heatmap_image(result: AnalysisResult, cell: int = 16) -> Image.Image:
    """Accuracy, confidence, attention and HM panels side by side (and the moving-point PCK where there are moving
    points), with block and step labels."""
    panels = [("accuracy (PCK)", result.accuracy), ("cross-frame confidence", result.confidence),
              ("cross-frame attention", result.attention), ("harmonic mean", result.hm)]
    moving = result.tables.get("moving_accuracy")
    if moving is not None and np.isfinite(moving).any():
        panels.append(("moving-point PCK", moving))
    rows, cols = len(result.blocks), len(result.steps)
    label_w, title_h, step_h, gap = 28, 14, 12, 12
    panel_w = max(cols * cell, 140)
    width = label_w + len(panels) * (panel_w + gap)
    height = title_h + step_h + rows * cell + 16
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    track_block, track_step = result.tracking_choice()
    track_cell = (result.blocks.index(track_block), result.steps.index(track_step))
    guidance = set(result.guidance_choice())
    top = title_h + step_h
    for i, (title, table) in enumerate(panels):
        left = label_w + i * (panel_w + gap)
        draw.text((left, 1), title, fill=_TEXT)
        normed = np.where(np.isfinite(table), minmax_normalise(table), np.nan)
        tile = Image.fromarray(colourise(normed)).resize((cols * cell, rows * cell), Image.NEAREST)
        canvas.paste(tile, (left, top))
        for c, step in enumerate(result.steps):
            draw.text((left + c * cell + 1, title_h), str(step), fill=_TEXT)
        if i in (0, 3):
            r, c = track_cell
            draw.rectangle([left + c * cell, top + r * cell, left + (c + 1) * cell - 1, top + (r + 1) * cell - 1],
                           outline=_MARK, width=2)
        if i == 3:
            for r, block in enumerate(result.blocks):
                if block in guidance:
                    y = top + r * cell + cell // 2
                    draw.ellipse([left - 8, y - 3, left - 2, y + 3], fill=_MARK)
    for r, block in enumerate(result.blocks):
        draw.text((2, top + r * cell + max(0, (cell - 11) // 2)), str(block), fill=_TEXT)
    draw.text((label_w, top + rows * cell + 3), "rows: blocks, columns: step index (0 = noisiest); "
              "box: tracking, dots: guidance", fill=_TEXT)
    return canvas


def write_report(result: AnalysisResult, out_dir: str | os.PathLike, stem: str = "analysis") -> dict[str, Path]:
    """`<stem>.json` (all tables, normalised tables, HM, choices, provenance) and `<stem>.png` in `out_dir`."""
    out_dir = Path(out_dir)
    return {"json": result.save_json(out_dir / f"{stem}.json"),
            "png": save_png(heatmap_image(result), out_dir / f"{stem}.png")}
