"""Checks of numeric command-line values, made before a model loads.

Why: a pipeline given 0 steps, 0 frames or a NaN scale does not fail; it writes noise, one frame or a black
video with exit code 0. These turn such values into one `error:` line naming the flag.
"""

from __future__ import annotations

import math
import os

from .errors import ConfigError

__all__ = ["check_positive", "check_finite", "check_range", "check_seed", "block_count_of", "check_block_indices",
           "check_lora_file", "check_frame_count", "check_frame_size", "check_profile", "check_model_folder"]


def check_positive(flag: str, value: int | float | None) -> None:
    """A count such as steps, frames or pixels must be at least 1 (None: not given, nothing to check)."""
    if value is not None and value < 1:
        raise ConfigError(f"{flag} {value}: must be at least 1")


def check_finite(flag: str, value: float | None) -> None:
    """A scale must be a finite number (NaN and inf pass argparse's float())."""
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"{flag} {value}: must be a finite number")


def check_range(flag: str, value: float | None, low: float | None = None, high: float | None = None,
                low_open: bool = False, what: str = "") -> None:
    """A finite number within [low, high] (`low_open`: > low); None: not given. Why: NaN passes every `<`
    comparison, so a plain `if value < low` lets it through to a model that then computes garbage."""
    if value is None:
        return
    bad = not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) or (
        high is not None and value > high)
    if bad:
        span = ("> " if low_open else ">= ") + f"{low:g}" if high is None else (
            f"in {'(' if low_open else '['}{low:g}, {high:g}]" if low is not None else f"<= {high:g}")
        raise ConfigError(f"{flag} {value}: must be a finite number {span}{what}")


#: the seeds torch.Generator.manual_seed accepts; numpy (and so accelerate's set_seed) takes 0..2**32-1
TORCH_SEEDS = (-(2**63), 2**64 - 1)
NUMPY_SEEDS = (0, 2**32 - 1)


def check_seed(flag: str, value: int | None, seeds: tuple[int, int] = TORCH_SEEDS) -> None:
    """A seed the random generators will take: out of range they fail after the model load with a message that
    names no flag ("Overflow when unpacking long", "Seed must be between 0 and 2**32 - 1")."""
    if value is not None and not seeds[0] <= value <= seeds[1]:
        raise ConfigError(f"{flag} {value}: a seed must be an integer in {seeds[0]}..{seeds[1]}")


def check_frame_count(flag: str, value: int | None, model: object) -> None:
    """`value` frames fit the model's causal VAE (1 + k x its temporal factor, read from the config files);
    diffusers would otherwise round the count silently."""
    if value is None:
        return
    from .backbones import adapter_for_class_name, transformer_class_name

    name = transformer_class_name(str(model))
    adapter = adapter_for_class_name(name) if name else None
    factor = adapter.default_vae_scale_temporal if adapter is not None else None
    if factor and (value - 1) % factor:
        below = max(1, (value - 1) // factor * factor + 1)
        raise ConfigError(f"{flag} {value}: this model's VAE takes {factor}k+1 frames; use {below} or "
                          f"{below + factor}")


def check_frame_size(flag: str, value: int | None, model: object, multiple: int | None = None) -> None:
    """A frame height or width the model can sample: a multiple of `sampling_pixel_multiple` (diffusers
    refuses others only after the model has loaded)."""
    if value is None:
        return
    if not multiple:
        from .backbones.frame_sizes import sampling_pixel_multiple

        multiple = sampling_pixel_multiple(model)
    if multiple and value % multiple:
        lower = max(multiple, value // multiple * multiple)
        raise ConfigError(f"{flag} {value}: not a multiple of {multiple} (the pixels per token of {model} and its "
                          f"pipeline); use {lower} or {lower + multiple}")


def check_profile(flag: str, profile: str | None) -> None:
    """A layer profile name or YAML that loads (a missing or malformed one fails now, not after the model)."""
    if profile:
        from .backbones import load_profile

        try:
            load_profile(profile)
        except ConfigError as exc:
            raise ConfigError(f"{flag} {profile}: {exc}") from None


def check_model_folder(model: object, flag: str = "--model") -> None:
    """A local model path is a pipeline folder (has model_index.json); a hub id is left to the hub client.
    Why: diffusers reports a typo'd or empty folder only after importing everything, as an OSError traceback."""
    from .loading import _check_model_reference

    try:
        _check_model_reference(str(model))
    except ConfigError as exc:
        raise ConfigError(f"{flag} {str(exc).removeprefix('model ')}") from None


def block_count_of(model: object) -> int | None:
    """How many transformer blocks a pipeline folder or cached hub id has, read from its transformer config
    (`num_layers`, plus HunyuanVideo's `num_single_layers`: one index list, as the adapters number them) without
    loading anything; None for a family no adapter knows or a model not readable offline."""
    from .backbones.registry import _config_file, _read_json, adapter_for_class_name, transformer_class_name

    model = str(model)
    name = transformer_class_name(model)
    if not name or adapter_for_class_name(name) is None:
        return None
    for file in ("transformer/config.json", "config.json"):
        config = _read_json(_config_file(model, file))
        if config is not None and isinstance(config.get("num_layers"), int):
            single = config.get("num_single_layers", 0)
            return config["num_layers"] + (single if isinstance(single, int) else 0)
    return None


def check_block_indices(flag: str, blocks: "int | list[int] | tuple[int, ...] | None", count: int | None) -> None:
    """Every index in `blocks` names one of the model's `count` blocks (None: not given / count unknown).

    Why: a block index past the end selects nothing; `curate --blocks 2,99` would run on block 2 alone."""
    if blocks is None or count is None:
        return
    given = [blocks] if isinstance(blocks, int) else list(blocks)
    bad = [b for b in given if not 0 <= b < count]
    if bad:
        shown = ",".join(str(b) for b in given)
        raise ConfigError(f"{flag} {shown}: block {', '.join(str(b) for b in bad)} does not exist; the model has "
                          f"{count} blocks, numbered 0-{count - 1}")


def check_lora_file(lora: str | os.PathLike | None, flag: str = "--lora ") -> None:
    """A LoRA file (or the one `.safetensors` of a LoRA folder) has a readable safetensors header: a garbage or
    truncated file is one line naming it, before the model loads (not a traceback from the loader)."""
    if lora is None:
        return
    from pathlib import Path

    from safetensors import safe_open

    path = Path(lora)
    # a two-expert model's LoRA (Wan2.2-T2V-A14B) keeps its low-noise part in transformer_2/ (loading.py)
    files = [path] if path.is_file() else sorted([*path.glob("*.safetensors"),
                                                  *path.glob("transformer_2/*.safetensors")])
    if not files:
        raise ConfigError(f"{flag}{lora}: no .safetensors file in this folder; pass a LoRA saved by the "
                          "fine-tuning loop (<output_dir>/pytorch_lora_weights.safetensors or its folder)")
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # safetensors raises its own SafetensorError (an Exception) for a bad header
            raise ConfigError(f"{flag}{lora}: {file} is not a readable safetensors file ({str(exc)[:120]}); "
                              "pass a LoRA saved by the fine-tuning loop") from exc
