"""Model-family adapters: everything that differs between Wan and CogVideoX lives here."""

from .base import TokenGrid, VideoBackbone
from .cogvideox import CogVideoXBackbone
from .profiles import (
    GuidanceProfile,
    LayerProfile,
    SaliencyProfile,
    TrackingProfile,
    default_profile_for,
    load_profile,
    shipped_profiles,
)
from .registry import adapter_for_transformer, backbone_for, register_backbone, supported_families
from .wan import WanBackbone

__all__ = [
    "TokenGrid",
    "VideoBackbone",
    "WanBackbone",
    "CogVideoXBackbone",
    "LayerProfile",
    "TrackingProfile",
    "GuidanceProfile",
    "SaliencyProfile",
    "load_profile",
    "shipped_profiles",
    "default_profile_for",
    "backbone_for",
    "adapter_for_transformer",
    "register_backbone",
    "supported_families",
]
