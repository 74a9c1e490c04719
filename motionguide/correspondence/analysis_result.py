"""The result of a layer analysis: [blocks x steps] tables, their normalisation and harmonic mean, and the
rules that turn them into a `LayerProfile` (see `motionguide.correspondence.analysis` for the metrics).

Selection rules:
- tracking: the block with the highest raw accuracy at the last (least noisy) analysed step, ties broken by HM
  at that step, then by the lower block index; the step is that last analysed step.
- guidance (CAG): the 3 blocks with the highest HM averaged over the later half of the analysed steps (the last
  ceil(n/2) of them), ties broken by mean accuracy there, then by the lower block index; window [0, 1].
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones import GuidanceProfile, LayerProfile, TrackingProfile, VideoBackbone, backbone_for
from ..errors import ConfigError
from ..files import atomic_write_text

#: tables of an analysis: the three DiffTrack metrics first, then the extras kept for the report
METRICS = ("accuracy", "confidence", "attention")
EXTRAS = ("own_frame_attention", "text_attention", "own_frame_confidence", "text_confidence", "moving_accuracy")
GUIDANCE_BLOCKS = 3


# ---------------------------------------------------------------------- normalisation and harmonic mean
def minmax_normalise(table: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min) over the finite cells; a constant or empty table gives zeros, NaN cells 0."""
    table = np.asarray(table, dtype=np.float64)
    finite = np.isfinite(table)
    if not finite.any():
        return np.zeros_like(table)
    lo, hi = table[finite].min(), table[finite].max()
    if hi <= lo:
        return np.zeros_like(table)
    return np.where(finite, (table - lo) / (hi - lo), 0.0)


