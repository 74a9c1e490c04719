"""`TrainConfig`: the fine-tuning flags in the vocabulary diffusers users know, from YAML plus command-line flags.

`train/finetune.py --config FILE --key value ...` reads the YAML file, then the flags (later wins). A key or flag
that is not a field is an error naming it and the closest valid keys, so a typo never silently falls back to a
default; a YAML syntax error, a bad value, an unknown `--lr_scheduler`, `--curation`, `--monitor`, `--guidance` or
data recipe is a one-line :class:`ConfigError` raised while parsing, before any model is loaded.

Why jsonargparse parses the flags (and not `transformers.HfArgumentParser`): it types every flag from the
dataclass's own type hints, including the ones this config needs most, mappings (`--method_options '{motive:
{queries: DIR}}'` is YAML/JSON) and lists (`--validation_prompts '["a ball, bouncing", "a dog"]'`, or the flag
repeated); its `--help` prints each flag's type and default; and it depends on PyYAML only. HfArgumentParser
cannot parse a mapping field and turns a list field into `nargs="+"`, which cannot hold a prompt that looks like
a flag, so it would have needed as much hand-written code as it replaces.

On top of jsonargparse this module keeps only the project's dialect, unchanged from before: snake_case flags
with kebab aliases, `--flag` alone for true, `none` for an unset optional value, comma-separated lists for
seeds, monitors and module names (`--validation_seeds 0,1`), YAML 1.1 readings fixed (`mixed_precision: no` is
the string "no"), and old key names mapped onto their new places with a FutureWarning:

- `cache_dir` -> `latent_cache_dir` (in diffusers `cache_dir` is the hub download cache);
- `toy_data: {...}` -> `data_recipe: {name: toy, ...}` (how to create `data_root` when it does not exist);
- `curation_fraction` / `curation_mode` -> `method_options.<curation>.fraction` / `.mode` (each curation
  validates its own options).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import types
import typing
import warnings
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from ..errors import ConfigError, unknown_key_message

__all__ = ["TrainConfig", "DEPRECATED_KEYS", "build_parser", "parse_overrides", "lr_scheduler_names"]


def _flag(default: Any = dataclasses.MISSING, *, help: str, factory: Any = None) -> Any:
    """A config field with its `--help` text (kept next to the field so the two never drift apart)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


#: old key -> where its value lives now (accepted in YAML, on the command line and as a constructor argument)
DEPRECATED_KEYS = {
    "cache_dir": "latent_cache_dir",
    "toy_data": "data_recipe: {name: toy, ...}",
    "curation_fraction": "method_options.<curation>.fraction",
    "curation_mode": "method_options.<curation>.mode",
}


