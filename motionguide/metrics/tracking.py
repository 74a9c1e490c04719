"""Point-tracking accuracy against ground truth: PCK and TAP-Vid's delta_avg.

Only (point, frame) pairs where the ground truth is visible count; a NaN prediction counts as a miss.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["point_errors", "pck", "pck_tokens", "delta_avg"]


def point_errors(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Euclidean errors (px) of the visible (point, frame) pairs, NaN predictions as +inf."""
    pred, gt, visible = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(visible, bool)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must both be [N, F, 2]; got {pred.shape} and {gt.shape}")
    if visible.shape != pred.shape[:2]:
        raise ValueError(f"visible must be [N, F] = {pred.shape[:2]}, got {visible.shape}")
    errors = np.linalg.norm(pred - gt, axis=-1)[visible]
    return np.where(np.isnan(errors), np.inf, errors)


def pck(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, threshold_px: float) -> float:
    """Percent of visible (point, frame) pairs predicted within `threshold_px` (NaN if none is visible)."""
    errors = point_errors(pred, gt, visible)
    return float(100.0 * np.mean(errors <= threshold_px)) if errors.size else float("nan")


def pck_tokens(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, token_px: float,
               fractions: Sequence[float] = (0.5, 1.0)) -> dict[str, float]:
    """PCK at thresholds given in tokens (token_px = pixels per latent token side), keyed "pck@0.5tok"."""
    if token_px <= 0:
        raise ValueError(f"token_px must be positive, got {token_px}")
    return {f"pck@{fraction:g}tok": pck(pred, gt, visible, fraction * token_px) for fraction in fractions}


def delta_avg(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray,
              thresholds: Sequence[float] = (1, 2, 4, 8, 16), scale: float = 1.0) -> float:
    """TAP-Vid delta_avg: mean PCK over thresholds·scale px. TAP-Vid measures at 256×256, so pass
    scale = frame_width / 256 to compare on that footing; scale 1 uses the thresholds as pixels."""
    errors = point_errors(pred, gt, visible)
    if not errors.size:
        return float("nan")
    return float(np.mean([100.0 * np.mean(errors <= t * scale) for t in thresholds]))
