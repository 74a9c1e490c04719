"""`MotionMask`: flow magnitude -> per-clip min-max weights -> the VAE latent grid (Motive, sec. 2).

Order as in the paper: magnitude at pixel resolution, normalised once per clip (one min and one max over all
frames and pixels, zeta = 1e-6), then resampled: bilinear in space onto the latent grid, and in time through
the backbone's causal map (latent 0 <- frame 0, latent k <- frames 4k-3..4k) by mean (default), max, or a
literal trilinear resize. A perfectly static clip gives an all-zero mask, flagged, never a division by zero.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .flow import ANCHORS, FlowEstimator, get_flow_estimator, pairs_for

ZETA = 1e-6
TEMPORAL_MODES = ("mean", "max", "trilinear")
GATES = ("change", "none")
CHANGE_THRESHOLD = 12  # intensity levels (0-255) that count as a change between two frames


@dataclass
class MotionMask:
    """A clip's motion weights at pixel and latent resolution, with the stats of how they were made."""

    pixel: np.ndarray  # float32 [F, H, W] in [0, 1]
    latent: torch.Tensor  # float32 [F', h, w] in [0, 1]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def is_degenerate(self) -> bool:
        """Whether the flow magnitude was constant over the clip, so the mask is all zeros."""
        return bool(self.stats.get("degenerate"))


