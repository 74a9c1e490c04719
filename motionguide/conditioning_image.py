"""The `--image PATH` flag of the commands that run an image-to-video model (`sample/generate.py`,
`motionguide track`): checked against the model's config files and read before any weight loads.

Whether a model conditions on an image is told from its `model_index.json` (`*ImageToVideoPipeline`) before the
load, and from the loaded pipeline's backbone (`conditions_on_image`) after it, for a hub id that was not cached.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError


def model_takes_image(model: str | os.PathLike) -> tuple[bool | None, str | None]:
    """(whether the model's pipeline conditions on an image, its pipeline class name); (None, None) when the
    model's config files cannot be read offline."""
    from .backbones.registry import pipeline_class_name

    name = pipeline_class_name(model)
    return (None, None) if name is None else ("ImageToVideo" in name, name)


def read_image(flag: str, path: str | os.PathLike) -> Any:
    """The RGB `PIL.Image` at `path`; a one-line ConfigError naming the flag when it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ConfigError(f"{flag} {path}: no such file; give the conditioning image (PNG or JPEG)")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ConfigError(f"{flag} {path}: cannot be read as an image ({type(error).__name__}); give a PNG or "
                          "JPEG file") from None


def check_image_flag(flag: str, path: str | os.PathLike | None, model: str | os.PathLike) -> Any:
    """Before the load: an image-to-video model needs `flag`, a text-to-video one refuses it; returns the image
    read (or None). A model whose pipeline class cannot be told offline is checked after the load
    (:func:`check_image_for_pipeline`)."""
    takes, name = model_takes_image(model)
    if path is None:
        if takes:
            raise ConfigError(f"{model} is an image-to-video model ({name}): give its conditioning image with "
                              f"{flag} PATH")
        return None
    if takes is False:
        raise ConfigError(f"{flag} {path}: {model} is a text-to-video model ({name}) and takes no conditioning "
                          f"image; drop {flag} or use an image-to-video model")
    return read_image(flag, path)


def check_image_for_pipeline(flag: str, image: Any, pipe: Any) -> None:
    """After the load (the check :func:`check_image_flag` could not make offline): the same rule, from the
    loaded pipeline's backbone."""
    from .backbones import backbone_for
    from .errors import UnsupportedModelError

    try:
        takes = backbone_for(pipe).conditions_on_image
    except UnsupportedModelError:  # not a video pipeline motionguide knows: its own call says what it needs
        return
    name = type(pipe).__name__
    if takes and image is None:
        raise ConfigError(f"this is an image-to-video model ({name}): give its conditioning image with {flag} PATH")
    if not takes and image is not None:
        raise ConfigError(f"{flag}: this is a text-to-video model ({name}) and takes no conditioning image; drop "
                          f"{flag}")
