"""Argument parsing for `sample/generate.py` (kept in the package so it is importable and tested).

Flag names follow diffusers: `--guidance_scale` is the classifier-free guidance scale (`--cfg` is an alias),
`--num_inference_steps` the sampling steps (`--steps` an alias); the correspondence guidance's own scale is
`--correspondence_scale`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from ..cli_args import ArgumentParser, run_command
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
    p.add_argument("--profile", type=str, help="layer profile name or YAML for the guidance")
    p.add_argument("--device", type=str, help="e.g. cuda; default: CPU")
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

        prompts += read_prompt_lines(args.prompts_file)
    if not prompts:
        raise ValueError("give at least one --prompt or a --prompts_file")
    return prompts


def _run(args: argparse.Namespace) -> int:
    from .generate import SamplingSettings, generate_videos, load_pipeline, save_videos

    prompts = read_prompts(args)
    GUIDANCES.check(args.guidance)  # before the model loads
    options = {k: v for k, v in (("scale", args.correspondence_scale), ("profile", args.profile)) if v is not None}
    pipe = load_pipeline(args.model, lora=args.lora, lora_scale=args.lora_scale, device=args.device)
    # the family's defaults come from the loaded pipeline, so a hub id gets them too
    settings = SamplingSettings.for_model(
        args.model, pipeline=pipe, num_frames=args.num_frames, height=args.height, width=args.width,
        steps=args.num_inference_steps, cfg=args.guidance_scale, max_sequence_length=args.max_sequence_length,
        negative_prompt=args.negative_prompt, fps=args.fps,
    )
    results = generate_videos(pipe, prompts, args.seed or [0], settings, guidance=args.guidance,
                              guidance_options=options)
    saved = save_videos(results, args.out, fps=settings.fps, lossless=args.lossless)
    print(json.dumps({"out": str(Path(args.out).resolve()), "videos": len(saved["videos"]), "grid": saved["grid"]}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Generate and save the requested videos; returns 0, or 2 with one line on stderr for a user error."""
    return run_command(_run, build_parser().parse_args(argv))


if __name__ == "__main__":  # `python -m` / `accelerate launch -m`: the demo from a plain install
    raise SystemExit(main())
