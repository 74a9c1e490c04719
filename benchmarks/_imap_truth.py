"""Toy-world ground truth brought to the saliency maps' resolution, shared by the imap_* benchmarks.

Saliency maps live on the token grid per *latent* frame, ground truth per pixel frame. Time follows the causal
VAE rule (latent 0 <- frame 0, latent k <- frames 4k-3..4k, via the backbone), so masks and motion flags are
grouped the same way the model saw the frames.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from motionguide.toy.truth import clip_masks_fn, latent_groups, latent_masks

__all__ = ["clip_masks_fn", "latent_groups", "latent_masks", "moving_fraction", "token_coverage",
           "in_object_energy", "pearson", "mean_ci"]


def moving_fraction(moving: np.ndarray, groups: Sequence[range]) -> np.ndarray:
    """bool [F] "moved since the previous frame" -> float [F']: the share of a latent frame's frames that move."""
    moving = np.asarray(moving, bool)
    return np.array([moving[list(g)].mean() for g in groups], np.float64)


def token_coverage(masks: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """bool [F', H, W] -> float [F', h, w]: the fraction of each token's pixels on the object (area pooling;
    the masks go down to the maps, not the maps up, so no interpolation invents map values)."""
    masks = np.asarray(masks, np.float64)
    frames, height, width = masks.shape
    h, w = grid_hw
    if height % h or width % w:
        raise ValueError(f"mask size {height}x{width} is not a multiple of the token grid {h}x{w}")
    return masks.reshape(frames, h, height // h, w, width // w).mean(axis=(2, 4))


def in_object_energy(saliency: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """Per latent frame, the coverage-weighted mean of the map over the object's tokens ([F'] float)."""
    saliency, coverage = np.asarray(saliency, np.float64), np.asarray(coverage, np.float64)
    weight = coverage.reshape(coverage.shape[0], -1)
    values = saliency.reshape(saliency.shape[0], -1)
    total = weight.sum(axis=1)
    return np.where(total > 0, (values * weight).sum(axis=1) / np.maximum(total, 1e-12), np.nan)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two series; NaN when either is constant (or holds a NaN) and r is undefined."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()) or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def mean_ci(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, 95% half-width by the normal approximation, n) over the finite values."""
    finite = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    half = 1.96 * finite.std(ddof=1) / np.sqrt(finite.size) if finite.size > 1 else float("nan")
    return float(finite.mean()), float(half), int(finite.size)