@dataclass
class TrainConfig:
    """Every fine-tuning flag with its default: model, data, optimisation, checkpoints, logging, methods."""

    # model and output
    pretrained_model_name_or_path: str = _flag("assets/toy-model", help="pipeline folder or hub id to fine-tune")
    output_dir: str = _flag("out/toy-lora", help="folder for checkpoints, the LoRA and logs")
    training_type: Literal["lora", "full"] = _flag("lora", help="train a LoRA adapter or every transformer weight")
    rank: int = _flag(16, help="LoRA rank")
    lora_alpha: float = _flag(16.0, help="LoRA alpha (scale = alpha / rank)")
    target_modules: list[str] | str = _flag(
        help="modules that get a LoRA: a list (to_q,to_k or [to_q, to_k]) or one regex over module names",
        factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    experts: Literal["both", "high_noise", "low_noise"] = _flag(
        "both", help="a two-expert model (Wan2.2-T2V-A14B): which experts get a LoRA: both (each sample's loss on "
                     "the expert owning its timestep), high_noise (transformer, t >= boundary) or low_noise "
                     "(transformer_2), whose timesteps are then drawn from that expert's range only")
    # data
    data_root: str = _flag("data/toy-train", help="dataset folder (metadata.jsonl/csv or video + txt pairs)")
    data_recipe: dict[str, Any] | None = _flag(
        None, help="how to create data_root when it does not exist, e.g. '{name: toy, num_clips: 200, seed: 0}'")
    create_data: bool = _flag(
        False, help="let data_recipe create a data_root given on the command line (without it, only the data_root "
                    "the config file names is created, so a typo in --data_root is an error, not a new dataset)")
    num_frames: int = _flag(17, help="frames per clip (4k+1)")
    height: int = _flag(64, help="frame height in pixels")
    width: int = _flag(64, help="frame width in pixels")
    frame_stride: int = _flag(1, help="take every n-th frame of a video (of its target_fps timeline when set)")
    target_fps: float | None = _flag(
        None, help="resample every video in time to this frame rate before frame_stride and num_frames pick "
                   "frames (nearest earlier frame; none: each video's own frames)")
    resize_mode: Literal["center_crop", "resize"] = _flag(
        "center_crop", help="center_crop: crop to the target aspect ratio, then scale (nothing distorted); "
                            "resize: stretch to height x width")
    buckets: list[list[int] | str] | None = _flag(
        None, help="resolution-and-length buckets, e.g. '[[17, 480, 832], [17, 832, 480]]' or "
                   "17x480x832,17x832x480: each clip goes to the bucket that fits its length and keeps most of "
                   "its aspect ratio, batches never mix buckets; num_frames / height / width are then unused "
                   "for the data (none: every clip at num_frames x height x width)")
    caption_column: str = _flag("text", help="caption column (jsonl key) of metadata.csv / metadata.jsonl; "
                                "DiffSynth-Studio's CSV: prompt")
    video_column: str = _flag("file_name", help="video path column (jsonl key) of metadata.csv / metadata.jsonl, "
                              "relative to data_root; DiffSynth-Studio's CSV: video")
    video_reader: Literal["auto", "decord", "pyav"] = _flag(
        "auto", help="video decoder: auto (decord when installed, else PyAV: decord has no aarch64 / macOS-arm "
                     "wheel), decord or pyav; the same frames for 8-bit videos")
    max_sequence_length: int | None = _flag(
        None, help="text tokens per prompt (none: the model's own: Wan 512, CogVideoX 226, a model folder's "
                   "sampling_defaults.json, e.g. the toy's 16)")
    latent_cache_dir: str = _flag("cache", help="folder of the cached latents and prompt embeddings")
    caption_dropout: float = _flag(0.1, help="probability of training on the empty prompt")
    motion_loss_weight: float = _flag(
        1.0, help="weight of the moving latent pixels in the loss: each element's loss is multiplied by "
                  "1 + (w - 1) * mask, mask being Motive's optical-flow motion mask of the clip on the latent grid "
                  "(cached next to the latents), and each clip's loss divided by its weight map's mean (1: off)")
    # optimisation
    learning_rate: float = _flag(1e-4, help="AdamW learning rate")
    lr_scheduler: str = _flag("constant_with_warmup", help="a diffusers.optimization scheduler name")
    lr_warmup_steps: int = _flag(0, help="scheduler warm-up steps")
    adam_weight_decay: float = _flag(1e-4, help="AdamW weight decay")
    max_grad_norm: float = _flag(1.0, help="gradient clipping norm")
    train_steps: int = _flag(200, help="optimiser steps")
    train_batch_size: int = _flag(4, help="clips per step and process")
    gradient_accumulation_steps: int = _flag(1, help="micro-batches per optimiser step")
    gradient_checkpointing: bool = _flag(False, help="recompute block activations in the backward pass")
    mixed_precision: Literal["no", "fp16", "bf16"] = _flag(
        "no", help="autocast dtype of the training step, and the dtype the frozen weights are loaded in (no: "
                   "fp32); the modules diffusers keeps in fp32 stay fp32, trainable LoRA weights are fp32")
    transformer_dtype: Literal["bf16", "fp16", "fp32"] | None = _flag(
        None, help="dtype of the transformer's weights (none: follow mixed_precision for a LoRA; a full "
                   "fine-tune keeps fp32 master weights)")
    vae_dtype: Literal["bf16", "fp16", "fp32"] | None = _flag(
        None, help="dtype of the VAE, which encodes the latent cache and decodes validation videos (none: follow "
                   "mixed_precision)")
    text_encoder_dtype: Literal["bf16", "fp16", "fp32"] | None = _flag(
        None, help="dtype of the text encoder; the cached prompt embeddings keep its output dtype (none: follow "
                   "mixed_precision)")
    vae_tiling: bool = _flag(False, help="encode and decode with the VAE in spatial tiles (bounds its memory at "
                                         "large frames; changes the latents slightly, so the cache key records it)")
    vae_slicing: bool = _flag(False, help="run the VAE one clip of a batch at a time (bounds its memory)")
    text_encoder_after_cache: Literal["offload", "free", "keep"] = _flag(
        "offload", help="what happens to the text encoder once the latent cache (and a curation's query cache) is "
                        "complete: offload: to the CPU (frees accelerator memory; nothing moves on a CPU run), "
                        "free: dropped (frees host memory too), keep: stays on the accelerator. Validation prompts "
                        "are encoded before it goes")
    timestep_sampling: Literal["logit_normal", "uniform"] = _flag("logit_normal", help="training noise levels")
    timestep_shift: float = _flag(3.0, help="flow-matching shift of the sampled noise levels")
    seed: int = _flag(0, help="seed of every random draw of the run")
    dataloader_num_workers: int = _flag(0, help="worker processes that load cached clips (0: in the main process)")
    # checkpoints
    checkpointing_steps: int = _flag(100, help="save a resumable checkpoint every n steps (0: never)")
    checkpointing_limit: int | None = _flag(3, help="keep at most this many checkpoints (none: all)")
    resume_from_checkpoint: str | None = _flag(None, help="'latest' or a checkpoint folder")
    # validation and logging
    validation_steps: int = _flag(0, help="sample the validation prompts every n steps (0: only at the end)")
    validation_prompts: list[str] = _flag(
        help="validation prompts: a YAML/JSON list ('[\"a dog, running\", \"a ball\"]') or the flag repeated",
        factory=list)
    validation_seeds: list[int] = _flag(help="seeds of the validation samples, e.g. 0,1", factory=lambda: [0])
    validation_inference_steps: int | None = _flag(
        None, help="sampling steps of the validation samples (none: the model's; Wan and CogVideoX 50, the toy 25)")
    validation_guidance_scale: float | None = _flag(
        None, help="classifier-free guidance scale of the validation samples (none: the model's; Wan 5, CogVideoX 6)")
    validation_num_frames: int | None = _flag(None, help="frames of the validation samples (none: num_frames)")
    validation_height: int | None = _flag(None, help="height of the validation samples (none: height)")
    validation_width: int | None = _flag(None, help="width of the validation samples (none: width)")
    report_to: Literal["wandb", "tensorboard", "none"] = _flag("tensorboard", help="experiment tracker")
    tracker_name: str = _flag("motionguide", help="project name in the tracker")
    logging_steps: int = _flag(10, help="log the loss every n steps")
    # method slots (names checked against motionguide.registry without importing the methods)
    curation: str = _flag("none", help="which clips to train on (a registered curation or none); its settings go "
                          "in method_options.<name>")
    monitor: list[str] = _flag(help="registered monitors (comma separated)", factory=list)
    guidance: str = _flag("none", help="guidance of the validation samples (a registered guidance or none)")
    method_options: dict[str, Any] = _flag(
        help="per-method settings, a YAML/JSON mapping merged per method over the config file's, e.g. "
             "'{motive: {queries: DIR, fraction: 0.1}}'", factory=dict)
    # distributed
    process_group_timeout_s: float = _flag(
        1800, help="seconds a collective waits for the slowest rank before the run fails (accelerate's default "
        "600 s is shorter than a first latent cache of a large dataset)")

    # old names, accepted with a FutureWarning and moved to their new places (see DEPRECATED_KEYS)
    cache_dir: InitVar[str | None] = None
    toy_data: InitVar[dict[str, Any] | None] = None
    curation_fraction: InitVar[float | None] = None
    curation_mode: InitVar[str | None] = None

    def __post_init__(self, cache_dir: Any, toy_data: Any, curation_fraction: Any, curation_mode: Any) -> None:
        old = {k: v for k, v in (("cache_dir", cache_dir), ("toy_data", toy_data),
                                 ("curation_fraction", curation_fraction), ("curation_mode", curation_mode))
               if v is not None}
        if old:
            values = migrate_deprecated({**_field_values(self), **old}, "TrainConfig")
            for name, value in values.items():
                setattr(self, name, value)

    # ------------------------------------------------------------------ checks
    def validate(self, where: str = "config") -> "TrainConfig":
        """Self, after checking choices, ranges and method names; ConfigError naming the first bad field.

        Nothing here imports a method or loads a model, so a bad config stops before anything heavy runs."""
        from ..registry import CURATIONS, DATA_RECIPES, GUIDANCES, MONITORS

        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{where}: {key}={getattr(self, key)!r} {why}")

        for key in ("training_type", "mixed_precision", "report_to", "timestep_sampling", "resize_mode",
                    "video_reader", "text_encoder_after_cache", "experts"):
            choices = typing.get_args(typing.get_type_hints(TrainConfig)[key])
            if getattr(self, key) not in choices:
                raise bad(key, "must be " + " or ".join(", ".join(repr(c) for c in choices).rsplit(", ", 1)))
        for key in ("rank", "train_steps", "train_batch_size", "gradient_accumulation_steps", "num_frames"):
            if getattr(self, key) < 1:
                raise bad(key, "must be >= 1")
        if (self.num_frames - 1) % 4:
            raise bad("num_frames", "must be 4k+1 (e.g. 17, 49, 81)")
        for key in ("height", "width"):
            if getattr(self, key) < 1:
                raise bad(key, "must be >= 1 (pixels)")
        for key, low in (("checkpointing_steps", 0), ("validation_steps", 0), ("lr_warmup_steps", 0),
                         ("logging_steps", 1)):
            if getattr(self, key) < low:
                raise bad(key, f"must be >= {low}" + (" (0: never)" if key == "checkpointing_steps" else ""))
        if self.checkpointing_limit is not None and self.checkpointing_limit < 1:
            raise bad("checkpointing_limit", "must be >= 1 (or none to keep every checkpoint)")
        for key in ("validation_height", "validation_width", "validation_inference_steps"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise bad(key, "must be >= 1 (or none for the default)")
        if self.validation_num_frames is not None and (self.validation_num_frames < 1
                                                       or (self.validation_num_frames - 1) % 4):
            raise bad("validation_num_frames", "must be 4k+1 (e.g. 17, 49, 81) or none (num_frames)")
        if self.validation_guidance_scale is not None and not math.isfinite(self.validation_guidance_scale):
            raise bad("validation_guidance_scale", "must be a finite number (or none for the model's)")
        for key in ("max_grad_norm", "lora_alpha", "timestep_shift"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise bad(key, "must be a finite number > 0")
        if not (isinstance(self.motion_loss_weight, (int, float)) and not isinstance(self.motion_loss_weight, bool)
                and math.isfinite(self.motion_loss_weight)
                and self.motion_loss_weight >= 1):
            raise bad("motion_loss_weight", "must be a finite number >= 1 (1: off, e.g. 5 weights moving pixels 5x)")
        if not math.isfinite(self.adam_weight_decay) or self.adam_weight_decay < 0:
            raise bad("adam_weight_decay", "must be a finite number >= 0")
        if self.max_sequence_length is not None and self.max_sequence_length < 1:
            raise bad("max_sequence_length", "must be >= 1 (or none for the model's own)")
        for key in ("transformer_dtype", "vae_dtype", "text_encoder_dtype"):
            if getattr(self, key) not in (None, "bf16", "fp16", "fp32"):
                raise bad(key, "must be 'bf16', 'fp16', 'fp32' or none (follow mixed_precision)")
        if self.training_type == "full" and self.transformer_dtype not in (None, "fp32"):
            raise bad("transformer_dtype", "cannot be set for a full fine-tune: its weights are the optimiser's "
                                           "fp32 master weights (mixed_precision sets the compute dtype)")
        if self.frame_stride < 1:
            raise bad("frame_stride", "must be >= 1 (1 = consecutive frames)")
        if self.target_fps is not None and not (math.isfinite(self.target_fps) and self.target_fps > 0):
            raise bad("target_fps", "must be > 0 (or none to keep each video's own rate)")
        for key in ("caption_column", "video_column"):
            if not str(getattr(self, key)).strip():
                raise bad(key, "must name a column")
        for key in ("pretrained_model_name_or_path", "output_dir", "data_root", "latent_cache_dir"):
            if not str(getattr(self, key)).strip():  # "" is the current folder to pathlib: never what was meant
                raise bad(key, "must name a folder")
        if not (0 <= self.seed <= 2**32 - 1):  # accelerate's set_seed seeds numpy, which takes no other
            raise bad("seed", "must be in 0..4294967295 (2**32 - 1)")
        for seed in self.validation_seeds:
            if not isinstance(seed, int) or isinstance(seed, bool) or not -(2**63) <= seed <= 2**64 - 1:
                raise bad("validation_seeds", "must be integers a torch.Generator takes (-2**63..2**64-1)")
        if not self.target_modules:
            raise bad("target_modules", "names no module; list the modules that get a LoRA, e.g. [to_q, to_k, "
                                        "to_v, to_out.0]")
        if not (math.isfinite(self.process_group_timeout_s) and self.process_group_timeout_s > 0):
            raise bad("process_group_timeout_s", "must be a finite number of seconds > 0")
        from ..data.buckets import parse_buckets

        try:
            for bucket in parse_buckets(self.buckets) or ():
                if (bucket.num_frames - 1) % 4:
                    raise ConfigError(f"bucket {bucket.as_tuple()} has {bucket.num_frames} frames, not 4k+1")
        except ConfigError as exc:
            raise ConfigError(f"{where}: buckets: {exc}") from None
        if not 0.0 <= self.caption_dropout < 1.0:
            raise bad("caption_dropout", "must be in [0, 1)")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise bad("learning_rate", "must be a finite number > 0")
        if self.dataloader_num_workers < 0:
            raise bad("dataloader_num_workers", "must be >= 0")
        names = lr_scheduler_names()
        if self.lr_scheduler not in names:
            from ..errors import closest_names

            close = closest_names(self.lr_scheduler, names)
            raise bad("lr_scheduler", "is not a diffusers scheduler." + (f" Did you mean {close[0]!r}?" if close
                                                                          else "") + f" Valid: {', '.join(names)}")
        try:
            CURATIONS.check(self.curation)
            for name in self.monitor:
                MONITORS.check(name)
            GUIDANCES.check(self.guidance)
            if self.data_recipe is not None:
                if not isinstance(self.data_recipe, dict) or not isinstance(self.data_recipe.get("name"), str):
                    raise ConfigError(f"data_recipe={self.data_recipe!r} must be a mapping with a name, e.g. "
                                      "{name: toy, num_clips: 200}")
                DATA_RECIPES.check(self.data_recipe["name"])
                if not Path(self.data_root).exists():  # it will run (after the model load): its options now
                    from ..registry import check_recipe_options

                    check_recipe_options(self.data_recipe, "data_recipe")
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not isinstance(self.method_options, dict):
            raise bad("method_options", "must be a mapping of method name to its settings, e.g. "
                                        "'{motive: {queries: DIR}}'")
        for name, options in self.method_options.items():
            if options is not None and not isinstance(options, dict):
                raise ConfigError(f"{where}: method_options.{name}={options!r} must be a mapping of settings")
        return self

    # ------------------------------------------------------------------ compatibility readers
    # Code written before the renames reads these; they answer from the new places (DeprecationWarning).
    @property
    def _cache_dir(self) -> str:
        _reading_old_name("cache_dir", "latent_cache_dir")
        return self.latent_cache_dir

    @property
    def _toy_data(self) -> dict[str, Any] | None:
        _reading_old_name("toy_data", "data_recipe")
        recipe = self.data_recipe
        if not recipe or recipe.get("name") != "toy":
            return None
        return {k: v for k, v in recipe.items() if k != "name"}

    @property
    def _curation_fraction(self) -> float:
        _reading_old_name("curation_fraction", f"method_options[{self.curation!r}]['fraction']")
        return float((self.method_options.get(self.curation) or {}).get("fraction", 0.1))

    @property
    def _curation_mode(self) -> str | None:
        _reading_old_name("curation_mode", f"method_options[{self.curation!r}]['mode']")
        return (self.method_options.get(self.curation) or {}).get("mode")

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (new names only)."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all config fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "TrainConfig":
        """A validated config from a mapping; old keys mapped (FutureWarning), unknown keys a ConfigError, values
        type-checked per field."""
        names = set(cls.field_names())
        for key in data:
            if key not in names and key not in DEPRECATED_KEYS:
                raise ConfigError(unknown_key_message(key, names, where))
        data = migrate_deprecated(data, where)
        hints = typing.get_type_hints(cls)
        values = {k: _coerce(k, v, hints[k], where) for k, v in data.items()}
        return cls(**values).validate(where)

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> "TrainConfig":
        """YAML file, then `--key value` overrides (later wins); ConfigError on any mistake, before any model load."""
        data = read_yaml_config(path)
        merged = parse_overrides(overrides, data)
        given = _keys_given(overrides)
        try:
            config = cls.from_dict(merged, where=str(path))
            from .preflight import check_frame_sizes

            check_frame_sizes(config, where=str(path))  # reads the model's config files, loads no weights
            from .preflight import check_experts

            check_experts(config, where=str(path))
        except ConfigError as exc:  # a value from the command line is blamed on it, not on the file
            text, prefix = str(exc), f"{path}: "
            key = re.match(r"-*(\w+)", text[len(prefix):]) if text.startswith(prefix) else None
            if key is not None and key.group(1) in given:
                raise ConfigError(f"command line: {text[len(prefix):]}") from None
            raise
        _refuse_new_data_root(config, data, given)
        return config


def _keys_given(overrides: Sequence[str]) -> set[str]:
    """The field names a command line sets (`--key value`, `--key=value`, `--key+ value`, kebab or snake)."""
    return {token[2:].partition("=")[0].rstrip("+").replace("-", "_") for token in overrides
            if token.startswith("--")}


def _refuse_new_data_root(config: "TrainConfig", file_values: dict[str, Any], given: set[str]) -> None:
    """A `--data_root` on the command line that does not exist is a typo until said otherwise: the config
    file's `data_recipe` creates only the data_root the file names (or any, with `create_data` /
    a `--data_recipe` given alongside)."""
    if ("data_root" not in given or config.data_recipe is None or config.create_data or "data_recipe" in given
            or Path(config.data_root).exists() or config.data_root == file_values.get("data_root")):
        return
    raise ConfigError(
        f"command line: --data_root {config.data_root} does not exist. The config's data_recipe creates only the "
        f"data_root the config file names ({file_values.get('data_root', 'none')}); fix the path, or add "
        "--create_data to create a new dataset there")


# Attach the compatibility readers under the old names (the dataclass keeps those names for its init-only
# arguments, so the properties are set after the class is built).
for _old in DEPRECATED_KEYS:
    setattr(TrainConfig, _old, getattr(TrainConfig, f"_{_old}"))


def _reading_old_name(old: str, new: str) -> None:
    warnings.warn(f"TrainConfig.{old} is deprecated; read {new}", DeprecationWarning, stacklevel=3)


def _field_values(config: TrainConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _deprecated(where: str, old: str, new: str) -> None:
    warnings.warn(f"{where}: '{old}' is deprecated; use {new}", FutureWarning, stacklevel=4)


def migrate_deprecated(data: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """`data` with every old key (DEPRECATED_KEYS) moved to its new place, a FutureWarning per old key.

    An old key that disagrees with its new place set in the same config is a ConfigError (keep one of them)."""
    data = dict(data)
    if "cache_dir" in data:
        value = data.pop("cache_dir")
        _deprecated(where, "cache_dir", "latent_cache_dir (cache_dir is the hub download cache in diffusers)")
        if value is not None:
            _set_once(data, "latent_cache_dir", value, "cache_dir", where,
                      default=TrainConfig.__dataclass_fields__["latent_cache_dir"].default)
    if "toy_data" in data:
        value = data.pop("toy_data")
        _deprecated(where, "toy_data", "data_recipe: {name: toy, ...}")
        if value is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: toy_data={value!r} must be a mapping such as {{num_clips: 200, seed: 0}}")
            _set_once(data, "data_recipe", {"name": "toy", **value}, "toy_data", where, default=None)
    for old, key in (("curation_fraction", "fraction"), ("curation_mode", "mode")):
        if old not in data:
            continue
        value = data.pop(old)
        curation = data.get("curation") or "none"
        _deprecated(where, old, f"method_options.{curation if curation != 'none' else '<curation>'}.{key}")
        if value is None or curation == "none":
            continue  # no curation reads it
        options = copy.deepcopy(data.get("method_options") or {})
        if not isinstance(options, dict):
            raise ConfigError(f"{where}: method_options={options!r} must be a mapping")
        slot = options.setdefault(curation, {})
        if not isinstance(slot, dict):
            raise ConfigError(f"{where}: method_options.{curation}={slot!r} must be a mapping")
        if key in slot and slot[key] != value:
            raise ConfigError(f"{where}: {old}={value!r} disagrees with method_options.{curation}.{key}="
                              f"{slot[key]!r}; keep method_options.{curation}.{key} only")
        slot[key] = value
        data["method_options"] = options
    return data


def _set_once(data: dict[str, Any], key: str, value: Any, old: str, where: str, default: Any) -> None:
    if data.get(key, default) not in (default, value):
        raise ConfigError(f"{where}: {old}={value!r} disagrees with {key}={data[key]!r}; keep {key} only")
    data[key] = value


def lr_scheduler_names() -> list[str]:
    """The scheduler names diffusers' `get_scheduler` accepts (read from diffusers, never hard-coded here)."""
    from diffusers.optimization import SchedulerType

    return [s.value for s in SchedulerType]


# ---------------------------------------------------------------------------------------------- YAML file
class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain PyYAML keeps the last silently, so
    one of two `learning_rate:` lines would be ignored without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {first} and {key_node.start_mark.line + 1}); keep "
                    "one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """The config file as a mapping; ConfigError naming the file (and the line of a YAML syntax error) or the
    first unknown key with the closest valid ones."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a config file; give a YAML file such as configs/toy.yaml")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: byte {error.start + 1} is not valid UTF-8; re-save the file as "
                          "UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{at}: YAML syntax error: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}: the file sets nothing (empty or only comments); a training config is a YAML "
                          "mapping of flags, e.g. a copy of configs/toy.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a training config is a YAML mapping of flags")
    names = set(TrainConfig.field_names())
    for key in data:
        if key not in names and key not in DEPRECATED_KEYS:
            raise ConfigError(unknown_key_message(key, names, str(path)))
    hints = typing.get_type_hints(TrainConfig)
    return {k: _coerce(k, v, hints[k], str(path)) for k, v in data.items()}


# ---------------------------------------------------------------------------------------------- flags
def _spellings(name: str) -> list[str]:
    return [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])


def build_parser(base: dict[str, Any] | None = None, prog: str = "train/finetune.py", with_config: bool = False):
    """The jsonargparse parser of every TrainConfig field (snake_case and kebab spellings), defaults from `base`
    (a config file's values) over the dataclass defaults; `with_config` adds `--config FILE` for the script."""
    from jsonargparse import ArgumentParser

    base = base or {}
    parser = ArgumentParser(prog=prog, exit_on_error=False, default_env=False,
                            description="Fine-tune a video DiT (LoRA or full) with motion-aware data. Flags "
                                        "override the --config file; lists and mappings take YAML/JSON.")
    if with_config:
        parser.add_argument("--config", type=str, required=True, help="YAML training config (e.g. configs/toy.yaml)")
    hints = typing.get_type_hints(TrainConfig)
    choices = _named_choices()
    for f in dataclasses.fields(TrainConfig):
        if f.name in base:
            default = base[f.name]
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        extra = {"nargs": "?", "const": True} if hints[f.name] is bool else {}
        text = f.metadata["help"] + (f"; choices: {', '.join(choices[f.name])}" if f.name in choices else "")
        parser.add_argument(*_spellings(f.name), dest=f.name, type=hints[f.name], default=default, help=text,
                            **extra)
    for old, new in DEPRECATED_KEYS.items():
        parser.add_argument(*_spellings(old), dest=old, type=_init_var_type(hints[old]), default=base.get(old),
                            help=f"deprecated: use {new}")
    return parser


def _named_choices() -> dict[str, list[str]]:
    """The names the string-valued method and scheduler flags accept, for --help (checked in `validate`; a
    registry lists its names without importing any method)."""
    from ..registry import CURATIONS, DATA_RECIPES, GUIDANCES, MONITORS

    return {"curation": CURATIONS.names(), "monitor": MONITORS.names(), "guidance": GUIDANCES.names(),
            "lr_scheduler": lr_scheduler_names(), "data_recipe": [f"name: {n}" for n in DATA_RECIPES.names()]}


def _init_var_type(hint: Any) -> Any:
    return hint.type if isinstance(hint, InitVar) else hint


_LIST_SPLIT_BY_COMMA = ("validation_seeds", "monitor", "target_modules", "buckets")
_REGEX_CHARS = re.compile(r"[\^$*+?()|\\\[\]]")


def parse_overrides(args: Sequence[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`--key value`, `--key=value` and a bare `--flag` (true) over `base` (a config file's values) -> the merged
    mapping, parsed by jsonargparse against the field types. ConfigError (one line) on an unknown flag, with the
    closest names, or on a value of the wrong type."""
    base = dict(base or {})
    hints = typing.get_type_hints(TrainConfig)
    names = set(TrainConfig.field_names())
    argv: list[str] = []
    given: dict[str, str] = {}
    args = list(args)
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise ConfigError(f"command line: expected --key value, got {token!r}")
        key, eq, value = token[2:].partition("=")
        append = key.endswith("+")
        key = key.rstrip("+").replace("-", "_")
        if key not in names and key not in DEPRECATED_KEYS:
            raise ConfigError(unknown_key_message(key, names, "command line"))
        bare = not eq and not (i + 1 < len(args) and not args[i + 1].startswith("--"))
        if not eq and not bare:
            value = args[i + 1]
            i += 1
        i += 1
        if bare:
            argv.append(f"--{key}")
            given[key] = ""
            continue
        value = _dialect(key, _init_var_type(hints[key]), value)
        if key == "validation_prompts" and not value.lstrip().startswith("[") and key in given:
            append = True  # the flag repeated: one prompt each
        elif key == "validation_prompts" and not value.lstrip().startswith("["):
            value = json.dumps([value] if value else [])
        argv += [f"--{key}{'+' if append else ''}", value]
        given[key] = value
    parser = build_parser(base)
    try:
        namespace = parser.parse_args(argv)
    except Exception as exc:  # jsonargparse reports bad values as argparse.ArgumentError, several lines long
        raise ConfigError(_one_line_error(exc, given, hints)) from None
    merged = {k: v for k, v in vars(namespace).items() if k in names or (k in DEPRECATED_KEYS and v is not None)}
    merged.pop("__path__", None)
    if "method_options" in given and isinstance(base.get("method_options"), dict):
        merged["method_options"] = _merge_per_method(base["method_options"], merged["method_options"])
    return merged


def _dialect(key: str, hint: Any, raw: str) -> str:
    """A flag value in the project's dialect rewritten for jsonargparse (see the module docstring)."""
    args = typing.get_args(hint)
    if type(None) in args and raw.strip().lower() in ("none", "null"):
        return "null"
    if hint is bool:
        parsed = yaml.safe_load(raw) if raw.strip() else raw
        return ("true" if parsed else "false") if isinstance(parsed, bool) else raw
    if key in _LIST_SPLIT_BY_COMMA and not raw.lstrip().startswith("["):
        if key == "target_modules" and _REGEX_CHARS.search(raw):
            return raw  # one regex over module names, e.g. '.*attn1\.to_q'
        parts = [part.strip() for part in raw.split(",") if part.strip()]
        return json.dumps([int(p) if re.fullmatch(r"-?\d+", p) and key == "validation_seeds" else p for p in parts])
    return raw


def _merge_per_method(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The config file's method options with the command line's merged over them one method at a time."""
    merged = copy.deepcopy(base)
    for name, options in given.items():
        if isinstance(options, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **options}
        else:
            merged[name] = options
    return merged


def _one_line_error(exc: Exception, given: dict[str, str], hints: dict[str, Any]) -> str:
    text = " ".join(str(exc).split())
    match = re.search(r'Parser key "([^"]+)"', text)
    if match and match[1] in hints:
        key = match[1]
        return f"command line: {key} must be {_kind(_init_var_type(hints[key]))}, got {given.get(key, '')!r}"
    return f"command line: {text}"


def _kind(hint: Any) -> str:
    """'an integer', 'a list', ... for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return (_kind(inner[0]) if len(inner) == 1 else " or ".join(_kind(a) for a in inner)) + " or none"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind(a) for a in args)
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, {list: "a list (YAML/JSON, e.g. [a, b])", dict: "a mapping (YAML/JSON, e.g. '{motive: {queries: DIR}}')"}
        .get(origin, str(hint)))


def _strict_int(value: Any) -> int:
    """An int, or a string of one ("7" from "0,7"); ValueError for anything else (a bool, a float, "x")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ValueError(value)


def _coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    """Light type checks with friendly messages (YAML already typed most values)."""
    hint = _init_var_type(hint)
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
    if hint is int or (origin in (typing.Union, types.UnionType) and int in args and float not in args):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        return value
    if hint is float or (origin in (typing.Union, types.UnionType) and float in args):
        if isinstance(value, str):  # YAML 1.1 reads "5e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str or origin is Literal or (origin in (typing.Union, types.UnionType) and str in args
                                            and not any(typing.get_origin(a) is list for a in args)):
        if isinstance(value, bool):  # YAML reads a bare `no` / `yes` as a boolean
            return "yes" if value else "no"
        if isinstance(value, (list, dict)):
            raise ConfigError(f"{where}: {key} must be a single value, got {value!r}")
        return str(value)
    if origin in (typing.Union, types.UnionType) and any(typing.get_origin(a) is list for a in args):
        if not isinstance(value, (str, list)):  # target_modules, buckets: a list, or one string read later
            raise ConfigError(f"{where}: {key} must be a list or a string, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str) and key == "validation_prompts":
            return [value]  # one prompt, commas and all (as the command line reads it)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        if args == (int,):
            try:
                return [_strict_int(v) for v in value]
            except ValueError:
                raise ConfigError(f"{where}: {key} must be a list of integers, got {value!r}") from None
        return value
    if origin is dict or (origin in (typing.Union, types.UnionType)
                          and any(typing.get_origin(a) is dict for a in args)):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        return value
    return value