def harmonic_mean(accuracy: np.ndarray, confidence: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """HM = 3 / (1/acc + 1/conf + 1/attn) of the min-max normalised tables; NaN / inf -> 0."""
    normed = [minmax_normalise(t) for t in (accuracy, confidence, attention)]
    with np.errstate(divide="ignore", invalid="ignore"):
        hm = 3.0 / sum(1.0 / t for t in normed)
    return np.where(np.isfinite(hm), hm, 0.0)


# ---------------------------------------------------------------------- the result
def _nan_to_none(table: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(table, np.float64)]


@dataclass
class AnalysisResult:
    """[blocks x steps] tables of one analysis and the rules that turn them into a `LayerProfile`."""

    blocks: list[int]
    steps: list[int]
    num_inference_steps: int
    tables: dict[str, np.ndarray]  # METRICS + EXTRAS, each [len(blocks), len(steps)]
    family: str
    num_blocks: int
    num_heads: int
    timesteps: list[float] = field(default_factory=list)
    produced_by: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> np.ndarray:
        """Raw tracking accuracy table [blocks x steps]."""
        return self.tables["accuracy"]

    @property
    def confidence(self) -> np.ndarray:
        """Raw cross-frame confidence table [blocks x steps]."""
        return self.tables["confidence"]

    @property
    def attention(self) -> np.ndarray:
        """Raw cross-frame attention table [blocks x steps]."""
        return self.tables["attention"]

    @property
    def hm(self) -> np.ndarray:
        """Harmonic mean of the normalised accuracy, confidence and attention tables."""
        return harmonic_mean(self.accuracy, self.confidence, self.attention)

    def normalised(self) -> dict[str, np.ndarray]:
        """Min-max normalised copy of each of the three metric tables."""
        return {name: minmax_normalise(self.tables[name]) for name in METRICS}

    # ------------------------------------------------------------------ selection rules
    def _last_step_column(self) -> int:
        return int(np.argmax(self.steps))

    def tracking_choice(self) -> tuple[int, int]:
        """(block, step): highest accuracy at the last analysed step; ties by HM there, then lower block."""
        col = self._last_step_column()
        acc = np.nan_to_num(self.accuracy[:, col], nan=-np.inf)
        hm = self.hm[:, col]
        best = min(range(len(self.blocks)), key=lambda i: (-acc[i], -hm[i], self.blocks[i]))
        return self.blocks[best], self.steps[col]

    def late_step_columns(self) -> list[int]:
        """Columns of the later half of the analysed steps (the last ceil(n/2), by step index)."""
        order = list(np.argsort(self.steps))
        return [int(c) for c in order[len(order) // 2:]]

    def guidance_choice(self, count: int = GUIDANCE_BLOCKS) -> list[int]:
        """Top-`count` blocks by HM averaged over the late steps; ties by mean accuracy there, then lower block."""
        cols = self.late_step_columns()
        hm = self.hm[:, cols].mean(axis=1)
        acc = np.nan_to_num(self.accuracy[:, cols], nan=-np.inf).mean(axis=1)
        order = sorted(range(len(self.blocks)), key=lambda i: (-hm[i], -acc[i], self.blocks[i]))
        return sorted(self.blocks[i] for i in order[:count])

    # ------------------------------------------------------------------ profile
    def to_profile(self, base: LayerProfile | VideoBackbone | Any, name: str, model: str | None = None,
                   path: str | os.PathLike | None = None) -> LayerProfile:
        """A `LayerProfile` from the selection rules (module docstring), saved to `path` when given.

        `base`: a LayerProfile of the same architecture, or the analysed model (pipeline / backbone), whose
        shipped profile is used as base where one exists. Its IMAP section is copied (else omitted), and its
        guidance scale / renormalisation kept.
        """
        base_profile, family, num_blocks, num_heads = _base_profile(base)
        if (family, num_blocks, num_heads) != (self.family, self.num_blocks, self.num_heads):
            raise ConfigError(
                f"the analysis is of a {self.family} model with {self.num_blocks} blocks x {self.num_heads} heads; "
                f"the base is {family} with {num_blocks} x {num_heads}: pass the analysed model or its profile"
            )
        block, step = self.tracking_choice()
        guidance_blocks = self.guidance_choice()
        late = [self.steps[c] for c in self.late_step_columns()]
        about = _describe_data(self.produced_by)
        base_guidance = base_profile.guidance if base_profile is not None else None
        profile = LayerProfile(
            name=name,
            family=family,
            num_blocks=num_blocks,
            num_heads=num_heads,
            model=model if model is not None else (base_profile.model if base_profile is not None else ""),
            tracking=TrackingProfile(
                block=block, step=step, num_inference_steps=self.num_inference_steps, provisional=False,
                descriptor=self.produced_by.get("descriptor", "qk"),
                content_weight=float(self.produced_by.get("content_weight", TrackingProfile.content_weight)),
                source=f"motionguide analyze-layers on {about}: highest PCK at the last analysed step "
                       f"({step} of {self.num_inference_steps}), ties by harmonic mean",
            ),
            guidance=GuidanceProfile(
                blocks=guidance_blocks, window=(0.0, 1.0),
                scale=base_guidance.scale if base_guidance is not None else 1.0,
                renormalize=base_guidance.renormalize if base_guidance is not None else False,
                provisional=False,
                source=f"motionguide analyze-layers on {about}: top-{len(guidance_blocks)} blocks by harmonic mean "
                       f"of accuracy, cross-frame confidence and attention over steps {late}",
            ),
            imap=copy.deepcopy(base_profile.imap) if base_profile is not None else None,
            produced_by=_plain(self.produced_by),
        )
        if path is not None:
            profile.save(path)
        return profile

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: raw, normalised and HM tables (NaN as null) and the rules' choices."""
        block, step = self.tracking_choice()
        return {
            "family": self.family, "num_blocks": self.num_blocks, "num_heads": self.num_heads,
            "blocks": list(self.blocks), "steps": list(self.steps), "num_inference_steps": self.num_inference_steps,
            "timesteps": [float(t) for t in self.timesteps],
            "tables": {name: _nan_to_none(table) for name, table in self.tables.items()},
            "normalised": {name: _nan_to_none(table) for name, table in self.normalised().items()},
            "hm": _nan_to_none(self.hm),
            "choice": {"tracking": {"block": block, "step": step}, "guidance": {"blocks": self.guidance_choice()}},
            "produced_by": _plain(self.produced_by),
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write `to_dict()` as JSON to `path` atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AnalysisResult":
        """Rebuild a result from `to_dict()` output (null cells back to NaN)."""
        tables = {name: np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
                  for name, rows in data["tables"].items()}
        for name in METRICS + EXTRAS:  # results saved before a table existed read it as all-NaN
            if name not in tables:
                tables[name] = np.full((len(data["blocks"]), len(data["steps"])), np.nan)
        return cls(blocks=list(data["blocks"]), steps=list(data["steps"]),
                   num_inference_steps=int(data["num_inference_steps"]), tables=tables, family=data["family"],
                   num_blocks=int(data["num_blocks"]), num_heads=int(data["num_heads"]),
                   timesteps=list(data.get("timesteps", [])), produced_by=dict(data.get("produced_by", {})))

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> "AnalysisResult":
        """Re-read `analysis.json`, e.g. to derive a profile with other rules without re-running the model."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _plain(value: Any) -> Any:
    """numpy scalars / tuples -> YAML- and JSON-safe builtins."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _describe_data(produced_by: dict[str, Any]) -> str:
    data = produced_by.get("data") or "the given clips"
    clips = produced_by.get("clips")
    return f"{data} ({clips} clips)" if clips is not None else str(data)


def _base_profile(base: Any) -> tuple[LayerProfile | None, str, int, int]:
    if isinstance(base, LayerProfile):
        return base, base.family, base.num_blocks, base.num_heads
    backbone = base if isinstance(base, VideoBackbone) else backbone_for(base)
    try:
        shipped = backbone.default_profile()
    except ConfigError:
        shipped = None
    return shipped, backbone.family, backbone.num_blocks, backbone.num_heads
