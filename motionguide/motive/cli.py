"""`motionguide curate`: the Motive attribution pass from the command line (single process or torchrun)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from .run import MODES, AttributionConfig, run_attribution


def _run(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(AttributionConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.blocks:
        values["blocks"] = [int(b) for b in args.blocks.split(",")]
    values["use_mask"] = not args.no_mask
    result = run_attribution(AttributionConfig(**values))
    if result is not None:
        print(json.dumps({"selection": f"{args.out}/selection.json", "selected": len(result["selected_ids"]),
                          "of": len(result["train_ids"]), "queries": len(result["query_ids"]),
                          "counts": result["counts"]}))
    return 0


def add_curate_command(subparsers: argparse._SubParsersAction) -> None:
    """Register the `curate` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser("curate", help="Motive: score fine-tuning clips by motion-weighted gradient "
                              "influence on query clips and select the top fraction")
    p.add_argument("--model", required=True, help="pipeline folder or hub id (the base you will fine-tune)")
    p.add_argument("--data", required=True, help="training dataset folder (metadata.jsonl/csv or video+txt)")
    p.add_argument("--queries", required=True, help="query clips showing the motion you want (same layouts)")
    p.add_argument("--out", required=True, help="folder for features, selection.json and scores")
    p.add_argument("--num_frames", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--max_sequence_length", type=int)
    p.add_argument("--cache_dir", help="latent cache folder (share it with training)")
    p.add_argument("--timestep", type=float, help="shared timestep on the 0..1000 scale (default 751)")
    p.add_argument("--seed", type=int)
    p.add_argument("--projector", help="fastfood_blockwise (default), fastfood, sparse_jl, dense_gaussian")
    p.add_argument("--dim", type=int, help="feature dimension (default 512)")
    p.add_argument("--params", help="all (default, as in the paper), lora, blocks")
    p.add_argument("--blocks", help="with --params blocks: comma-separated block indices")
    p.add_argument("--no_mask", action="store_true", help="the paper's 'w/o MM' baseline: unweighted loss")
    p.add_argument("--loss", choices=["motion_weighted", "temporal_difference"],
                   help="motion_weighted (default, the paper) or temporal_difference (a deviation: the change of "
                        "the prediction error between latent frames; appearance errors cancel)")
    p.add_argument("--flow", help="dis (default), farneback, raft, raft_large, framediff")
    p.add_argument("--flow_weights", help="local RAFT weights file")
    p.add_argument("--mask_anchor", choices=["consecutive", "anchored"])
    p.add_argument("--mask_temporal", choices=["mean", "max", "trilinear"])
    p.add_argument("--mask_gate", choices=["change", "none"])
    p.add_argument("--fraction", type=float, help="share of clips to keep (default 0.1)")
    p.add_argument("--percentile", type=float, help="per-query vote threshold percentile (default 90)")
    p.add_argument("--mode", choices=MODES, help="filter (default: keep the top --fraction), reweight (sampling "
                   "weights for every clip), prune-negative (drop clips with a negative mean score)")
    p.add_argument("--reweight_mode", choices=["votes", "zscore"],
                   help="with --mode reweight: weights from the vote share (default) or the z-scored mean score")
    p.add_argument("--floor", type=float, help="with --mode reweight: the smallest weight (default 0.05)")
    p.add_argument("--lora", help="a saved LoRA (folder or .safetensors) loaded for the pass; --params lora "
                   "differentiates only its weights")
    p.add_argument("--flush_every", type=int, help="clips per feature-store part (default 8)")
    p.set_defaults(func=_run)
