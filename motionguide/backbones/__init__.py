"""Model families: everything that differs between video transformers (Wan, CogVideoX, ...) lives here.

Each family is a folder (`wan/`, `cogvideox/`, `hunyuanvideo/`) with its adapter (a :class:`VideoBackbone`) and
its instrumented attention processor; `registry.py` lists them. Add a family with :func:`register_backbone`.
"""

from .base import SamplingDefaults, TokenGrid, VideoBackbone, condition_kwargs, image_pixels, move_condition
from .profiles import (
    GuidanceProfile,
    LayerProfile,
    ProvisionalProfileWarning,
    SaliencyProfile,
    TrackingProfile,
    default_profile_for,
    load_profile,
    shipped_profiles,
    warn_if_provisional,
)
from .registry import (
    CogVideoXBackbone,
    HunyuanVideoBackbone,
    WanBackbone,
    adapter_for_class_name,
    adapter_for_transformer,
    backbone_for,
    register_backbone,
    sampling_defaults_for,
    supported_families,
    transformer_class_name,
)

__all__ = [
    "TokenGrid",
    "condition_kwargs",
    "image_pixels",
    "move_condition",
    "VideoBackbone",
    "SamplingDefaults",
    "WanBackbone",
    "CogVideoXBackbone",
    "HunyuanVideoBackbone",
    "LayerProfile",
    "TrackingProfile",
    "GuidanceProfile",
    "SaliencyProfile",
    "load_profile",
    "ProvisionalProfileWarning",
    "warn_if_provisional",
    "shipped_profiles",
    "default_profile_for",
    "backbone_for",
    "adapter_for_transformer",
    "register_backbone",
    "supported_families",
    "sampling_defaults_for",
    "adapter_for_class_name",
    "transformer_class_name",
]
