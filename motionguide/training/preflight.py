"""Checks of a training config against the disk, run before any model loads.

`TrainConfig.validate` checks values alone; what needs a look at files lives here: the frame size against the
model family's pixel multiple (read from the model's config files, never its weights), the output folder (a
file in the way, a folder that cannot be written) and the dataset folder. Each failure is one `ConfigError`
naming the setting and the fix, so a mistake costs a second, not a model load and a latent cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..backbones.frame_sizes import config_json as _config_json, pixel_multiple_of
from ..errors import ConfigError

__all__ = ["pixel_multiple_of", "check_frame_sizes", "check_experts", "check_output_dir", "check_data_root"]


def check_frame_sizes(cfg: Any, where: str = "config") -> None:
    """Every training and validation frame size is a multiple of the model's pixel multiple (diffusers would
    otherwise fail at the end-of-run validation, after the training)."""
    from ..data.buckets import parse_buckets

    model = getattr(cfg, "pretrained_model_name_or_path", None) or cfg.model  # a TrainConfig or a MotiveConfig
    multiple = pixel_multiple_of(model)
    if multiple is None:
        return
    sizes = [("height", cfg.height), ("width", cfg.width)]
    buckets = parse_buckets(cfg.buckets) or ()
    if buckets:
        sizes = [(f"buckets {b.as_tuple()} {side}", value) for b in buckets
                 for side, value in (("height", b.height), ("width", b.width))]
    checks = [(key, value, multiple) for key, value in sizes]
    if getattr(cfg, "validation_prompts", None):
        # validation samples through the stock pipeline, whose own check may ask more (Wan: 16, even for a VAE
        # that allows 8); found now, not after the training
        from ..backbones.frame_sizes import sampling_pixel_multiple

        sampled = sampling_pixel_multiple(model) or multiple
        for key in ("height", "width"):
            own = getattr(cfg, f"validation_{key}", None)
            checks.append((f"validation_{key}" if own is not None else key, own or getattr(cfg, key), sampled))
    else:
        checks += [(key, getattr(cfg, key), multiple) for key in ("validation_height", "validation_width")
                   if getattr(cfg, key, None) is not None]
    for key, value, step in checks:
        if value % step:
            lower = max(step, value // step * step)
            if step == multiple:
                why = f"the pixel size of one token of {model} (VAE factor x patch size)"
            else:  # only the validation samples need it
                why = f"which the diffusers pipeline of {model} asks of the validation samples" + (
                    "" if key.startswith("validation_") else " (or set validation_height / validation_width)")
            raise ConfigError(f"{where}: {key}={value} is not a multiple of {step}, {why}; use {lower} or "
                              f"{lower + step}")


def check_experts(cfg: Any, where: str = "config") -> None:
    """`experts` and `training_type` against the model's expert count, read from its `model_index.json`
    (a `transformer_2` entry: Wan2.2-T2V-A14B), before any weights load; nothing known, nothing checked."""
    from .experts import check_expert_settings

    index = _config_json(cfg.pretrained_model_name_or_path, "model_index.json")
    if index is None:
        return
    second = index.get("transformer_2")
    num_experts = 2 if isinstance(second, list) and second and second[0] is not None else 1
    try:
        check_expert_settings(getattr(cfg, "experts", "both"), cfg.training_type, num_experts)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc} ({cfg.pretrained_model_name_or_path})") from None


def check_output_dir(path: str | os.PathLike, key: str = "output_dir", create: bool = False) -> Path:
    """`path` is (or can become) a folder this process writes: not a file, no file in the way above it;
    with `create`, made now and probed with a temporary file. ConfigError naming `key` and the fix."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be made: {existing} is a file"
        raise ConfigError(f"{key} {path} {what}; pick another folder or move the file away")
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ConfigError(f"{key} {path} cannot be written ({error.strerror or error}); pick a folder you can "
                          "write to") from None
    return path


def check_data_root(cfg: Any, where: str = "config") -> None:
    """The dataset folder exists, or a `data_recipe` is there to create it; a folder in the way is named."""
    root = Path(cfg.data_root)
    if root.is_dir():
        # its metadata read and its clips probed only until the first usable one: an empty folder, a header-only
        # csv, a missing column, or every clip missing, corrupt, uncaptioned or too short for num_frames / the
        # buckets is the dataset's own one-line report, before the model loads rather than after
        from ..data.dataset import VideoDataset, dataset_options

        VideoDataset.check_usable(root, **dataset_options(cfg))
        return
    if root.exists():
        raise ConfigError(f"{where}: data_root {root} is a file, not a folder; give the folder that holds "
                          "metadata.jsonl / metadata.csv or the videos")
    if cfg.data_recipe is None:
        raise ConfigError(f"{where}: data_root {root} does not exist; check the path (or set data_recipe to "
                          "create a dataset there)")
