"""Entry point of `train/finetune.py`: `--config FILE` plus `--key value` overrides of any config field.

The whole config is parsed and checked (types, choices, method and scheduler names) before the trainer is
imported, so a mistake costs a second, not a model load.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any, Sequence

from ..cli_args import USER_ERRORS, ArgumentParser, release_process_group, run_command
from .config import TrainConfig, build_parser

PROG = "train/finetune.py"


def build_help_parser():
    """The parser whose `--help` lists `--config` and every TrainConfig field (type, default, help)."""
    return build_parser(prog=PROG, with_config=True)


def _load_config(argv: Sequence[str]) -> TrainConfig:
    """`--config FILE` and the overrides after it -> a validated TrainConfig; old keys warned about in one line each."""
    locate = ArgumentParser(prog=PROG, add_help=False)
    locate.add_argument("--config", type=str, help="YAML training config")
    args, rest = locate.parse_known_args(list(argv))
    if not args.config:
        raise ValueError("give the training config: --config FILE (e.g. configs/toy.yaml); --help lists every flag")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        config = TrainConfig.load(args.config, rest)
    for warning in caught:
        if issubclass(warning.category, FutureWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return config


def _run(argv: Sequence[str]) -> int:
    if any(token in ("-h", "--help") for token in argv):
        print(build_help_parser().format_help())
        return 0
    config = _load_config(argv)
    from .loop import Trainer

    summary: dict[str, Any] = Trainer(config).run()
    if summary.get("lora") or summary.get("transformer"):
        print(json.dumps({k: summary[k] for k in ("steps", "clips", "lora", "transformer") if k in summary}))
    return 0


def _is_first_rank() -> bool:
    """True in a single process and in rank 0 of a launch (torchrun / `accelerate launch` set RANK)."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def main(argv: Sequence[str] | None = None) -> int:
    """Load the config with overrides and run the fine-tuning; returns 0, or 2 with one line on a user error.

    Under a launcher every rank finds the same mistake: only rank 0 prints the line (each rank exits 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if _is_first_rank():
        return run_command(_run, argv)
    try:
        code = int(_run(argv) or 0)
    except USER_ERRORS:
        return 2
    release_process_group(exit_code=code)
    return code


if __name__ == "__main__":  # `python -m` / `accelerate launch -m`: the demo from a plain install
    raise SystemExit(main())
