"""`TrainConfig`: the fine-tuning flags in the vocabulary diffusers users know, from YAML plus `--key value`.

A YAML key or a flag that is not a field is an error naming it and the closest valid keys, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..errors import ConfigError, unknown_key_message


@dataclass
class TrainConfig:
    """Every fine-tuning flag with its default: model, data, optimisation, checkpoints, logging, methods."""

    # model and output
    pretrained_model_name_or_path: str = "assets/toy-model"
    output_dir: str = "out/toy-lora"
    training_type: str = "lora"  # "lora" | "full"
    rank: int = 16
    lora_alpha: float = 16.0
    target_modules: list[str] | str = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    # data
    data_root: str = "data/toy-train"
    # generate a toy dataset at data_root when it does not exist yet: {num_clips, seed, defect_rate, ...}
    toy_data: dict[str, Any] | None = None
    num_frames: int = 17
    height: int = 64
    width: int = 64
    frame_stride: int = 1
    max_sequence_length: int = 16
    cache_dir: str = "cache"
    caption_dropout: float = 0.1
    # optimisation
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant_with_warmup"  # any diffusers.optimization scheduler name
    lr_warmup_steps: int = 0
    adam_weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    train_steps: int = 200
    train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    timestep_sampling: str = "logit_normal"  # "logit_normal" | "uniform"
    timestep_shift: float = 3.0
    seed: int = 0
    dataloader_num_workers: int = 0
    # checkpoints
    checkpointing_steps: int = 100
    checkpointing_limit: int | None = 3
    resume_from_checkpoint: str | None = None  # "latest" | a checkpoint folder
    # validation and logging
    validation_steps: int = 0  # 0: only at the end
    validation_prompts: list[str] = field(default_factory=list)
    validation_seeds: list[int] = field(default_factory=lambda: [0])
    validation_inference_steps: int = 25
    validation_guidance_scale: float = 5.0
    report_to: str = "tensorboard"  # "wandb" | "tensorboard" | "none"
    tracker_name: str = "motionguide"
    logging_steps: int = 10
    # method slots
    curation: str = "none"  # "none" | "random" | a registered curation
    curation_fraction: float = 0.1
    curation_mode: str | None = None  # "filter" (default) | "reweight" | "prune-negative", for curations with modes
    monitor: list[str] = field(default_factory=list)  # registered monitors, e.g. ["imap"]
    guidance: str = "none"  # validation sampling guidance: "none" | a registered guidance
    method_options: dict[str, Any] = field(default_factory=dict)  # per-method settings, e.g. {"imap": {...}}

    # ------------------------------------------------------------------ checks
    def validate(self, where: str = "config") -> "TrainConfig":
        """Self, after checking choices and ranges; ConfigError naming the first bad field."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{where}: {key}={getattr(self, key)!r} {why}")

        if self.training_type not in ("lora", "full"):
            raise bad("training_type", "must be 'lora' or 'full'")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise bad("mixed_precision", "must be 'no', 'fp16' or 'bf16'")
        if self.report_to not in ("wandb", "tensorboard", "none"):
            raise bad("report_to", "must be 'wandb', 'tensorboard' or 'none'")
        if self.timestep_sampling not in ("logit_normal", "uniform"):
            raise bad("timestep_sampling", "must be 'logit_normal' or 'uniform'")
        for key in ("rank", "train_steps", "train_batch_size", "gradient_accumulation_steps", "num_frames"):
            if getattr(self, key) < 1:
                raise bad(key, "must be >= 1")
        if (self.num_frames - 1) % 4:
            raise bad("num_frames", "must be 4k+1 (e.g. 17, 49, 81)")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise bad("caption_dropout", "must be in [0, 1)")
        if self.learning_rate <= 0:
            raise bad("learning_rate", "must be > 0")
        if not 0.0 < self.curation_fraction <= 1.0:
            raise bad("curation_fraction", "must be in (0, 1]")
        if self.curation_mode not in (None, "filter", "reweight", "prune-negative"):
            raise bad("curation_mode", "must be 'filter', 'reweight' or 'prune-negative'")
        return self

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all config fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "TrainConfig":
        """A validated config from a mapping; unknown keys are a ConfigError, values type-checked per field."""
        names = set(cls.field_names())
        for key in data:
            if key not in names:
                raise ConfigError(unknown_key_message(key, names, where))
        hints = typing.get_type_hints(cls)
        values = {k: _coerce(k, v, hints[k], where) for k, v in data.items()}
        return cls(**values).validate(where)

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> "TrainConfig":
        """YAML file, then `--key value` overrides (later wins)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a training config is a YAML mapping of flags")
        names = set(cls.field_names())
        for key in data:
            if key not in names:
                raise ConfigError(unknown_key_message(key, names, str(path)))
        data.update(parse_overrides(overrides, names))
        return cls.from_dict(data, where=str(path))


def parse_overrides(args: Sequence[str], names: set[str]) -> dict[str, Any]:
    """`--key value`, `--key=value` and bare `--flag` (true) into a dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    i = 0
    args = list(args)
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise ConfigError(f"command line: expected --key value, got {token!r}")
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if key not in names:
            raise ConfigError(unknown_key_message(key, names, "command line"))
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        out[key] = _parse_flag_value(key, value)
        i += 1
    return out


def _parse_flag_value(key: str, raw: str) -> Any:
    """Command-line text to a value by the field's type: strings stay strings ("no" is not False)."""
    hint = typing.get_type_hints(TrainConfig)[key]
    args = typing.get_args(hint)
    if raw.lower() in ("none", "null") and type(None) in args:
        return None
    if hint is str or (str in args and list not in {typing.get_origin(a) for a in args}):
        return raw
    if raw.strip().startswith(("[", "{")):
        return yaml.safe_load(raw)
    if str in args and any(ch in raw for ch in "^$*+?()|\\"):  # a regex, e.g. --target_modules '.*attn1\.to_q'
        return raw
    if typing.get_origin(hint) is list or hint is list or typing.get_origin(hint) is typing.Union and any(
            typing.get_origin(a) is list for a in args):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return yaml.safe_load(raw) if raw != "" else ""


def _coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    """Light type checks with friendly messages (YAML already typed most values)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where}: {key} may not be empty")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    if hint is int or (origin is typing.Union and int in args and float not in args):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool):  # YAML reads a bare `no` / `yes` as a boolean
            return "yes" if value else "no"
        return str(value)
    if origin is list:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        return value
    return value
