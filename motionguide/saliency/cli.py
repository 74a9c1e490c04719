"""`motionguide saliency`: IMAP maps for words of a prompt, on a real video or while generating one.

    motionguide saliency --model assets/toy-model --prompt "a red circle moves left" --video clip.mp4 --out maps/
    motionguide saliency --model assets/toy-model --prompt "a red circle moves left" --words circle moves --out maps/

Writes `maps.npz` (raw patch-resolution maps per kind, [words, F', H', W']), `saliency.json` (words, settings,
selected heads) and one `<word>.png` per word (rows: imap, gramcol, cross_attention; columns: latent frames).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..arg_checks import (block_count_of, check_block_indices, check_finite, check_frame_count, check_frame_size,
                          check_lora_file, check_model_folder, check_positive, check_profile, check_seed)
from ..backbones.frame_sizes import sampling_pixel_multiple
from ..cli_args import add_subcommand, index_list
from ..output_paths import check_output_folder
from ..placement_args import add_placement_arguments, placement_from_args

__all__ = ["add_saliency_command", "run_saliency"]


def add_saliency_command(subparsers: Any) -> None:
    """Register the `saliency` subcommand and its options on `subparsers`."""
    p = add_subcommand(subparsers, "saliency", help="IMAP / GramCol saliency maps for words of a prompt",
                       description=__doc__.splitlines()[0])
    p.add_argument("--model", type=str, required=True, help="local pipeline folder or hub id")
    p.add_argument("--lora", type=str, help="folder with pytorch_lora_weights.safetensors")
    p.add_argument("--prompt", type=str, required=True, help="the caption (real video) or the prompt to generate")
    p.add_argument("--words", type=str, nargs="+", help="words to map (default: the prompt's noun and motion "
                                                        "verb); '</s>' is the end token")
    p.add_argument("--video", type=str, help="real-video mode: re-noise this clip's latents and run one forward")
    p.add_argument("--image", type=str,
                   help="conditioning image (PNG / JPEG) of an image-to-video model when generating (without "
                        "--video; a --video is conditioned on its own first frame)")
    p.add_argument("--num_frames", type=int, help="frames (default: the model's sampling default)")
    p.add_argument("--height", type=int, help="frame height (default: the model's sampling default)")
    p.add_argument("--width", type=int, help="frame width (default: the model's sampling default)")
    p.add_argument("--profile", type=str, help="layer profile name or YAML (default: the model's shipped profile)")
    p.add_argument("--blocks", type=index_list("blocks"), help="blocks instead of a profile, e.g. 5-19 or 4,6,10-23")
    p.add_argument("--top_k", type=int, help="IMAP heads per layer (default: the profile's)")
    p.add_argument("--timestep", type=float, help="real video: re-noise level, 0..1000 (default: the profile's)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--num_inference_steps", "--steps", type=int, help="generation: sampling steps")
    p.add_argument("--guidance_scale", "--cfg", type=float, help="generation: classifier-free guidance scale")
    p.add_argument("--window", type=float, nargs=2, metavar=("START", "STOP"),
                   help="generation: average only steps in this fraction of the schedule, e.g. 0.5 1.0")
    p.add_argument("--max_sequence_length", type=int, help="text tokens (default: the model's sampling default)")
    p.add_argument("--real_slots_only", action="store_true",
                   help="z-score over the prompt's real tokens instead of all padded slots (differs from the paper)")
    add_placement_arguments(p)
    p.add_argument("--out", type=str, default="out/saliency", help="folder for maps.npz, saliency.json and PNGs")
    p.set_defaults(func=run_saliency)


def run_saliency(args: argparse.Namespace) -> int:
    """Compute the maps for a real video or while generating, and write maps.npz, PNGs and saliency.json."""
    import torch
    from PIL import Image

    from ..backbones import backbone_for
    from ..sampling.generate import SamplingSettings, load_pipeline
    from .compute import encode_clip, saliency_for_latents, saliency_while_sampling
    from .monitor import word_tag
    from .render import heatmap_grid
    from .words import default_caption_words

    words = args.words or default_caption_words(args.prompt)
    where: Any = args.blocks if args.blocks is not None else args.profile
    for flag in ("num_frames", "height", "width", "num_inference_steps", "max_sequence_length", "top_k"):
        check_positive(f"--{flag}", getattr(args, flag))
    check_finite("--guidance_scale", args.guidance_scale)
    if args.timestep is not None and not 0 <= args.timestep <= 1000:
        raise ValueError(f"--timestep {args.timestep}: give a noise level in 0..1000")
    placement = placement_from_args(args)  # the flags and the output folder are checked before the model loads
    check_output_folder(args.out, "--out")
    if args.video and not Path(args.video).is_file():
        raise FileNotFoundError(f"--video {args.video}: no such file")
    from ..conditioning_image import check_image_flag, check_image_for_pipeline

    if args.video and args.image:
        raise ValueError("--image conditions a generated video; a --video is conditioned on its own first frame: "
                         "drop --image")
    image = None if args.video else check_image_flag("--image", args.image, args.model)  # before the load
    check_model_folder(args.model)
    check_frame_count("--num_frames", args.num_frames, args.model)
    multiple = sampling_pixel_multiple(args.model)
    for flag in ("height", "width"):
        check_frame_size(f"--{flag}", getattr(args, flag), args.model, multiple)
    check_seed("--seed", args.seed)
    check_profile("--profile", args.profile)
    check_block_indices("--blocks", args.blocks, block_count_of(args.model))
    if args.window is not None:
        start, stop = args.window
        if not 0.0 <= start < stop <= 1.0:  # NaN fails every comparison
            raise ValueError(f"--window {start:g} {stop:g}: give START STOP fractions of the sampling steps with "
                             "0 <= START < STOP <= 1, e.g. --window 0.5 1.0 for the second half")
    from .words import check_words

    try:
        check_words(args.prompt, words)
    except ValueError as exc:
        raise ValueError(f"--words: {exc}" if args.words else f"--prompt: {exc}") from None
    if args.lora is not None:
        if not Path(args.lora).exists():
            raise FileNotFoundError(f"--lora {args.lora}: no such folder or file; give the folder holding "
                                    "pytorch_lora_weights.safetensors")
        check_lora_file(args.lora)
    frames = None
    if args.video:  # read now: a video that cannot be decoded, or is too short, costs no model load
        from ..sampling.generate import SamplingSettings as _Settings
        from ..video import read_video

        wanted = _Settings.for_model(args.model, num_frames=args.num_frames).num_frames
        frames = read_video(args.video)[:wanted]
        if len(frames) < wanted:
            raise ValueError(f"--video {args.video} has {len(frames)} frames, fewer than --num_frames "
                             f"{wanted}; pass a smaller --num_frames (4k+1)")
    pipe = load_pipeline(args.model, lora=args.lora, placement=placement)
    if not args.video:
        check_image_for_pipeline("--image", image, pipe)
    settings = SamplingSettings.for_model(
        args.model, pipeline=pipe, num_frames=args.num_frames, height=args.height, width=args.width,
        steps=args.num_inference_steps, cfg=args.guidance_scale, max_sequence_length=args.max_sequence_length)
    pipe.set_progress_bar_config(disable=True)
    if args.video:
        from ..data.dataset import frames_to_pixels
        from ..video import read_video

        frames = frames if len(frames) == settings.num_frames else read_video(args.video)[: settings.num_frames]
        if len(frames) < settings.num_frames:
            raise ValueError(f"--video {args.video} has {len(frames)} frames, fewer than --num_frames "
                             f"{settings.num_frames}; pass a smaller --num_frames (4k+1)")
        pixels = frames_to_pixels(frames, settings.height, settings.width)
        latents = encode_clip(pipe, pixels)
        backbone = backbone_for(pipe)
        with torch.no_grad():  # an image-to-video model: the video's own first frame conditions it
            condition = backbone.encode_condition(pixels[None, :, 0], pixels.shape[1])
        maps = saliency_for_latents(pipe, latents, args.prompt, words, where, args.top_k, args.timestep, args.seed,
                                    max_sequence_length=settings.max_sequence_length,
                                    real_slots_only=args.real_slots_only, condition=condition or None)
        mode = "real_video"
    else:
        call = dict(num_frames=settings.num_frames, height=settings.height, width=settings.width,
                    num_inference_steps=settings.steps, guidance_scale=settings.cfg, output_type="latent",
                    generator=torch.Generator().manual_seed(args.seed))
        if settings.max_sequence_length is not None:
            call["max_sequence_length"] = settings.max_sequence_length
        if settings.negative_prompt is not None:
            call["negative_prompt"] = settings.negative_prompt
        if image is not None:  # an image-to-video model's conditioning image
            call["image"] = image
        maps, _ = saliency_while_sampling(pipe, args.prompt, words, where, args.top_k,
                                          tuple(args.window) if args.window else None,
                                          real_slots_only=args.real_slots_only, **call)
        mode = "generated"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    maps.save(out / "maps.npz")
    pngs = []
    for word in maps.words:
        image = heatmap_grid([maps.get(word, kind).numpy() for kind in maps.kinds])
        path = out / f"{word_tag(word)}.png"
        Image.fromarray(image).save(path)
        pngs.append(path.name)
    summary = {"mode": mode, "prompt": args.prompt, "words": maps.words, "kinds": maps.kinds,
               "shape": list(maps.maps[maps.kinds[0]].shape), "steps": maps.steps,
               "selected_heads": {str(b): h for b, h in maps.selected_heads.items()},
               "seed": args.seed, "video": args.video, "pngs": pngs}
    (out / "saliency.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({"out": str(out.resolve()), "words": maps.words, "shape": summary["shape"]}))
    return 0
