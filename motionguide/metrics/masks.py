"""Compare saliency maps and predicted masks with ground-truth object masks."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["mask_iou", "binarize_saliency", "resize_map", "pointing_game"]


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape (1.0 when both are empty)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"masks must have the same shape, got {pred.shape} and {gt.shape}; "
                         "upsample the prediction first (resize_map)")
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def resize_map(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a map [h, w] or a stack [F, h, w] to (H, W) (pixel-centre aligned)."""
    saliency = np.asarray(saliency, np.float32)
    height, width = size
    if saliency.ndim == 2:
        return cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)
    if saliency.ndim == 3:
        return np.stack([resize_map(frame, size) for frame in saliency])
    raise ValueError(f"saliency must be [h, w] or [F, h, w], got shape {saliency.shape}")


def _binarize_one(saliency: np.ndarray, method: str | float) -> np.ndarray:
    if isinstance(method, (int, float)) and not isinstance(method, bool):
        if not 0.0 < method < 1.0:
            raise ValueError(f"a quantile threshold must be in (0, 1), got {method}")
        return saliency >= np.quantile(saliency, method)
    if method == "mean":
        return saliency > saliency.mean()
    if method == "otsu":
        low, high = float(saliency.min()), float(saliency.max())
        if high <= low:
            return np.zeros(saliency.shape, bool)
        scaled = np.round((saliency - low) / (high - low) * 255).astype(np.uint8)
        _, binary = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return binary > 0
    raise ValueError(f"unknown binarization {method!r}; use 'mean', 'otsu' or a quantile in (0, 1)")


def binarize_saliency(saliency: np.ndarray, method: str | float = "mean") -> np.ndarray:
    """Threshold a map [h, w] (or each map of [F, h, w]): above its mean, Otsu's threshold, or a quantile."""
    saliency = np.asarray(saliency, np.float32)
    if saliency.ndim == 2:
        return _binarize_one(saliency, method)
    if saliency.ndim == 3:
        return np.stack([_binarize_one(frame, method) for frame in saliency])
    raise ValueError(f"saliency must be [h, w] or [F, h, w], got shape {saliency.shape}")


def pointing_game(saliency: np.ndarray, gt_masks: np.ndarray, tolerance_px: int = 0) -> float:
    """Fraction of frames whose (upsampled) saliency peak falls inside the ground-truth mask, optionally
    grown by `tolerance_px`. A single map [h, w] is scored against every frame; frames with an empty
    mask are skipped; NaN if every mask is empty."""
    gt_masks = np.asarray(gt_masks, bool)
    if gt_masks.ndim == 2:
        gt_masks = gt_masks[None]
    if gt_masks.ndim != 3:
        raise ValueError(f"gt_masks must be [F, H, W] or [H, W], got shape {gt_masks.shape}")
    num_frames, height, width = gt_masks.shape
    saliency = np.asarray(saliency, np.float32)
    if saliency.ndim == 2:
        saliency = np.broadcast_to(saliency, (num_frames, *saliency.shape))
    if saliency.ndim != 3 or saliency.shape[0] != num_frames:
        raise ValueError(f"saliency must be [h, w] or [F={num_frames}, h, w], got shape {saliency.shape}")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance_px + 1,) * 2) if tolerance_px > 0 else None
    hits = []
    for frame_map, mask in zip(saliency, gt_masks):
        if not mask.any():
            continue
        if kernel is not None:
            mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
        upsampled = resize_map(frame_map, (height, width))
        row, col = np.unravel_index(int(np.argmax(upsampled)), upsampled.shape)
        hits.append(bool(mask[row, col]))
    return float(np.mean(hits)) if hits else float("nan")
