"""`MotiveConfig`: the settings of one Motive pass (model, data, queries, masking, projection, selection)."""

from __future__ import annotations

import math

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError, unknown_key_message
from .selection import DEFAULT_MODE, check_mode

__all__ = ["MotiveConfig", "AttributionConfig", "DEPRECATED_KEYS", "projector_cache_bytes", "projector_rng_device"]

#: old option names still accepted, with a DeprecationWarning: old name -> new name
DEPRECATED_KEYS = {"cache_dir": "latent_cache_dir"}


@dataclass
class MotiveConfig:
    """Settings of one Motive attribution pass: model, data, queries, masking, projection and selection."""

    model: str
    data: str
    queries: str
    out: str
    num_frames: int = 17
    height: int = 64
    width: int = 64
    max_sequence_length: int | None = None  # None: the model's own (Wan 512, CogVideoX 226, the toy 16)
    # how clips become frames: the same settings (and defaults) as TrainConfig, so the pass reads what
    # fine-tuning trains on (motionguide.data.dataset_options maps both onto VideoDataset)
    frame_stride: int = 1
    target_fps: float | None = None
    resize_mode: str = "center_crop"
    buckets: Any = None  # [[frames, height, width], ...] or "FxHxW,..." (see motionguide.data.parse_buckets)
    caption_column: str = "text"
    video_column: str = "file_name"
    video_reader: str = "auto"
    latent_cache_dir: str | None = None  # default: <out>/cache (shareable with training via --latent_cache_dir)
    timestep: float = 751.0
    seed: int = 0
    projector: str = "fastfood_blockwise"
    dim: int = 512
    params: str = "all"
    blocks: list[int] = field(default_factory=list)
    loss: str = "motion_weighted"  # or "temporal_difference" (a deviation from the paper)
    use_mask: bool = True
    flow: str = "dis"
    flow_weights: str | None = None
    mask_anchor: str = "consecutive"
    mask_temporal: str = "mean"
    mask_gate: str = "change"
    fraction: float = 0.1
    percentile: float = 90.0
    mode: str = DEFAULT_MODE  # see motionguide.motive.selection.MODES
    reweight_mode: str = "votes"  # with mode "reweight": "votes" (vote share) or "zscore" (z-scored mean score)
    floor: float = 0.05
    lora: str | None = None  # a saved LoRA to load for the pass (what --params lora differentiates)
    flush_every: int = 8  # clips per feature-store part (a crash loses at most this many)
    report: bool = True  # write report.md with thumbnails next to selection.json
    # where and how the pass runs (none of these changes a feature beyond float rounding; see `placement`)
    device: str = "auto"  # auto: the accelerator when the pass loads the model; a pipeline passed in stays put
    dtype: str | None = None  # frozen weights' dtype when the pass loads the model (bf16|fp16|fp32; None: as stored)
    gradient_checkpointing: bool = False  # recompute block activations in backward (same gradients, less memory)
    enable_model_cpu_offload: bool = False  # diffusers' model offload (needs a GPU): components wait on the CPU
    vae_tiling: bool = False  # encode the clips tile by tile (bounded VAE memory at large sizes)
    #: the projector's kept random state, in MiB: "auto" (a share of the free memory of the gradients' device,
    #: see projectors.auto_cache_bytes) or a number (0: regenerate every block for every clip). Values unchanged.
    projector_cache_mb: Any = "auto"
    #: where the projector's random state is generated: "auto" (on the gradients' device when it is an
    #: accelerator: far cheaper there, but another random stream, so features and scores are reproducible per
    #: device type and model; the CPU when the gradients are on the CPU) or "cpu" (the stream every machine
    #: shares: a GPU run gives the CPU's features, paying the CPU generation until the state cache holds it)
    projector_rng: str = "auto"
    process_group_timeout_s: float = 1800.0  # collectives' timeout of the group the pass creates (torchrun)
    #: deprecated spelling of `latent_cache_dir` (diffusers' `cache_dir` is the hub download cache)
    cache_dir: dataclasses.InitVar[str | None] = None

    def __post_init__(self, cache_dir: str | None) -> None:
        if cache_dir is not None:
            warnings.warn("MotiveConfig(cache_dir=...) is deprecated; use latent_cache_dir", DeprecationWarning,
                          stacklevel=3)
            if self.latent_cache_dir not in (None, cache_dir):
                raise ConfigError("cache_dir and latent_cache_dir are the same setting; keep latent_cache_dir")
            self.latent_cache_dir = cache_dir

    @classmethod
    def field_names(cls) -> list[str]:
        """Every setting's name, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str = "MotiveConfig") -> "MotiveConfig":
        """A config from a mapping that may use deprecated names (warned about); unknown names are an error."""
        return cls(**cls.normalize_options(options, where))

    @classmethod
    def normalize_options(cls, options: Mapping[str, Any], where: str = "MotiveConfig",
                          extra: tuple[str, ...] = ()) -> dict[str, Any]:
        """`options` with deprecated names renamed; a ConfigError for a name that is neither a setting nor in
        `extra` (names a caller handles itself)."""
        valid = set(cls.field_names()) | set(extra)
        out: dict[str, Any] = {}
        for key, value in options.items():
            if key in DEPRECATED_KEYS:
                new = DEPRECATED_KEYS[key]
                warnings.warn(f"{where}.{key} is deprecated; use {new}", DeprecationWarning, stacklevel=3)
                if new in options:
                    raise ConfigError(f"{where}: {key} and {new} are the same setting; keep {new}")
                key = new
            if key not in valid:
                raise ConfigError(unknown_key_message(key, valid, where))
            out[key] = value
        return out

    def check(self) -> "MotiveConfig":
        """Self, after checking the choices that would otherwise fail only after the cache is built."""
        from .masks import check_mask_settings

        check_mode(self.mode, self.reweight_mode)
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        if not 0.0 <= self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in [0, 100], got {self.percentile}")
        if not 0.0 < self.floor <= 1.0:
            raise ConfigError(f"floor must be in (0, 1], got {self.floor}")
        check_mask_settings(self.mask_anchor, self.mask_temporal, self.mask_gate)
        from ..data.buckets import parse_buckets
        from ..data.dataset import RESIZE_MODES
        from ..data.readers import VIDEO_READERS

        if self.frame_stride < 1:
            raise ConfigError(f"frame_stride must be >= 1 (1 = consecutive frames), got {self.frame_stride}")
        if self.target_fps is not None and not (math.isfinite(self.target_fps) and self.target_fps > 0):
            raise ConfigError(f"target_fps must be > 0 (or None to keep each video's own rate), got {self.target_fps}")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}; got {self.resize_mode!r}")
        if self.video_reader not in VIDEO_READERS:
            raise ConfigError(f"video_reader must be one of {', '.join(VIDEO_READERS)}; got {self.video_reader!r}")
        parse_buckets(self.buckets)
        for key in ("num_frames", "height", "width", "dim", "flush_every"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_sequence_length is not None and self.max_sequence_length < 1:
            raise ConfigError(f"max_sequence_length must be >= 1 (or unset for the model's own), got "
                              f"{self.max_sequence_length}")
        if not (math.isfinite(self.timestep) and 0.0 <= self.timestep <= 1000.0):
            raise ConfigError(f"timestep must be a noise level in 0..1000, got {self.timestep}")
        if self.params == "blocks" and not self.blocks:
            raise ConfigError("--params blocks needs --blocks (e.g. 10,11,12)")
        if self.blocks and self.params != "blocks":
            raise ConfigError(f"--blocks {','.join(map(str, self.blocks))} only acts with --params blocks (now "
                              f"--params {self.params}); add --params blocks or drop --blocks")
        self._check_placement()
        if self.lora is not None and not Path(self.lora).exists():
            raise ConfigError(f"lora={self.lora}: no such file or folder (a LoRA saved by the fine-tuning loop, "
                              "e.g. <output_dir>/lora, or a .safetensors file)")
        return self

    def _check_placement(self) -> None:
        from ..loading import parse_dtype, resolve_device

        parse_dtype(self.dtype, "dtype")
        device = resolve_device(self.device)  # cuda on a machine without one: a ConfigError now
        if self.enable_model_cpu_offload and device.type == "cpu":
            raise ConfigError("enable_model_cpu_offload keeps components on the CPU until the GPU needs them; it "
                              "needs device cuda (or auto on a machine with a GPU)")
        projector_cache_bytes(self.projector_cache_mb, None, check_only=True)
        if str(self.projector_rng) not in PROJECTOR_RNG:
            raise ConfigError(f"projector_rng must be one of {', '.join(PROJECTOR_RNG)}, got {self.projector_rng!r}")
        if not (math.isfinite(float(self.process_group_timeout_s)) and float(self.process_group_timeout_s) > 0):
            raise ConfigError(f"process_group_timeout_s must be > 0 seconds, got {self.process_group_timeout_s}")

    def placement(self, device: Any = None):
        """The :class:`~motionguide.loading.PipelinePlacement` the pass loads `model` with (dtype, device,
        offload, tiling); `device` overrides the resolved `self.device` (e.g. this rank's GPU)."""
        from ..loading import PipelinePlacement, parse_dtype, resolve_device

        device = resolve_device(device if device is not None else self.device)
        return PipelinePlacement(dtype=parse_dtype(self.dtype, "dtype"), device=str(device),
                                 enable_model_cpu_offload=self.enable_model_cpu_offload, vae_tiling=self.vae_tiling)

    def make_masker(self):
        """The motion masker these settings describe, or None with `use_mask` off (the paper's "w/o MM")."""
        from .masks import MotionMasker

        if not self.use_mask:
            return None
        return MotionMasker(self.flow, self.flow_weights, anchor=self.mask_anchor, temporal=self.mask_temporal,
                            gate=self.mask_gate)

    def make_projector_factory(self, device: Any = None):
        """`sizes -> Projector` for these settings (the parameter sizes are known once the model is loaded);
        `device`: where the gradients are, which sizes the "auto" state-cache budget and, with `projector_rng`
        "auto", is where an accelerator generates the random state (`projector_rng_device`)."""
        from .projectors import make_projector

        def factory(sizes):
            extra = {}
            if self.projector != "fastfood":  # the global Fastfood keeps its one state anyway
                extra["cache_bytes"] = projector_cache_bytes(self.projector_cache_mb, device)
            rng_device = projector_rng_device(self.projector_rng, device)
            if rng_device is not None:  # the CPU path passes nothing: the projector it builds is today's
                extra["rng_device"] = rng_device
            return make_projector(self.projector, sizes, dim=self.dim, seed=self.seed, **extra)

        return factory

    def cache_root(self) -> Path:
        """Where the latent cache lives: `latent_cache_dir`, or `<out>/cache`."""
        return Path(self.latent_cache_dir) if self.latent_cache_dir else Path(self.out) / "cache"


#: `projector_rng` values
PROJECTOR_RNG = ("auto", "cpu")


def projector_rng_device(setting: str, device: Any = None) -> Any:
    """Where `projector_rng` generates the projector's random state for gradients on `device`: the accelerator
    itself for "auto" on one (cuda, cuda:N, mps, ...), None (the CPU) otherwise."""
    if str(setting) not in PROJECTOR_RNG:
        raise ConfigError(f"projector_rng must be one of {', '.join(PROJECTOR_RNG)}, got {setting!r}")
    if setting == "cpu" or device is None:
        return None
    import torch

    device = torch.device(device)
    return None if device.type in ("cpu", "meta") else device


def projector_cache_bytes(setting: Any, device: Any = None, check_only: bool = False) -> int:
    """Bytes of projector state to keep for `projector_cache_mb` ("auto" or MiB >= 0); "auto" asks
    `projectors.auto_cache_bytes(device)`. With `check_only`, only validates (returns 0)."""
    from .projectors import auto_cache_bytes

    if isinstance(setting, str) and setting.strip().lower() == "auto":
        return 0 if check_only else auto_cache_bytes(device)
    try:
        mib = float(setting)
    except (TypeError, ValueError):
        mib = -1.0
    if not (math.isfinite(mib) and mib >= 0):
        raise ConfigError(f"projector_cache_mb must be 'auto' or a number of MiB >= 0, got {setting!r}")
    return int(mib * 2**20)


#: the name before issue 14 (kept so old imports and scripts keep working)
AttributionConfig = MotiveConfig
