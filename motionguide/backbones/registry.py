"""The model families motionguide knows, and looking one up from a diffusers transformer (or pipeline).

`_ADAPTERS` is the only place that names the built-in families; each is a folder next to this file that owns
everything family-specific (adapter, instrumented attention processor). Another family is one
:func:`register_backbone` call, from any package.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UnsupportedModelError
from .base import VideoBackbone
from .cogvideox import CogVideoXBackbone
from .wan import WanBackbone

#: the families, most recently registered first (the first whose transformer class names match is used)
_ADAPTERS: list[type[VideoBackbone]] = [WanBackbone, CogVideoXBackbone]


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