def normalize_magnitude(magnitude: np.ndarray, zeta: float = ZETA) -> tuple[np.ndarray, bool]:
    """(M - min) / (max - min + zeta) over the whole clip; degenerate (all equal) -> zeros and True."""
    lo, hi = float(magnitude.min()), float(magnitude.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("flow magnitude has non-finite values")
    if hi - lo < 1e-8:
        return np.zeros_like(magnitude, dtype=np.float32), True
    return ((magnitude - lo) / (hi - lo + zeta)).astype(np.float32), False


def to_latent_grid(weights: np.ndarray, latent_frames: int, height: int, width: int,
                   frames_of_latent, temporal: str = "mean") -> torch.Tensor:
    """[F, H, W] pixel weights -> [F', h, w]: bilinear in space, the causal map (or trilinear) in time."""
    if temporal not in TEMPORAL_MODES:
        raise ConfigError(f"unknown temporal mapping {temporal!r}; valid: {', '.join(TEMPORAL_MODES)}")
    x = torch.from_numpy(np.ascontiguousarray(weights)).float()
    if temporal == "trilinear":
        return F.interpolate(x[None, None], size=(latent_frames, height, width), mode="trilinear",
                             align_corners=False)[0, 0]
    spatial = F.interpolate(x[:, None], size=(height, width), mode="bilinear", align_corners=False,
                            antialias=True)[:, 0]
    out = torch.empty(latent_frames, height, width)
    for k in range(latent_frames):
        frames = [f for f in frames_of_latent(k) if f < len(spatial)]
        if not frames:
            raise ConfigError(f"latent frame {k} has no pixel frames: the clip has {len(spatial)} frames")
        group = spatial[frames]
        out[k] = group.mean(0) if temporal == "mean" else group.amax(0)
    return out.clamp_(0.0, 1.0)


def change_gate(frames: np.ndarray, pairs: list[tuple[int, int]], magnitude: np.ndarray) -> np.ndarray:
    """Where flow is observable: pixels near an intensity change between the two frames of each pair.

    Classical flow fills textureless regions by smoothing (on a plain background a moving square spreads its
    flow over several times its area); far from any change the true motion cannot be seen, so it is zeroed.
    The change region is dilated by the frame's largest displacement, which covers the object's interior.
    """
    import cv2

    gate = np.zeros(magnitude.shape, bool)
    for f, (src, dst) in enumerate(pairs):
        if src == dst:
            continue
        diff = np.abs(frames[src].astype(np.int16) - frames[dst].astype(np.int16))
        changed = (diff.max(axis=-1) if diff.ndim == 3 else diff) > CHANGE_THRESHOLD
        radius = int(np.ceil(float(magnitude[f].max()))) + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        gate[f] = cv2.dilate(changed.astype(np.uint8), kernel).astype(bool)
    return gate


def camera_motion_cov(weights: np.ndarray) -> float:
    """Median over frames of the spatial coefficient of variation of the weights. Low values mean the motion
    is spread evenly over the frame (camera-only motion); object motion is concentrated (high values)."""
    covs = []
    for frame in weights:
        mean = float(frame.mean())
        if mean > 1e-8:
            covs.append(float(frame.std()) / mean)
    return float(np.median(covs)) if covs else 0.0


def motion_mask(frames: np.ndarray, backbone: Any, estimator: FlowEstimator | str = "dis",
                anchor: str = "consecutive", temporal: str = "mean", gate: str = "change",
                zeta: float = ZETA) -> MotionMask:
    """The Motive motion mask of a clip (uint8 [F, H, W, 3]) on `backbone`'s latent grid.

    `gate="change"` (default, a documented deviation) zeroes flow far from any intensity change, where
    classical flow only smooths; `gate="none"` is the paper's literal magnitude.
    """
    if gate not in GATES:
        raise ConfigError(f"unknown mask gate {gate!r}; valid: {', '.join(GATES)}")
    if isinstance(estimator, str):
        estimator = get_flow_estimator(estimator)
    num_frames, height, width = frames.shape[:3]
    latent_frames, h, w = backbone.latent_shape(num_frames, height, width)
    flow = estimator(frames, anchor=anchor)
    magnitude = np.linalg.norm(flow, axis=-1)
    if gate == "change":
        magnitude = magnitude * change_gate(frames, pairs_for(num_frames, anchor), magnitude)
    weights, degenerate = normalize_magnitude(magnitude, zeta)
    latent = to_latent_grid(weights, latent_frames, h, w, backbone.pixel_frames_of_latent, temporal)
    if latent.shape != (latent_frames, h, w):  # pitfall P4 of the reference
        raise AssertionError(f"mask shape {tuple(latent.shape)} != latent grid {(latent_frames, h, w)}")
    stats = {
        "estimator": getattr(estimator, "name", type(estimator).__name__),
        "anchor": anchor,
        "temporal": temporal,
        "gate": gate,
        "raw_min": float(magnitude.min()),
        "raw_max": float(magnitude.max()),
        "raw_mean": float(magnitude.mean()),
        "coverage": float((weights > 0.5).mean()),
        "latent_mean": float(latent.mean()),
        "camera_cov": camera_motion_cov(weights),
        "degenerate": degenerate,
    }
    return MotionMask(pixel=weights, latent=latent, stats=stats)


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Name, size and sha256 of a file (e.g. flow weights): two different files never share a feature store."""
    path = Path(path)
    if not path.is_file():
        return {"name": path.name, "missing": True}
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()[:16]}


class MotionMasker:
    """The masker a :class:`~motionguide.motive.Motive` pass weights each clip's loss with: a flow estimator
    and the mask settings, built once (a missing RAFT weights file fails here, before any encoding).

    Any object with the same two methods can replace it: ``masker(frames, backbone) -> MotionMask`` and
    ``describe() -> dict``, whose content goes into the feature store's config hash.
    """

    def __init__(self, flow: str = "dis", flow_weights: str | None = None, anchor: str = "consecutive",
                 temporal: str = "mean", gate: str = "change", estimator: FlowEstimator | None = None):
        check_mask_settings(anchor, temporal, gate)
        self.flow, self.flow_weights = flow, flow_weights
        self.anchor, self.temporal, self.gate = anchor, temporal, gate
        self.estimator = estimator if estimator is not None else get_flow_estimator(flow, flow_weights)

    def __call__(self, frames: np.ndarray, backbone: Any) -> MotionMask:
        """The motion mask of uint8 frames [F, H, W, 3] on `backbone`'s latent grid."""
        return motion_mask(frames, backbone, self.estimator, anchor=self.anchor, temporal=self.temporal,
                           gate=self.gate)

    def describe(self) -> dict[str, Any]:
        """What decides the mask (flow estimator and its weights file, anchor, temporal map, gate)."""
        mask: dict[str, Any] = {"use": True, "flow": self.flow, "anchor": self.anchor, "temporal": self.temporal,
                                "gate": self.gate}
        if self.flow_weights:
            mask["flow_weights"] = file_identity(self.flow_weights)
        return mask


def check_mask_settings(anchor: str, temporal: str, gate: str) -> None:
    """ConfigError naming the first unknown mask setting (checked before any model or cache work)."""
    for key, value, valid in (("mask_anchor", anchor, ANCHORS), ("mask_temporal", temporal, TEMPORAL_MODES),
                              ("mask_gate", gate, GATES)):
        if value not in valid:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(valid)}")
