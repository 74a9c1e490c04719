"""Argument parsing for `sample/generate.py` (kept in the package so it is importable and tested)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .generate import SamplingSettings, generate_videos, load_pipeline, save_videos


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `sample/generate.py`."""
    p = argparse.ArgumentParser(prog="sample/generate.py", description="sample videos with optional LoRA and guidance")
    p.add_argument("--model", required=True, help="local pipeline folder or hub id")
    p.add_argument("--lora", help="folder with pytorch_lora_weights.safetensors")
    p.add_argument("--lora_scale", type=float, default=1.0)
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts_file", help="one prompt per line")
    p.add_argument("--negative_prompt")
    p.add_argument("--num_frames", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--cfg", type=float)
    p.add_argument("--max_sequence_length", type=int)
    p.add_argument("--seed", type=int, action="append", help="seed (repeatable; default 0)")
    p.add_argument("--guidance", default="none", help="none or a registered guidance, e.g. correspondence")
    p.add_argument("--guidance_scale", type=float, help="scale of the guidance term (guidance-specific)")
    p.add_argument("--profile", help="layer profile name or YAML for the guidance")
    p.add_argument("--device", help="e.g. cuda; default: CPU")
    p.add_argument("--fps", type=int)
    p.add_argument("--out", default="out/samples", help="folder for mp4s, grid.png and samples.json")
    return p


def read_prompts(args: argparse.Namespace) -> list[str]:
    """Prompts from --prompt and --prompts_file (blank lines skipped); ValueError if there are none."""
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts_file {path}: no such file")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError("give at least one --prompt or a --prompts_file")
    return prompts


def main(argv: Sequence[str] | None = None) -> int:
    """Generate and save the requested videos; returns 0, or 2 with a message on a bad argument."""
    args = build_parser().parse_args(argv)
    try:
        prompts = read_prompts(args)
        settings = SamplingSettings.for_model(
            args.model if Path(args.model).is_dir() else None, num_frames=args.num_frames, height=args.height,
            width=args.width, steps=args.steps, cfg=args.cfg, max_sequence_length=args.max_sequence_length,
            negative_prompt=args.negative_prompt, fps=args.fps,
        )
        options = {k: v for k, v in (("scale", args.guidance_scale), ("profile", args.profile)) if v is not None}
        pipe = load_pipeline(args.model, lora=args.lora, lora_scale=args.lora_scale, device=args.device)
        results = generate_videos(pipe, prompts, args.seed or [0], settings, guidance=args.guidance,
                                  guidance_options=options)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    saved = save_videos(results, args.out, fps=settings.fps)
    print(json.dumps({"out": str(Path(args.out).resolve()), "videos": len(saved["videos"]), "grid": saved["grid"]}))
    return 0
