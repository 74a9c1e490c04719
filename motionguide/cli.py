"""`motionguide` console entry point: one subcommand per capability, each in its own module.

Commands register lazily so `motionguide --help` stays fast and a missing optional part never breaks the rest.
Every command speaks one dialect (`motionguide.cli_args`): snake_case flags that also answer to their kebab
spelling, per-flag help with type and default, and one error policy (one line on stderr, exit code 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .cli_args import ArgumentParser, run_command


def _cmd_shapes(args: argparse.Namespace) -> int:
    from .backbones.shapes import footprint_table, real_size_footprints

    rows = real_size_footprints()
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(footprint_table(rows))
    return 0


def _cmd_profiles(args: argparse.Namespace) -> int:
    import yaml

    from .backbones import LayerProfile, load_profile, shipped_profiles

    if args.action == "list":
        for name, path in shipped_profiles().items():
            p = LayerProfile.load(path)
            flags = [s for s in ("tracking", "guidance", "imap") if getattr(p, s) is not None and getattr(p, s).provisional]
            note = f"  (provisional: {', '.join(flags)})" if flags else ""
            print(f"{name:20s} {p.family:10s} {p.num_blocks} blocks x {p.num_heads} heads{note}")
        return 0
    if not args.target:
        raise ValueError(f"profiles {args.action}: give a profile name or a YAML path")
    profile = load_profile(args.target)  # raises ConfigError naming the file and key on a bad profile
    if args.action == "show":
        print(yaml.safe_dump(profile.to_dict(), sort_keys=False))
    else:
        print(f"{args.target}: OK ({profile.name}, {profile.family}, {profile.num_blocks} blocks)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.out, quick=args.quick, model=args.model, config=args.config, story=args.story)


def build_parser() -> ArgumentParser:
    """The `motionguide` argument parser with every subcommand registered."""
    parser = ArgumentParser(prog="motionguide", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("shapes", help="real-size token grids and attention footprints (meta device, no weights)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    p.set_defaults(func=_cmd_shapes)

    p = sub.add_parser("profiles", help="list, show or check layer profiles")
    p.add_argument("action", choices=["list", "show", "check"], help="list the shipped profiles, show one, or check "
                   "one (a name or a YAML file) for errors")
    p.add_argument("target", nargs="?", help="a shipped profile name or a YAML path")
    p.set_defaults(func=_cmd_profiles)

    p = sub.add_parser("demo", help="the main job on the toy model (Motive-curated LoRA fine-tune with the IMAP "
                                    "monitor, guided sampling) and its report; by default it teaches the model a "
                                    "turn it lacks")
    p.add_argument("--out", type=str, default="demo-output", help="folder for the report and its files")
    p.add_argument("--model", type=str, default=None, help="pipeline folder to fine-tune (default: assets/toy-model)")
    p.add_argument("--config", type=str, default=None,
                   help="training config YAML (default: the story's, configs/toy-turn.yaml or configs/toy.yaml "
                        "of the source checkout)")
    p.add_argument("--story", type=str, default="turn", choices=["turn", "straight"],
                   help="turn: teach the toy model a motion it lacks (a turn), Motive vs a random 10%%; straight: "
                        "Motive on the straight motions it already has (the first demo)")
    p.add_argument("--quick", action="store_true", help="the same path at a reduced size (used by the tests)")
    p.set_defaults(func=_cmd_demo)

    from .backbones.random_pipeline import add_random_pipeline_command
    from .motive.cli import add_curate_command
    from .correspondence.cli import add_correspondence_commands
    from .saliency.cli import add_saliency_command

    add_curate_command(sub)
    add_correspondence_commands(sub)
    add_saliency_command(sub)
    add_random_pipeline_command(sub)
    try:
        from .toy.cli import add_toy_commands
    except ImportError as exc:  # pragma: no cover - only when the toy package is broken
        print(f"warning: toy commands unavailable ({exc})", file=sys.stderr)
    else:
        add_toy_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit code, 2 with a one-line message on stderr for a user error."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
