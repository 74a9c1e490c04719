"""The model families motionguide knows, and looking one up from a diffusers transformer (or pipeline).

`_ADAPTERS` is the only place that names the built-in families; each is a folder next to this file that owns
everything family-specific (adapter, instrumented attention processor). Another family is one
:func:`register_backbone` call, from any package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import UnsupportedModelError
from .base import SamplingDefaults, VideoBackbone
from .cogvideox import CogVideoXBackbone
from .hunyuanvideo import HunyuanVideoBackbone
from .wan import WanBackbone

#: the families, most recently registered first (the first whose transformer class names match is used)
_ADAPTERS: list[type[VideoBackbone]] = [WanBackbone, CogVideoXBackbone, HunyuanVideoBackbone]


def register_backbone(adapter: type[VideoBackbone]) -> type[VideoBackbone]:
    """Add an adapter for another model family (usable as a class decorator)."""
    if not issubclass(adapter, VideoBackbone):
        raise TypeError("a backbone adapter must subclass motionguide.backbones.VideoBackbone")
    _ADAPTERS.insert(0, adapter)
    return adapter


def supported_families() -> dict[str, tuple[str, ...]]:
    """Each registered family with the transformer class names its adapter handles."""
    return {a.family: a.transformer_class_names for a in _ADAPTERS}


def adapter_for_transformer(transformer: torch.nn.Module) -> type[VideoBackbone]:
    """The adapter class whose transformer class names match the transformer's class (or a base class)."""
    names = {cls.__name__ for cls in type(transformer).__mro__}
    for adapter in _ADAPTERS:
        if names.intersection(adapter.transformer_class_names):
            return adapter
    listing = "; ".join(f"{fam} ({', '.join(cls)})" for fam, cls in supported_families().items())
    raise UnsupportedModelError(
        f"motionguide has no backbone adapter for {type(transformer).__name__}. Supported families: {listing}. "
        "To add one, subclass motionguide.backbones.VideoBackbone (token grid, attention modules and their "
        "instrumented processor, latent normalisation, training target) and register it with "
        "motionguide.backbones.register_backbone."
    )


def backbone_for(model: Any, **components: Any) -> VideoBackbone:
    """A backbone over a diffusers pipeline or a bare transformer (extra components by keyword)."""
    if hasattr(model, "transformer") and not isinstance(model, torch.nn.Module):
        adapter = adapter_for_transformer(model.transformer)
        return adapter.from_pipeline(model)
    if not isinstance(model, torch.nn.Module):
        raise UnsupportedModelError(
            f"backbone_for expects a diffusers pipeline or transformer, got {type(model).__name__}"
        )
    return adapter_for_transformer(model)(model, **components)


def adapter_for_class_name(class_name: str) -> type[VideoBackbone] | None:
    """The adapter that handles the transformer class called `class_name`, or None (no import, no weights)."""
    for adapter in _ADAPTERS:
        if class_name in adapter.transformer_class_names:
            return adapter
    return None


def _read_json(path: str | os.PathLike | None) -> dict[str, Any] | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _config_file(model: str, name: str) -> str | None:
    """`name` inside a local model folder, or from the hub cache for a hub id (never a download)."""
    if Path(model).is_dir():
        return str(Path(model) / name)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, name)
    except Exception:  # not a valid repo id, or no hub client: nothing known offline
        return None
    return found if isinstance(found, str) else None


def transformer_class_name(model: str | os.PathLike) -> str | None:
    """The transformer class a pipeline folder or hub id declares, read from its `model_index.json` (or a bare
    transformer folder's `config.json`) without loading anything; None when it cannot be told offline."""
    model = str(model)
    index = _read_json(_config_file(model, "model_index.json"))
    if index is not None:
        entry = index.get("transformer")
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], str):
            return entry[1]
        return None
    for name in ("config.json", "transformer/config.json"):
        config = _read_json(_config_file(model, name))
        if config is not None and isinstance(config.get("_class_name"), str):
            return config["_class_name"]
    return None


def pipeline_class_name(model: str | os.PathLike) -> str | None:
    """The pipeline class a model folder or hub id declares in its `model_index.json` (`_class_name`), read
    without loading anything; None when it cannot be told offline."""
    index = _read_json(_config_file(str(model), "model_index.json"))
    name = index.get("_class_name") if index is not None else None
    return name if isinstance(name, str) else None


def sampling_defaults_for(model: Any) -> SamplingDefaults | None:
    """The family's sampling defaults for a loaded pipeline, a transformer, or a model folder / hub id (read from
    its config files, no weights loaded); None when the family cannot be told (no config, unknown class)."""
    if model is None:
        return None
    transformer = getattr(model, "transformer", model)
    if isinstance(transformer, torch.nn.Module):
        names = {cls.__name__ for cls in type(transformer).__mro__}
        adapter = next((a for a in _ADAPTERS if names.intersection(a.transformer_class_names)), None)
    elif isinstance(model, (str, os.PathLike)):
        name = transformer_class_name(model)
        adapter = adapter_for_class_name(name) if name else None
    else:
        return None
    return adapter.sampling_defaults if adapter is not None else None
