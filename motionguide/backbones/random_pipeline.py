"""`motionguide random-pipeline`: a loadable diffusers pipeline folder with a released model's architecture and
random weights, for running the real-model code paths offline (CPU tests, GPU smoke runs) without a download.

    motionguide random-pipeline --like wan2.1-t2v-1.3b --out models/wan-random --dtype bfloat16

Each family's recipe lives in its folder (`wan/reference.py`, `cogvideox/reference.py`,
`hunyuanvideo/reference.py`); this module only
names them and parses the flags.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from ..cli_args import ArgumentParser, add_subcommand
from .cogvideox.reference import COGVIDEOX_2B_PIPELINE, COGVIDEOX_5B_I2V_PIPELINE, COGVIDEOX_5B_PIPELINE
from .hunyuanvideo.reference import HUNYUANVIDEO_PIPELINE
from .random_weights import DTYPES, ReferencePipeline, write_reference_pipeline
from .wan.reference import (WAN21_I2V_14B_PIPELINE, WAN21_T2V_1_3B_PIPELINE, WAN22_I2V_A14B_PIPELINE,
                             WAN22_T2V_A14B_PIPELINE, WAN22_TI2V_5B_PIPELINE)

__all__ = ["REFERENCE_PIPELINES", "add_random_pipeline_command", "reference_pipeline", "write_random_pipeline"]

#: the released pipelines a random copy can be made of, by `--like` name
REFERENCE_PIPELINES: dict[str, ReferencePipeline] = {
    recipe.name: recipe for recipe in (WAN21_T2V_1_3B_PIPELINE, WAN22_TI2V_5B_PIPELINE, WAN22_T2V_A14B_PIPELINE,
                                       WAN21_I2V_14B_PIPELINE, WAN22_I2V_A14B_PIPELINE,
                                       COGVIDEOX_2B_PIPELINE, COGVIDEOX_5B_PIPELINE, COGVIDEOX_5B_I2V_PIPELINE,
                                       HUNYUANVIDEO_PIPELINE)
}


def reference_pipeline(name: str) -> ReferencePipeline:
    """The recipe called `name` (a ValueError listing the known ones otherwise)."""
    if name not in REFERENCE_PIPELINES:
        raise ValueError(f"--like {name!r}: choose one of {', '.join(REFERENCE_PIPELINES)}")
    return REFERENCE_PIPELINES[name]


def write_random_pipeline(like: str, out: str, **options: Any) -> dict[str, Any]:
    """:func:`~motionguide.backbones.random_weights.write_reference_pipeline` for the recipe named `like`.

        write_random_pipeline("wan2.1-t2v-1.3b", "models/wan-random", num_layers=1, text_layers=1)
        pipe = DiffusionPipeline.from_pretrained("models/wan-random", torch_dtype=torch.bfloat16)
    """
    return write_reference_pipeline(reference_pipeline(like), out, **options)


def _read_vocabulary(paths: Sequence[str] | None) -> list[str]:
    """Whitespace-separated words of each text file (e.g. the captions a run will use)."""
    from pathlib import Path

    words: list[str] = []
    for path in paths or ():
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"--vocabulary {path}: no such file")
        words.extend(file.read_text().split())
    return words


def _run(args: argparse.Namespace) -> int:
    write_random_pipeline(args.like, args.out, num_layers=args.num_layers, text_layers=args.text_layers,
                          dtype=args.dtype, seed=args.seed, vocabulary=_read_vocabulary(args.vocabulary),
                          overwrite=args.overwrite)
    return 0


def add_random_pipeline_command(subparsers: argparse._SubParsersAction) -> ArgumentParser:
    """Register the `random-pipeline` subcommand on `subparsers`; returns its parser."""
    p = add_subcommand(subparsers, "random-pipeline",
                       help="write a diffusers pipeline folder with a released model's architecture and random "
                            "weights (offline; for testing the real-model paths)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--like", required=True, choices=list(REFERENCE_PIPELINES),
                   help="the released pipeline whose architecture, scheduler and text width to copy")
    p.add_argument("--out", required=True, type=str,
                   help="folder to write (loadable with DiffusionPipeline.from_pretrained)")
    p.add_argument("--num_layers", type=int, default=None,
                   help="transformer blocks (default: the released depth, 30 for both; fewer for quick tests)")
    p.add_argument("--text_layers", type=int, default=2,
                   help="text encoder layers (the released encoders have 24; the width stays the released one)")
    p.add_argument("--dtype", choices=list(DTYPES), default="bfloat16",
                   help="weight dtype (the modules diffusers keeps in fp32 stay fp32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--vocabulary", action="append", default=None, metavar="FILE",
                   help="text file whose words join the word-level tokenizer's vocabulary (repeatable; other "
                        "words become <unk>)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (only once the new one is "
                                                             "complete)")
    p.set_defaults(func=_run)
    return p
