"""What a model's frame height and width must divide by, read from its config files (never its weights).

Why here: training preflight and the sampling commands both check frame sizes before a model loads; the facts
are the model family's (VAE factor x patch size, and what its diffusers pipeline checks), so they live with the
families, below both users.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["config_json", "pixel_multiple_of", "sampling_pixel_multiple"]


def config_json(model: str, name: str) -> dict[str, Any] | None:
    """`name` of a local model folder, or of a hub id already in the local cache (never a download)."""
    if Path(model).is_dir():
        path: Any = Path(model) / name
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(model, name)
        except Exception:  # not a repo id, or no hub client: nothing known offline
            return None
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pixel_multiple_of(model: str | os.PathLike) -> int | None:
    """What the model's frame height and width must divide by (VAE spatial factor x patch size), read from its
    config files through the family's adapter; None when that cannot be told offline."""
    from .registry import adapter_for_class_name, transformer_class_name

    model = str(model)
    name = transformer_class_name(model)
    adapter = adapter_for_class_name(name) if name else None
    multiple = getattr(adapter, "pixel_multiple", None)
    transformer = config_json(model, "transformer/config.json") or config_json(model, "config.json")
    if multiple is None or transformer is None:
        return None
    try:
        return int(multiple(transformer, config_json(model, "vae/config.json")))
    except (KeyError, TypeError, ValueError, IndexError):
        return None


#: frame-size multiples that diffusers' pipelines check in `check_inputs`, by pipeline class name prefix
_PIPELINE_PIXEL_CHECKS = {"Wan": 16, "HunyuanVideo": 16, "CogVideoX": 8}


def sampling_pixel_multiple(model: object) -> int | None:
    """What a sampled frame's height and width must divide by: the model's token size (VAE factor x patch,
    from its config files) and the multiple its diffusers pipeline checks (16 for Wan even when a small VAE
    would allow 8); None when the model's config files cannot be read offline."""
    from .registry import pipeline_class_name

    multiple = pixel_multiple_of(str(model))
    name = pipeline_class_name(str(model)) or ""
    checked = next((m for prefix, m in _PIPELINE_PIXEL_CHECKS.items() if name.startswith(prefix)), None)
    if multiple is None:
        return checked
    return multiple if checked is None else math.lcm(multiple, checked)
