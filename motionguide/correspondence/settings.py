"""Correspondence guidance (CAG) settings shared by the classic-pipeline adapter and the modular guider.

    v = v_u + w (v_c - v_u) + s (v_c - v_ptb)

v_ptb is the conditional prediction with frame-local self-attention at `blocks`; the term is applied only at
sampling steps inside `window` (fractions of the steps, [start, stop)), elsewhere the result is plain CFG.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..attention import InstrumentError
from ..backbones import GuidanceProfile, LayerProfile, VideoBackbone, warn_if_provisional
from ..errors import ConfigError
from .profiles import resolve_profile


@dataclass(frozen=True)
class CAGSettings:
    """Resolved correspondence-guidance settings: scale, frame-local blocks, step window, renormalisation."""

    scale: float
    blocks: tuple[int, ...]
    window: tuple[float, float] = (0.0, 1.0)
    renormalize: bool = False  # DiffTrack's released results: cross-frame mass dropped, not renormalised

    def active_at(self, step: int, num_steps: int) -> bool:
        """Whether the perturbed pass runs at `step` of `num_steps` (and the scale is non-zero)."""
        return self.scale != 0 and step_in_window(step, num_steps, self.window)


def step_in_window(step: int, num_steps: int, window: tuple[float, float]) -> bool:
    """int(start*N) <= step < int(stop*N), the rule diffusers' guiders use for their start/stop fractions."""
    return int(window[0] * num_steps) <= step < int(window[1] * num_steps)


def _check_window(window) -> tuple[float, float]:
    ok = isinstance(window, (list, tuple)) and len(window) == 2 and all(isinstance(x, (int, float)) for x in window)
    if not ok or not 0.0 <= window[0] < window[1] <= 1.0:
        raise ConfigError(f"window {window!r}: give [start, stop] as fractions of the sampling steps with "
                          "0 <= start < stop <= 1 (e.g. [0.0, 1.0] for all steps)")
    return float(window[0]), float(window[1])


def resolve_cag_settings(
    backbone: VideoBackbone,
    scale: float | None = None,
    profile: str | os.PathLike | LayerProfile | None = None,
    blocks=None,
    window=None,
    renormalize: bool | None = None,
) -> CAGSettings:
    """Settings from the profile's `guidance` section (explicit `profile`, else the model's shipped one),
    overridden by any explicit value. Without a profile, `blocks` must be given."""
    section: GuidanceProfile | None = None
    if profile is not None or blocks is None:
        resolved = resolve_profile(backbone, profile, "correspondence guidance")
        section = resolved.guidance
        if section is None and blocks is None:
            raise ConfigError(f"profile {resolved.name!r} has no `guidance` section (blocks, window); add one or "
                              "pass blocks=")
        if blocks is None:
            warn_if_provisional(resolved, "guidance", "correspondence guidance")
    else:
        try:
            section = backbone.default_profile().guidance
        except ConfigError:
            section = None
    section = section or GuidanceProfile(blocks=list(blocks))
    chosen = [backbone.check_block(int(b)) for b in (section.blocks if blocks is None else blocks)]
    if not chosen:
        raise ConfigError("correspondence guidance needs at least one block to make frame-local")
    value = section.scale if scale is None else scale
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"guidance scale must be a number, got {value!r}")
    return CAGSettings(
        scale=float(value),
        blocks=tuple(sorted(set(chosen))),
        window=_check_window(section.window if window is None else window),
        renormalize=bool(section.renormalize if renormalize is None else renormalize),
    )


def _backend_name(processor) -> str:
    backend = getattr(processor, "_attention_backend", None)
    if backend is None:
        try:
            from diffusers.models.attention_dispatch import _AttentionBackendRegistry

            backend = _AttentionBackendRegistry._active_backend
        except ImportError:  # pragma: no cover - older diffusers: only torch SDPA exists
            return "native"
    return str(getattr(backend, "value", backend))


def check_attention_backend(backbone: VideoBackbone, blocks) -> None:
    """Refuse attention backends other than diffusers' native (torch SDPA) one at the frame-local blocks."""
    for block in blocks:
        processor = backbone.video_self_attention(block).processor
        name = _backend_name(processor)
        if name != "native" and not name.startswith("_native"):
            raise InstrumentError(
                f"block {block} self-attention runs on the {name!r} attention backend; correspondence guidance "
                "applies frame-local attention only on diffusers' native backend. Call "
                "transformer.reset_attention_backend() (or set_attention_backend('native')) before guiding"
            )


def cag_combine(pred_cond: torch.Tensor, pred_uncond: torch.Tensor | None, pred_perturbed: torch.Tensor | None,
                guidance_scale: float, scale: float) -> torch.Tensor:
    """v_u + w (v_c - v_u) + s (v_c - v_ptb); CFG or CAG terms dropped when their prediction is None."""
    pred = pred_cond if pred_uncond is None else pred_uncond + guidance_scale * (pred_cond - pred_uncond)
    if pred_perturbed is not None:
        pred = pred + scale * (pred_cond - pred_perturbed)
    return pred
