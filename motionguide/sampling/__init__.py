"""Guided generation on stock diffusers pipelines."""

from .generate import SamplingSettings, generate_videos, load_pipeline, save_videos
from .guidance import get_guidance, register_guidance, registered_guidances

__all__ = ["SamplingSettings", "generate_videos", "load_pipeline", "save_videos", "get_guidance",
           "register_guidance", "registered_guidances"]
