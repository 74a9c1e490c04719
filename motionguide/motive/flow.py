"""`FlowEstimator`s: per-frame displacement fields that motion masks are built from.

Every estimator returns float32 [F, H, W, 2] aligned with the frames:
- "consecutive" (default): frame f >= 1 holds the backward flow f -> f-1 on frame f's own grid, so the mask
  marks where the object *is* in frame f; frame 0 holds the forward flow 0 -> 1.
- "anchored": frame f holds the flow 0 -> f on frame 0's grid (the literal reading of a tracker anchored at
  frame 0: it marks where the object *was*; frame 0 is zero).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..errors import ConfigError
from ..metrics.flow import check_frames, flow_between

ANCHORS = ("consecutive", "anchored")


class FlowEstimator(Protocol):
    """Any callable mapping clip frames to float32 flow [F, H, W, 2] in one of the module's anchor layouts."""

    name: str

    def __call__(self, frames: np.ndarray, anchor: str = "consecutive") -> np.ndarray: ...


def _check_anchor(anchor: str) -> None:
    if anchor not in ANCHORS:
        raise ConfigError(f"unknown flow anchor {anchor!r}; valid: {', '.join(ANCHORS)}")


def pairs_for(num_frames: int, anchor: str) -> list[tuple[int, int]]:
    """(source, target) per output frame; the flow is computed on the source frame's grid."""
    if anchor == "consecutive":
        return [(0, 1)] + [(f, f - 1) for f in range(1, num_frames)]
    return [(0, 0)] + [(0, f) for f in range(1, num_frames)]


class OpenCVFlow:
    """DIS (default) or Farneback from OpenCV: no weights, runs anywhere."""

    def __init__(self, method: str = "dis"):
        self.method = method
        self.name = method

    def __call__(self, frames: np.ndarray, anchor: str = "consecutive") -> np.ndarray:
        frames = check_frames(frames)
        _check_anchor(anchor)
        out = np.zeros(frames.shape[:3] + (2,), np.float32)
        for f, (src, dst) in enumerate(pairs_for(len(frames), anchor)):
            if src != dst:
                out[f] = flow_between(frames[src], frames[dst], method=self.method)
        return out


class FrameDifference:
    """Absolute frame difference as a cheap, direction-free motion proxy (magnitude in channel 0)."""

    name = "framediff"

    def __call__(self, frames: np.ndarray, anchor: str = "consecutive") -> np.ndarray:
        frames = check_frames(frames).astype(np.float32)
        _check_anchor(anchor)
        out = np.zeros(frames.shape[:3] + (2,), np.float32)
        for f, (src, dst) in enumerate(pairs_for(len(frames), anchor)):
            diff = np.abs(frames[src] - frames[dst])
            out[f, ..., 0] = diff.mean(axis=-1) if diff.ndim == 3 else diff
        return out


RAFT_HOWTO = (
    "download torchvision's RAFT weights on a machine with internet access, e.g. "
    "`python -c \"import torch, torchvision.models.optical_flow as m; "
    "torch.save(m.Raft_Small_Weights.DEFAULT.get_state_dict(progress=True), 'raft_small.pth')\"`, "
    "copy the file here and pass --flow_weights raft_small.pth (use --flow raft_large with raft_large weights)"
)


class RAFTFlow:
    """torchvision RAFT from a local weights file (never downloaded at run time)."""

    def __init__(self, weights: str | os.PathLike | None, variant: str = "raft_small", device: str = "cpu",
                 iterations: int = 12):
        from torchvision.models import optical_flow as tv_flow

        if variant not in ("raft_small", "raft_large"):
            raise ConfigError(f"unknown RAFT variant {variant!r}; use raft_small or raft_large")
        if weights is None or not Path(weights).is_file():
            raise ConfigError(f"RAFT needs a local weights file (--flow_weights); {weights!r} not found: {RAFT_HOWTO}")
        self.model = getattr(tv_flow, variant)(weights=None, progress=False)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        try:
            self.model.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"{weights}: not {variant} weights ({exc}); {RAFT_HOWTO}") from exc
        self.model.eval().to(device)
        self.device, self.iterations, self.name = device, iterations, variant

    @torch.no_grad()
    def __call__(self, frames: np.ndarray, anchor: str = "consecutive") -> np.ndarray:
        frames = check_frames(frames)
        _check_anchor(anchor)
        f, h, w = frames.shape[:3]
        if h % 8 or w % 8:
            raise ConfigError(f"RAFT needs frame sides divisible by 8, got {h}x{w}; resize the clip first")
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(self.device)
        # RAFT's correlation pyramid needs feature maps of at least 16 (frames of 128 px): upscale small clips.
        scale = max(1, -(-128 // min(h, w)))
        if scale > 1:
            x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        out = np.zeros((f, h, w, 2), np.float32)
        pairs = [(i, s, d) for i, (s, d) in enumerate(pairs_for(f, anchor)) if s != d]
        src = x[[s for _, s, _ in pairs]]
        dst = x[[d for _, _, d in pairs]]
        flow = self.model(src, dst, num_flow_updates=self.iterations)[-1]
        if scale > 1:
            flow = torch.nn.functional.avg_pool2d(flow, scale) / scale
        for (i, _, _), fl in zip(pairs, flow):
            out[i] = fl.permute(1, 2, 0).cpu().numpy()
        return out


FLOW_NAMES = ("dis", "farneback", "raft", "raft_large", "framediff")


def get_flow_estimator(name: str = "dis", weights: str | None = None, device: str = "cpu") -> FlowEstimator:
    """By name: dis (default), farneback, raft / raft_large (needs `weights`), framediff."""
    if name in ("dis", "farneback"):
        return OpenCVFlow(name)
    if name in ("raft", "raft_small", "raft_large"):
        return RAFTFlow(weights, variant="raft_large" if name == "raft_large" else "raft_small", device=device)
    if name == "framediff":
        return FrameDifference()
    raise ConfigError(f"unknown flow estimator {name!r}; valid: {', '.join(FLOW_NAMES)}")
