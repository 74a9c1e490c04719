"""Helpers for `VideoBackbone.check_components`: read a component's config value, word a mismatch.

Each family's adapter says which config fields must agree (Wan's VAE `z_dim` with its transformer's
`in_channels`, CogVideoX's `latent_channels`, ...); the wording of the error lives here so that every family
reports a mismatch the same way: both components, both values, and the fix, on one line.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

__all__ = ["config_value", "text_encoder_width", "require_equal", "is_image_to_video"]


def config_value(component: Any, name: str) -> Any:
    """`component.config.<name>` for diffusers and transformers configs alike; None when absent."""
    config = getattr(component, "config", None)
    if config is None:
        return None
    if isinstance(config, dict):
        return config.get(name)
    return getattr(config, name, None)


def text_encoder_width(text_encoder: Any) -> tuple[str, int] | tuple[None, None]:
    """(field, value) of a text encoder's output width: `d_model` (T5 / UMT5) or `hidden_size` (most others)."""
    for name in ("d_model", "hidden_size"):
        value = config_value(text_encoder, name)
        if isinstance(value, int):
            return name, value
    return None, None


def is_image_to_video(pipeline: Any) -> bool:
    """Whether a pipeline conditions on an image (its transformer then takes extra input channels)."""
    return pipeline is not None and "ImageToVideo" in type(pipeline).__name__


def require_equal(left: tuple[str, Any], right: tuple[str, Any], fix: str) -> None:
    """Raise a one-line ConfigError unless the two named values agree; a side that is None is not checked
    (a component that is not attached, or a config without that field)."""
    (left_name, left_value), (right_name, right_value) = left, right
    if left_value is None or right_value is None or left_value == right_value:
        return
    raise ConfigError(f"pipeline components do not fit together: {left_name} = {left_value} but {right_name} = "
                      f"{right_value}; {fix}")
