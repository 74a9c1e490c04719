"""Argument parsing for `sample/generate.py` (kept in the package so it is importable and tested).

Flag names follow diffusers: `--guidance_scale` is the classifier-free guidance scale (`--cfg` is an alias),
`--num_inference_steps` the sampling steps (`--steps` an alias); the correspondence guidance's own scale is
`--correspondence_scale`.

`--device` / `--dtype` default to auto (the accelerator in bf16 when there is one, else the CPU in fp32, where the
toy's samples stay bit-identical). Every flag and the output folder are checked before the model loads
(`check_arguments`), so a typo costs no loading or sampling time.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

from ..arg_checks import (block_count_of, check_block_indices, check_finite, check_frame_count, check_frame_size,
                          check_lora_file, check_model_folder, check_positive, check_profile, check_seed)
from ..backbones.frame_sizes import sampling_pixel_multiple
from ..cli_args import ArgumentParser, index_list, run_command
from ..errors import ConfigError
from ..loading import _HUB_ID, PipelinePlacement  # _HUB_ID: what a hub id looks like, one definition
from ..output_paths import check_output_folder
from ..placement_args import add_placement_arguments, placement_from_args
from ..registry import GUIDANCES


def build_parser() -> ArgumentParser:
    """The argument parser of `sample/generate.py`."""
    p = ArgumentParser(prog="sample/generate.py", description="sample videos with optional LoRA and guidance")
    p.add_argument("--model", type=str, required=True, help="local pipeline folder or hub id")
    p.add_argument("--lora", type=str, help="folder with pytorch_lora_weights.safetensors")
    p.add_argument("--lora_scale", type=float, default=1.0, help="weight of the LoRA")
    p.add_argument("--prompt", type=str, action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts_file", type=str, help="one prompt per line")
    p.add_argument("--negative_prompt", type=str, help="negative prompt of classifier-free guidance")
    p.add_argument("--image", type=str,
                   help="conditioning image (PNG / JPEG) of an image-to-video model, e.g. CogVideoX-5B-I2V; "
                        "required there, refused for text-to-video models")
    p.add_argument("--num_frames", type=int,
                   help="frames per video (default: the model's; Wan 81, CogVideoX 49, the toy its own file's)")
    p.add_argument("--height", type=int, help="frame height (default: the model's; Wan 480, CogVideoX 480)")
    p.add_argument("--width", type=int, help="frame width (default: the model's; Wan 832, CogVideoX 720)")
    p.add_argument("--num_inference_steps", "--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--guidance_scale", "--cfg", type=float,
                   help="classifier-free guidance scale, as in diffusers (default: the model's)")
    p.add_argument("--max_sequence_length", type=int, help="text tokens per prompt (default: the model's)")
    p.add_argument("--seed", type=int, action="append", help="seed (repeatable; default 0)")
    p.add_argument("--guidance", type=str, default="none",
                   help=f"none or a registered guidance; choices: {', '.join(GUIDANCES.names())}")
    p.add_argument("--correspondence_scale", type=float,
                   help="scale s of the correspondence guidance term (default: the layer profile's)")
    p.add_argument("--correspondence_blocks", type=index_list("correspondence_blocks"),
                   help="blocks the correspondence guidance makes frame-local, e.g. 13,17,21 (default: the layer "
                        "profile's; needed for a model no shipped profile fits)")
    p.add_argument("--profile", type=str, help="layer profile name or YAML for the guidance")
    add_placement_arguments(p, offload=True)
    p.add_argument("--fps", type=int, help="frames per second of the written mp4s (default: the model's; Wan 16, CogVideoX 8)")
    p.add_argument("--lossless", action="store_true",
                   help="write the mp4s lossless (H.264 4:4:4, crf 0) for exact pixels when they are scored "
                        "later; most browsers and the W&B player do not play them (default: yuv420p, which they do)")
    p.add_argument("--out", type=str, default="out/samples", help="folder for mp4s, grid.png and samples.json")
    return p


def read_prompts(args: argparse.Namespace) -> list[str]:
    """Prompts from --prompt and --prompts_file (blank lines skipped); ValueError if there are none."""
    prompts = list(args.prompt)
    if args.prompts_file:
        from ..data.text_files import read_prompt_lines  # names the file and line of a byte that is not UTF-8

        from_file = read_prompt_lines(args.prompts_file)
        if not from_file:  # a file given but holding nothing is a mistake, even next to --prompt
            raise ConfigError(f"--prompts_file {args.prompts_file}: every line is blank; write one prompt per line")
        prompts += from_file
    if not prompts:
        raise ValueError("give at least one --prompt or a --prompts_file")
    return prompts


def check_arguments(args: argparse.Namespace) -> PipelinePlacement:
    """Every flag that can be judged without the model, and the output folder; returns the placement.

    Values a pipeline would silently round, drop or turn into noise (0 steps, 0 frames, a NaN scale, 0 fps)
    are one-line errors here, before any weight is read."""
    for flag in ("num_inference_steps", "num_frames", "height", "width", "max_sequence_length"):
        check_positive(f"--{flag}", getattr(args, flag))
    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps {args.fps}: must be positive, e.g. 16 for Wan, 8 for CogVideoX")
    for flag in ("guidance_scale", "correspondence_scale", "lora_scale"):
        check_finite(f"--{flag}", getattr(args, flag))
    check_model_folder(args.model)
    check_frame_count("--num_frames", args.num_frames, args.model)
    multiple = sampling_pixel_multiple(args.model)
    for flag in ("height", "width"):
        check_frame_size(f"--{flag}", getattr(args, flag), args.model, multiple)
    for seed in args.seed or ():
        check_seed("--seed", seed)
    # a missing local folder, told from a hub id by its shape or by its first part being a local folder
    if args.lora and not os.path.exists(args.lora) and (not _HUB_ID.fullmatch(args.lora)
                                                        or os.path.isdir(args.lora.split("/")[0])):
        raise ConfigError(f"--lora {args.lora}: no such folder or file; give the folder holding "
                          "pytorch_lora_weights.safetensors")
    if args.lora and os.path.exists(args.lora):
        check_lora_file(args.lora)  # a garbage or truncated file: one line naming it, before the load
    GUIDANCES.check(args.guidance)
    guidance_flags = [flag for flag, value in (("--correspondence_scale", args.correspondence_scale),
                                               ("--correspondence_blocks", args.correspondence_blocks),
                                               ("--profile", args.profile)) if value is not None]
    if guidance_flags and args.guidance in (None, "", "none"):
        raise ConfigError(f"{', '.join(guidance_flags)} only act with a guidance; add --guidance correspondence "
                          "or drop them")
    check_profile("--profile", args.profile)  # a missing or malformed profile file fails here, not after loading
    check_block_indices("--correspondence_blocks", args.correspondence_blocks, block_count_of(args.model))
    if args.guidance == "correspondence" and args.enable_model_cpu_offload:
        raise ConfigError("--guidance correspondence does not run under --enable_model_cpu_offload (the offload "
                          "hooks would move to its temporary transformer wrapper); drop one of the two")
    placement = placement_from_args(args)
    check_output_folder(args.out, "--out")
    from ..conditioning_image import check_image_flag

    args.image_value = check_image_flag("--image", args.image, args.model)  # read before the model loads
    return placement


def _run(args: argparse.Namespace) -> int:
    from . import generate
    from .generate import SamplingSettings

    prompts = read_prompts(args)
    placement = check_arguments(args)  # before the model loads
    options = {k: v for k, v in (("scale", args.correspondence_scale), ("profile", args.profile),
                                 ("blocks", args.correspondence_blocks)) if v is not None}
    pipe = generate.load_pipeline(args.model, lora=args.lora, lora_scale=args.lora_scale, placement=placement)
    from ..conditioning_image import check_image_for_pipeline

    image = args.image_value
    check_image_for_pipeline("--image", image, pipe)  # a hub id whose config files were not cached
    # the family's defaults come from the loaded pipeline, so a hub id gets them too
    settings = SamplingSettings.for_model(
        args.model, pipeline=pipe, num_frames=args.num_frames, height=args.height, width=args.width,
        steps=args.num_inference_steps, cfg=args.guidance_scale, max_sequence_length=args.max_sequence_length,
        negative_prompt=args.negative_prompt, fps=args.fps,
    )
    results = generate.generate_videos(pipe, prompts, args.seed or [0], settings, guidance=args.guidance,
                                       guidance_options=options, image=image)
    saved = generate.save_videos(results, args.out, fps=settings.fps, lossless=args.lossless)
    print(json.dumps({"out": str(Path(args.out).resolve()), "videos": len(saved["videos"]), "grid": saved["grid"]}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Generate and save the requested videos; returns 0, or 2 with one line on stderr for a user error."""
    return run_command(_run, build_parser().parse_args(argv))


if __name__ == "__main__":  # `python -m` / `accelerate launch -m`: the demo from a plain install
    raise SystemExit(main())
