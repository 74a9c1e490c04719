"""Command line for the toy world: `motionguide toy make-dataset ...` or
`python -m motionguide.toy.cli make-dataset ...`."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from motionguide.toy.vocab import DEFECTS

__all__ = ["add_toy_commands", "build_parser", "main"]


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2; got {text!r}") from None


def _name_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in DEFECTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown defect(s) {', '.join(unknown)}; valid: {', '.join(DEFECTS)}")
    return names


def _run_make_dataset(args: argparse.Namespace) -> int:
    from motionguide.toy.dataset import make_dataset

    out = make_dataset(
        args.out, args.num_clips, args.seed, defect_rate=args.defect_rate, defects=args.defects,
        holdout=args.holdout_fraction, num_objects=args.objects, fmt=args.formats.split(","),
        overwrite=args.overwrite, progress=not args.no_progress,
        num_frames=args.num_frames, height=args.height, width=args.width, fps=args.fps,
        motions=args.motions, partial_motion_rate=args.partial_motion_rate, id_prefix=args.id_prefix,
    )
    print(f"wrote {args.num_clips} toy clips to {out}")
    return 0


def _add_make_dataset(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-dataset", help="generate toy clips with captions and ground truth",
        description="Write videos/, gt/, metadata.jsonl/csv and dataset.json into --out.",
    )
    parser.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--num-clips", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--defect-rate", type=float, default=0.0, help="fraction of clips with a planted defect")
    parser.add_argument("--defects", type=_name_list, default=list(DEFECTS),
                        help=f"comma-separated defect kinds (default: {','.join(DEFECTS)})")
    parser.add_argument("--objects", type=_int_list, default=[1], help="object counts to draw from, e.g. 1,2")
    parser.add_argument("--holdout-fraction", type=float, default=None,
                        help="fraction of (color, shape, motion) triples kept out of the clips")
    parser.add_argument("--formats", default="jsonl,csv", help="metadata formats: jsonl, csv or both")
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--motions", type=_name_list, default=None,
                        help="only these motions, e.g. right (a Motive query set: add --partial-motion-rate 0)")
    parser.add_argument("--partial-motion-rate", type=float, default=0.2,
                        help="share of moving objects that start late or stop early")
    parser.add_argument("--id-prefix", default="clip", help="clip ids are <prefix>_00000, ... (e.g. query)")
    parser.add_argument("--overwrite", action="store_true", help="replace a toy dataset already in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run_make_dataset)


def _run_train_vae(args: argparse.Namespace) -> int:
    from motionguide.toy.vae_recipe import train_toy_vae

    train_toy_vae(args.out, frame_steps=args.frame_steps, clip_steps=args.clip_steps, seed=args.seed,
                  init_from=args.init_from, clip_batch=args.clip_batch, object_weight=args.object_weight)
    return 0


def _add_train_vae(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-vae", help="train the toy model's autoencoder (CPU, ~25 min)")
    parser.add_argument("--out", required=True, help="folder for vae/ (diffusers format) and vae_report.json")
    parser.add_argument("--frame-steps", type=int, default=1200, help="single-frame steps (batch 16)")
    parser.add_argument("--clip-steps", type=int, default=450, help="17-frame clip steps")
    parser.add_argument("--clip-batch", type=int, default=4, help="clips per step in the clip phase")
    parser.add_argument("--object-weight", type=float, default=5.0, help="loss weight of object pixels")
    parser.add_argument("--init-from", help="continue from a saved toy VAE folder (e.g. a second, clip-only round)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run_train_vae)


def _run_train_model(args: argparse.Namespace) -> int:
    from motionguide.toy.model_recipe import train_toy_transformer

    train_toy_transformer(args.vae, args.out, steps=args.steps, batch=args.batch, pool_clips=args.pool_clips,
                          seed=args.seed, lr=args.lr, init_from=args.init_from,
                          object_weight=args.object_weight, background=args.background,
                          partial_motion_rate=args.partial_motion_rate, device=args.device)
    return 0


def _add_train_model(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-model", help="train the toy transformer on a trained toy VAE; "
                                   "saves a WanPipeline in diffusers format")
    parser.add_argument("--vae", required=True, help="folder of the trained toy VAE (e.g. assets/toy-model/vae)")
    parser.add_argument("--out", required=True, help="where the pipeline is saved")
    parser.add_argument("--steps", type=int, default=1800)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--pool-clips", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--init-from", help="continue training a saved toy pipeline folder")
    parser.add_argument("--object-weight", type=float, default=1.0,
                        help="loss weight of latent pixels covered by an object (motion lives there)")
    parser.add_argument("--background", choices=("plain", "textured"), default=None,
                        help="train on one background kind only (default: both), e.g. a first curriculum stage")
    parser.add_argument("--partial-motion-rate", type=float, default=0.2,
                        help="share of clips whose motion starts late or stops early")
    parser.add_argument("--device", default="cpu", help="where the transformer trains, e.g. cuda (same data and draws)")
    parser.set_defaults(func=_run_train_model)


def add_toy_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `toy make-dataset` and `toy train-vae` on a parent CLI's subparsers (handlers in `args.func`)."""
    toy = subparsers.add_parser("toy", help="the toy world: datasets with ground truth, the toy model recipe")
    toy_commands = toy.add_subparsers(dest="toy_command", metavar="COMMAND", required=True)
    _add_make_dataset(toy_commands)
    _add_train_vae(toy_commands)
    _add_train_model(toy_commands)
    return toy


def build_parser() -> argparse.ArgumentParser:
    """The standalone toy CLI's parser: make-dataset, train-vae and train-model."""
    parser = argparse.ArgumentParser(prog="python -m motionguide.toy.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_make_dataset(commands)
    _add_train_vae(commands)
    _add_train_model(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one toy command; returns its exit code, 2 with a message on a bad argument."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
