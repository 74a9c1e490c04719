"""Cheap pictures and numbers of saliency maps for training logs (no VAE decode, no resampling filters)."""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from ..metrics.masks import binarize_saliency, mask_iou, pointing_game, resize_map

__all__ = ["heatmap_strip", "heatmap_grid", "spatial_entropy", "mask_scores"]

_SEPARATOR = 128  # gray


def heatmap_strip(maps: np.ndarray, cell: int = 64) -> np.ndarray:
    """[F, H, W] map -> one RGB uint8 row of F heatmaps, nearest-neighbour upsampled to about `cell` pixels.

    Normalised over the whole clip (not per frame), so differences between frames stay visible.
    """
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must be [F, H, W], got shape {maps.shape}")
    low, high = float(maps.min()), float(maps.max())
    scaled = (maps - low) / (high - low) if high > low else np.zeros_like(maps)
    factor = max(1, math.ceil(cell / max(maps.shape[1:])))
    tiles = []
    for frame in np.round(scaled * 255).astype(np.uint8):
        big = np.kron(frame, np.ones((factor, factor), np.uint8))
        tiles.append(cv2.cvtColor(cv2.applyColorMap(big, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB))
        tiles.append(np.full((big.shape[0], 2, 3), _SEPARATOR, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def heatmap_grid(rows: Sequence[np.ndarray], cell: int = 64) -> np.ndarray:
    """Several [F, H, W] maps (e.g. one per probe clip) as rows of one RGB uint8 image [height, width, 3]."""
    strips = [heatmap_strip(r, cell) for r in rows]
    if not strips:
        raise ValueError("no maps to draw")
    width = max(s.shape[1] for s in strips)
    parts = []
    for strip in strips:
        pad = np.full((strip.shape[0], width - strip.shape[1], 3), _SEPARATOR, np.uint8)
        parts += [np.concatenate([strip, pad], axis=1), np.full((2, width, 3), _SEPARATOR, np.uint8)]
    return np.ascontiguousarray(np.concatenate(parts[:-1], axis=0))


def spatial_entropy(maps: np.ndarray) -> float:
    """Mean over frames of the normalised entropy of each frame's map shifted to >= 0 (1: flat, 0: one peak).

    A diffuse map that highlights everything scores near 1; a focused one lower.
    """
    maps = np.asarray(maps, np.float64)
    frames = maps.reshape(maps.shape[0], -1)
    if frames.shape[1] < 2:
        return 0.0
    values = []
    for frame in frames:
        mass = frame - frame.min()
        total = mass.sum()
        if total <= 0:
            values.append(1.0)
            continue
        p = mass[mass > 0] / total
        values.append(float(-(p * np.log(p)).sum() / math.log(frames.shape[1])))
    return float(np.mean(values))


def mask_scores(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Pointing game and IoU (map above its per-frame mean, upsampled to the masks) against [F, H, W] masks."""
    maps, masks = np.asarray(maps, np.float32), np.asarray(masks, bool)
    if masks.ndim != 3 or masks.shape[0] != maps.shape[0]:
        raise ValueError(f"ground-truth masks must be [F'={maps.shape[0]}, H, W] per latent frame; "
                         f"got shape {masks.shape}")
    upsampled = resize_map(maps, masks.shape[1:])
    return {"pointing_game": pointing_game(maps, masks), "iou": mask_iou(binarize_saliency(upsampled, "mean"), masks)}
