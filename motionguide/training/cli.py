"""Entry point of `train/finetune.py`: `--config FILE` plus `--key value` overrides of any config field."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ..errors import MotionGuideError
from .config import TrainConfig


def main(argv: Sequence[str] | None = None) -> int:
    """Load the config with overrides and run the fine-tuning; returns 0, or 2 on a config or file error."""
    parser = argparse.ArgumentParser(prog="train/finetune.py", description=__doc__,
                                     epilog="Any TrainConfig field may follow as --field value: "
                                            + ", ".join(TrainConfig.field_names()))
    parser.add_argument("--config", required=True, help="YAML training config (e.g. configs/toy.yaml)")
    args, rest = parser.parse_known_args(argv)
    try:
        config = TrainConfig.load(args.config, rest)
        from .loop import Trainer

        summary = Trainer(config).run()
    except (MotionGuideError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary.get("lora") or summary.get("transformer"):
        print(json.dumps({k: summary[k] for k in ("steps", "clips", "lora", "transformer") if k in summary}))
    return 0
