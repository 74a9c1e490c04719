"""Generation on stock diffusers pipelines, shared by `sample/generate.py` and the validation sampler."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..files import atomic_write_text
from ..loading import PipelinePlacement
from ..loading import load_pipeline as load_checked_pipeline
from .guidance import get_guidance

#: written next to a model by the toy recipe: the settings it was trained for
SAMPLING_DEFAULTS_FILE = "sampling_defaults.json"


@dataclass
class SamplingSettings:
    """Video size, steps, CFG scale, text length, negative prompt and fps for one sampling run.

    The class defaults are a short, small clip (the generic family defaults); :meth:`for_model` fills in what
    a model's family samples at instead."""

    num_frames: int = 17
    height: int = 64
    width: int = 64
    steps: int = 25
    cfg: float = 5.0
    max_sequence_length: int | None = None
    negative_prompt: str | None = None
    fps: int = 8

    @classmethod
    def for_model(cls, model: str | os.PathLike | None, pipeline: Any = None,
                  **overrides: Any) -> "SamplingSettings":
        """The settings for `model` (a pipeline folder or hub id), most specific last:

        1. its family's defaults (`VideoBackbone.sampling_defaults`: Wan 81x480x832 at 16 fps, CogVideoX
           49x480x720 at 8 fps), the family told by the loaded `pipeline` when given, else by the folder's (or
           the hub cache's) `model_index.json`, without loading weights; the class defaults if neither tells;
        2. the model folder's own `sampling_defaults.json` (written next to a model by the toy recipe);
        3. `overrides`, e.g. the user's flags (None means keep).
        """
        from ..backbones import sampling_defaults_for

        family = sampling_defaults_for(pipeline) or sampling_defaults_for(model)
        values: dict[str, Any] = family.as_dict() if family is not None else {}
        saved = Path(model) / SAMPLING_DEFAULTS_FILE if model is not None else None
        if saved is not None and saved.is_file():
            values.update(json.loads(saved.read_text()))
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def model_max_sequence_length(model: Any, pipeline: Any = None) -> int:
    """The model's own text length: the one its transformer is built for when its config fixes one
    (CogVideoX's `max_text_seq_length`: its positional embedding covers exactly that many text tokens), else
    its family's (Wan 512), a model folder's `sampling_defaults.json` over it (the toy: 16), else the
    pipeline's own `__call__` default."""
    import inspect

    from ..errors import ConfigError

    transformer_config = getattr(getattr(pipeline, "transformer", None), "config", None)
    fixed = getattr(transformer_config, "max_text_seq_length", None)
    if isinstance(fixed, int) and fixed > 0:
        return fixed
    length = SamplingSettings.for_model(model, pipeline=pipeline).max_sequence_length
    if length is None and pipeline is not None:
        parameter = inspect.signature(type(pipeline).__call__).parameters.get("max_sequence_length")
        length = parameter.default if parameter is not None and isinstance(parameter.default, int) else None
    if length is None:
        raise ConfigError(f"max_sequence_length: {model} declares no text length; set max_sequence_length")
    return int(length)


def load_pipeline(model: str, lora: str | None = None, lora_scale: float = 1.0, device: str | None = None,
                  dtype: torch.dtype | None = None, placement: PipelinePlacement | None = None):
    """A stock pipeline from a local folder or hub id, with an optional LoRA loaded through `load_lora_weights`.

    Kept for the callers of this name; it is `motionguide.loading.load_pipeline` (components checked, dtypes and
    device from `placement`, or from `device` / `dtype` when no placement is given: None keeps the checkpoint's
    dtype and the CPU)."""
    if placement is None:
        placement = PipelinePlacement(dtype=dtype, device=device)
    return load_checked_pipeline(model, placement, lora=lora, lora_scale=lora_scale)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames in [0, 1] (clipped) -> uint8 in [0, 255], rounded."""
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def generate_videos(pipe, prompts: Sequence[str], seeds: Sequence[int], settings: SamplingSettings,
                    guidance: str | None = "none", guidance_options: dict[str, Any] | None = None,
                    progress: bool = True, image: Any = None) -> list[dict[str, Any]]:
    """One video per (prompt, seed), each with its own seeded generator: uint8 frames [F, H, W, 3].

    `image`: an image-to-video pipeline's conditioning image (a PIL image), passed as its `image=`."""
    guide = get_guidance(guidance, **(guidance_options or {}))
    pipe.set_progress_bar_config(disable=not progress, leave=False)
    results = []
    for prompt in prompts:
        for seed in seeds:
            call = dict(prompt=prompt, num_frames=settings.num_frames, height=settings.height, width=settings.width,
                        num_inference_steps=settings.steps, guidance_scale=settings.cfg, output_type="np",
                        generator=torch.Generator(device="cpu").manual_seed(int(seed)))
            if settings.negative_prompt is not None:
                call["negative_prompt"] = settings.negative_prompt
            if settings.max_sequence_length is not None:
                call["max_sequence_length"] = settings.max_sequence_length
            if image is not None:
                call["image"] = image
            out = guide(pipe, **call)
            results.append({"prompt": prompt, "seed": int(seed), "frames": to_uint8(out.frames[0])})
    return results


def save_videos(results: Sequence[dict[str, Any]], out_dir: str | os.PathLike, fps: float = 8,
                grid_name: str = "grid.png", lossless: bool = False) -> dict[str, Any]:
    """An mp4 per video (H.264 yuv420p at `fps`, which browsers play; `lossless` for exact pixels when the
    files are scored later), a PNG frame grid of all, and `samples.json` listing them."""
    from ..video import write_video
    from ..viz import frame_grid, save_png

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    listing = []
    for i, r in enumerate(results):
        path = out_dir / f"{i:03d}_seed{r['seed']}.mp4"
        write_video(path, r["frames"], fps=fps, lossless=lossless)
        listing.append({"file": path.name, "prompt": r["prompt"], "seed": r["seed"]})
    grid = save_png(frame_grid([r["frames"] for r in results], [f"{r['prompt']} (seed {r['seed']})" for r in results],
                               frames_per_row=9), out_dir / grid_name)
    atomic_write_text(out_dir / "samples.json", json.dumps(listing, indent=2))
    return {"videos": listing, "grid": str(grid)}
