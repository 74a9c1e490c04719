"""Command line for the toy world: `motionguide toy make-dataset ...` or
`python -m motionguide.toy.cli make-dataset ...` (also make-turn-pool, make-turn-queries, train-vae,
train-model)."""

from __future__ import annotations

import argparse
import os
from typing import Callable, Sequence

from motionguide.cli_args import ArgumentParser, add_subcommand, index_list, run_command
from motionguide.toy.vocab import DEFECTS, MOTIONS

__all__ = ["add_toy_commands", "build_parser", "main"]


def _names_from(valid: Sequence[str], kind: str) -> Callable[[str], list[str]]:
    """An argparse `type=` for comma-separated names out of `valid` (its help says "type: names")."""

    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in valid]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {kind}(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        return names

    parse.__name__ = "names"
    return parse


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
    parser = add_subcommand(
        subparsers, "make-dataset", help="generate toy clips with captions and ground truth",
        description="Write videos/, gt/, metadata.jsonl/csv and dataset.json into --out.",
    )
    parser.add_argument("--out", type=str, required=True, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--num_clips", type=int, required=True, help="clips to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--defect_rate", type=float, default=0.0, help="fraction of clips with a planted defect")
    parser.add_argument("--defects", type=_names_from(DEFECTS, "defect"), default=list(DEFECTS),
                        help=f"comma-separated defect kinds (default: {','.join(DEFECTS)})")
    parser.add_argument("--objects", type=index_list("objects"), default=[1],
                        help="object counts to draw from, e.g. 1,2 or 1-3")
    parser.add_argument("--holdout_fraction", type=float, default=None,
                        help="fraction of (color, shape, motion) triples kept out of the clips")
    parser.add_argument("--formats", type=str, default="jsonl,csv", help="metadata formats: jsonl, csv or both")
    parser.add_argument("--num_frames", type=int, default=17, help="frames per clip")
    parser.add_argument("--height", type=int, default=64, help="frame height in pixels")
    parser.add_argument("--width", type=int, default=64, help="frame width in pixels")
    parser.add_argument("--fps", type=int, default=8, help="frames per second of the written videos")
    parser.add_argument("--motions", type=_names_from(MOTIONS, "motion"), default=None,
                        help="only these motions, e.g. right (a Motive query set: add --partial_motion_rate 0)")
    parser.add_argument("--partial_motion_rate", type=float, default=0.2,
                        help="share of moving objects that start late or stop early")
    parser.add_argument("--id_prefix", type=str, default="clip", help="clip ids are <prefix>_00000, ... (e.g. query)")
    parser.add_argument("--overwrite", action="store_true", help="replace a toy dataset already in --out")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run_make_dataset)


def _turn_pairs(text: str) -> list[tuple[str, str]]:
    """argparse `type=` for "right:left,up:right" (first:second direction of each turn)."""
    from motionguide.toy.vocab import TURN_MOTIONS

    pairs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        first, _, second = part.partition(":")
        if first not in TURN_MOTIONS or second not in TURN_MOTIONS or first == second:
            raise argparse.ArgumentTypeError(f"turn pair {part!r} must be FIRST:SECOND, two different directions "
                                             f"out of {', '.join(TURN_MOTIONS)} (e.g. right:left)")
        pairs.append((first, second))
    return pairs


_turn_pairs.__name__ = "pairs"


def _run_make_turn_pool(args: argparse.Namespace) -> int:
    from motionguide.toy.turn_pool import load_truth, make_turn_pool, pool_summary

    out = make_turn_pool(
        args.out, args.num_clips, args.seed, turn_rate=args.turn_rate, truncated_share=args.truncated_share,
        mislabeled_per_turn=args.mislabeled_per_turn, defect_rate=args.defect_rate, defects=args.defects,
        pairs=args.pairs, turn_holdout=args.turn_holdout_fraction, fmt=args.formats.split(","),
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    summary = pool_summary(load_truth(out))
    print(f"wrote {summary['clips']} clips to {out} ({summary['turn_share']:.0%} turns, {summary['clean_turns']} clean "
          f"turns; caption-keyword filter precision {summary['keyword_precision']:.0%}); truth table in truth.json")
    return 0


def _add_turn_set_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=_turn_pairs, default=None,
                        help="only these turns, FIRST:SECOND comma-separated, e.g. right:left,up:right "
                             "(default: every pair of two cardinal directions)")
    parser.add_argument("--turn_holdout_fraction", type=float, default=0.25,
                        help="share of (colour, shape, pair) turns never shown (fixed seed: the same for every set)")
    parser.add_argument("--formats", type=str, default="jsonl,csv", help="metadata formats: jsonl, csv or both")
    parser.add_argument("--overwrite", action="store_true", help="replace a toy dataset already in --out")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


def _add_make_turn_pool(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(
        subparsers, "make-turn-pool", help="a fine-tuning pool where turns are rare and captions unreliable",
        description="Write a toy turn pool (videos/, gt/, metadata with the given captions, dataset.json) and its "
                    "truth table (truth.json/csv: true motion, caption kind, defect, turn frame per clip) into --out.",
    )
    parser.add_argument("--out", type=str, required=True, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--num_clips", type=int, default=600, help="clips to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw but the holdouts'")
    parser.add_argument("--turn_rate", type=float, default=0.1, help="share of clips that turn")
    parser.add_argument("--truncated_share", type=float, default=0.25,
                        help="share of turn clips captioned with their first direction only")
    parser.add_argument("--mislabeled_per_turn", type=float, default=1 / 3,
                        help="straight clips captioned with a turn, per turn clip")
    parser.add_argument("--defect_rate", type=float, default=0.2, help="share of every group with a planted defect")
    parser.add_argument("--defects", type=_names_from(DEFECTS, "defect"), default=list(DEFECTS),
                        help=f"comma-separated defect kinds (default: {','.join(DEFECTS)})")
    _add_turn_set_flags(parser)
    parser.set_defaults(func=_run_make_turn_pool)


def _run_make_turn_queries(args: argparse.Namespace) -> int:
    from motionguide.toy.turn_pool import make_turn_queries

    out = make_turn_queries(args.out, args.num_clips, args.seed, pairs=args.pairs,
                            turn_holdout=args.turn_holdout_fraction, fmt=args.formats.split(","),
                            overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote {args.num_clips} clean turn query clips to {out}")
    return 0


def _add_make_turn_queries(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, "make-turn-queries", help="a small Motive query set of clean turn clips")
    parser.add_argument("--out", type=str, required=True, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--num_clips", type=int, default=6, help="clips to write (Motive uses a handful)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random draw but the holdout's")
    _add_turn_set_flags(parser)
    parser.set_defaults(func=_run_make_turn_queries)


def _check_recipe_args(args: argparse.Namespace, counts: Sequence[str], at_least: int, weights: Sequence[str],
                       rates: Sequence[str] = (), folders: Sequence[str] = ()) -> None:
    """The toy recipes' flags, before any clip is rendered or weight read: counts >= `at_least`, weights finite
    and > 0, rates in [0, 1], input folders present, the output folder writable."""
    from motionguide.arg_checks import check_range
    from motionguide.errors import ConfigError
    from motionguide.output_paths import check_output_folder

    for name in counts:
        if getattr(args, name) < at_least:
            raise ConfigError(f"--{name} {getattr(args, name)}: must be at least {at_least}")
    for name in weights:
        check_range(f"--{name}", getattr(args, name), 0.0, low_open=True)
    for name in rates:
        check_range(f"--{name}", getattr(args, name), 0.0, 1.0)
    for name in folders:
        value = getattr(args, name)
        if value is not None and not os.path.isdir(value):
            raise ConfigError(f"--{name} {value}: no such folder; give a folder a toy recipe saved (diffusers "
                              "format)")
    check_output_folder(args.out, "--out")


def _run_train_vae(args: argparse.Namespace) -> int:
    from motionguide.toy.vae_recipe import train_toy_vae

    _check_recipe_args(args, ("frame_steps", "clip_steps"), 0, ("object_weight",), folders=("init_from",))
    if args.clip_batch < 1 or args.frame_steps + args.clip_steps < 1:
        from motionguide.errors import ConfigError

        raise ConfigError("--clip_batch must be at least 1 and --frame_steps + --clip_steps at least 1")

    train_toy_vae(args.out, frame_steps=args.frame_steps, clip_steps=args.clip_steps, seed=args.seed,
                  init_from=args.init_from, clip_batch=args.clip_batch, object_weight=args.object_weight)
    return 0


def _add_train_vae(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, "train-vae", help="train the toy model's autoencoder (CPU, ~25 min)")
    parser.add_argument("--out", type=str, required=True, help="folder for vae/ (diffusers format) and vae_report.json")
    parser.add_argument("--frame_steps", type=int, default=1200, help="single-frame steps (batch 16)")
    parser.add_argument("--clip_steps", type=int, default=450, help="17-frame clip steps")
    parser.add_argument("--clip_batch", type=int, default=4, help="clips per step in the clip phase")
    parser.add_argument("--object_weight", type=float, default=5.0, help="loss weight of object pixels")
    parser.add_argument("--init_from", type=str,
                        help="continue from a saved toy VAE folder (e.g. a second, clip-only round)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.set_defaults(func=_run_train_vae)


def _run_train_model(args: argparse.Namespace) -> int:
    from motionguide.toy.model_recipe import train_toy_transformer

    _check_recipe_args(args, ("train_steps", "train_batch_size", "pool_clips"), 1, ("learning_rate", "object_weight"),
                       rates=("partial_motion_rate",), folders=("vae", "init_from"))
    from motionguide.loading import resolve_device

    resolve_device(args.device)  # cuda on a machine without one: one line now, not after the VAE load

    train_toy_transformer(args.vae, args.out, steps=args.train_steps, batch=args.train_batch_size,
                          pool_clips=args.pool_clips, seed=args.seed, lr=args.learning_rate,
                          init_from=args.init_from, object_weight=args.object_weight, background=args.background,
                          partial_motion_rate=args.partial_motion_rate, device=args.device)
    return 0


def _add_train_model(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, "train-model", help="train the toy transformer on a trained toy VAE; "
                            "saves a WanPipeline in diffusers format")
    parser.add_argument("--vae", type=str, required=True,
                        help="folder of the trained toy VAE (e.g. assets/toy-model/vae)")
    parser.add_argument("--out", type=str, required=True, help="where the pipeline is saved")
    parser.add_argument("--train_steps", "--steps", type=int, default=1800, help="optimiser steps")
    parser.add_argument("--train_batch_size", "--batch", type=int, default=24, help="clips per step")
    parser.add_argument("--pool_clips", type=int, default=1500, help="toy clips drawn for the training pool")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--learning_rate", "--lr", type=float, default=3e-4, help="AdamW learning rate")
    parser.add_argument("--init_from", type=str, help="continue training a saved toy pipeline folder")
    parser.add_argument("--object_weight", type=float, default=1.0,
                        help="loss weight of latent pixels covered by an object (motion lives there)")
    parser.add_argument("--background", type=str, choices=("plain", "textured"), default=None,
                        help="train on one background kind only (default: both), e.g. a first curriculum stage")
    parser.add_argument("--partial_motion_rate", type=float, default=0.2,
                        help="share of clips whose motion starts late or stops early")
    parser.add_argument("--device", type=str, default="cpu",
                        help="where the transformer trains, e.g. cuda (same data and draws)")
    parser.set_defaults(func=_run_train_model)


def add_toy_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `toy make-dataset`, `toy make-turn-pool`, `toy make-turn-queries`, `toy train-vae` and
    `toy train-model` on a parent CLI's subparsers (handlers in `args.func`)."""
    toy = add_subcommand(subparsers, "toy", help="the toy world: datasets with ground truth, the toy model recipe")
    toy_commands = toy.add_subparsers(dest="toy_command", metavar="COMMAND", required=True)
    _add_make_dataset(toy_commands)
    _add_make_turn_pool(toy_commands)
    _add_make_turn_queries(toy_commands)
    _add_train_vae(toy_commands)
    _add_train_model(toy_commands)
    return toy


def build_parser() -> ArgumentParser:
    """The standalone toy CLI's parser: make-dataset, make-turn-pool, make-turn-queries, train-vae, train-model."""
    parser = ArgumentParser(prog="python -m motionguide.toy.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_make_dataset(commands)
    _add_make_turn_pool(commands)
    _add_make_turn_queries(commands)
    _add_train_vae(commands)
    _add_train_model(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one toy command; returns its exit code, 2 with one line on stderr for a user error."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
