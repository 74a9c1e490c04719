"""Toy-world ground truth brought to the saliency maps' resolution, shared by the imap_* benchmarks.

Saliency maps live on the token grid per *latent* frame, ground truth per pixel frame. Time follows the causal
VAE rule (latent 0 <- frame 0, latent k <- frames 4k-3..4k, via the backbone), so masks and motion flags are
grouped the same way the model saw the frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def latent_groups(backbone, num_frames: int) -> list[range]:
    """Pixel frames of each latent frame, from the backbone's causal temporal map."""
    return [backbone.pixel_frames_of_latent(k) for k in range(backbone.num_latent_frames(num_frames))]


def latent_masks(masks: np.ndarray, groups: Sequence[range]) -> np.ndarray:
    """bool [F, H, W] per-frame mask -> [F', H, W]: where the object is on any frame of a latent frame
    (a latent frame encodes all its pixel frames, so the object's swept area is its footprint there)."""
    return np.stack([np.asarray(masks)[list(g)].any(axis=0) for g in groups])


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


def clip_masks_fn(data_root: str | Path, backbone, num_frames: int, object_index: int = 0):
    """clip_id -> bool [F', H, W] latent-frame masks of one object from a toy dataset's gt/ files (for the
    IMAP monitor's `masks_fn`); object 0 is the subject of the caption's first clause."""
    from motionguide.toy import load_ground_truth

    groups = latent_groups(backbone, num_frames)

    def masks_for(clip_id: str) -> np.ndarray | None:
        path = Path(data_root) / "gt" / f"{clip_id}.npz"
        if not path.is_file():
            return None
        masks = load_ground_truth(path)["masks"][:, object_index]
        return latent_masks(masks, groups) if masks.shape[0] == num_frames else None

    return masks_for
