"""`motionguide curate`: the Motive attribution pass from the command line (single process or torchrun)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from ..cli_args import ArgumentParser, parse_index_list
from ..data.dataset import RESIZE_MODES
from ..data.readers import VIDEO_READERS
from .attributor import run_attribution
from .config import MotiveConfig
from .featurizer import LOSSES, PARAM_SCOPES
from .flow import ANCHORS, FLOW_NAMES
from .masks import GATES, TEMPORAL_MODES
from .projectors import PROJECTORS
from .scoring import REWEIGHT_MODES
from .selection import MODES

__all__ = ["add_curate_command", "config_from_args"]

DEPRECATED_FLAGS = {"--cache_dir": "--latent_cache_dir", "--cache-dir": "--latent_cache_dir"}


def config_from_args(args: argparse.Namespace) -> MotiveConfig:
    """The MotiveConfig the parsed flags describe (unset flags keep the config's defaults)."""
    fields = set(MotiveConfig.field_names())
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.blocks:
        values["blocks"] = parse_index_list(args.blocks, "blocks")
    values["use_mask"] = not args.no_mask
    return MotiveConfig(**values)


def _run(args: argparse.Namespace) -> int:
    result = run_attribution(config_from_args(args))
    if result is not None:
        print(json.dumps({"selection": f"{args.out}/selection.json", "selected": len(result["selected_ids"]),
                          "of": len(result["train_ids"]), "queries": len(result["query_ids"]),
                          "counts": result["counts"]}))
    return 0


class _DeprecatedFlag(argparse.Action):
    """Stores into the new flag's destination and says which flag to use instead."""

    def __call__(self, parser, namespace, values, option_string=None):
        new = DEPRECATED_FLAGS.get(option_string, self.dest)
        message = f"{option_string} is deprecated; use {new}"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        print(f"warning: {message}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_curate_command(subparsers: argparse._SubParsersAction) -> ArgumentParser:
    """Register the `curate` subcommand and its options on `subparsers`; returns its parser."""
    plain = subparsers._parser_class  # a plain argparse parent still gets the one dialect for this command
    if not issubclass(plain, ArgumentParser):
        subparsers._parser_class = ArgumentParser
    try:
        p = subparsers.add_parser(
            "curate", help="Motive: score fine-tuning clips by motion-weighted gradient influence on query clips "
            "and select the top fraction", description="Motive (Wu et al., arXiv 2601.08828): featurise every "
            "training and query clip, score, select; writes selection.json, scores.npy and report.md into --out.")
    finally:
        subparsers._parser_class = plain
    defaults = MotiveConfig(model="", data="", queries="", out="")
    p.add_argument("--model", required=True, help="pipeline folder or hub id (the base you will fine-tune)")
    p.add_argument("--data", required=True, help="training dataset folder (metadata.jsonl/csv or video+txt)")
    p.add_argument("--queries", required=True, help="query clips showing the motion you want (same layouts and "
                   "columns as --data); each needs a caption and at least a training clip's frames (--num_frames "
                   "samples every --frame_stride frames), checked before the model loads")
    p.add_argument("--out", required=True, help="folder for features, selection.json and scores")
    p.add_argument("--num_frames", type=int, help=f"frames per clip (default {defaults.num_frames})")
    p.add_argument("--height", type=int, help=f"clip height in pixels (default {defaults.height})")
    p.add_argument("--width", type=int, help=f"clip width in pixels (default {defaults.width})")
    p.add_argument("--max_sequence_length", type=int,
                   help="prompt tokens (default: the model's own: Wan 512, CogVideoX 226, the toy model 16)")
    p.add_argument("--frame_stride", type=int,
                   help=f"take every n-th frame, as in training (default {defaults.frame_stride})")
    p.add_argument("--target_fps", type=float, help="resample every video in time to this frame rate before "
                   "--frame_stride and --num_frames pick frames, as in training (default: each video's own)")
    p.add_argument("--resize_mode", choices=RESIZE_MODES,
                   help=f"center_crop (crop to the aspect ratio, then scale) or resize (stretch); "
                        f"default {defaults.resize_mode}")
    p.add_argument("--buckets", help="resolution-and-length buckets as in training, e.g. 17x480x832,17x832x480 "
                   "(default: every clip at --num_frames x --height x --width)")
    p.add_argument("--caption_column", help=f"caption column (jsonl key) of metadata.csv / .jsonl, for --data "
                   f"and --queries (default {defaults.caption_column}; DiffSynth-Studio's CSV: prompt)")
    p.add_argument("--video_column", help=f"video path column (jsonl key) of metadata.csv / .jsonl, for --data "
                   f"and --queries (default {defaults.video_column}; DiffSynth-Studio's CSV: video)")
    p.add_argument("--video_reader", choices=VIDEO_READERS,
                   help="auto (default: decord when installed, else PyAV), decord or pyav")
    p.add_argument("--latent_cache_dir", help="latent cache folder, shareable with training (default <out>/cache)")
    p.add_argument("--cache_dir", dest="latent_cache_dir", action=_DeprecatedFlag,
                   help="deprecated spelling of --latent_cache_dir")
    p.add_argument("--timestep", type=float,
                   help=f"shared timestep on the 0..1000 scale (default {defaults.timestep:g})")
    p.add_argument("--seed", type=int, help=f"seed of the shared noise and the projector (default {defaults.seed})")
    p.add_argument("--projector", choices=PROJECTORS,
                   help=f"gradient projector (default {defaults.projector})")
    p.add_argument("--dim", type=int, help=f"feature dimension (default {defaults.dim})")
    p.add_argument("--params", choices=PARAM_SCOPES,
                   help="which parameters' gradients: all (default, as in the paper), lora, blocks")
    p.add_argument("--blocks", help="with --params blocks: block indices, e.g. 10-12 or 10,11,12")
    p.add_argument("--no_mask", action="store_true", help="the paper's 'w/o MM' baseline: unweighted loss")
    p.add_argument("--loss", choices=LOSSES,
                   help="motion_weighted (default, the paper) or temporal_difference (a deviation: the change of "
                        "the prediction error between latent frames; appearance errors cancel)")
    p.add_argument("--flow", choices=[*FLOW_NAMES, "raft_small"],
                   help=f"flow estimator of the motion mask (default {defaults.flow})")
    p.add_argument("--flow_weights", help="local RAFT weights file")
    p.add_argument("--mask_anchor", choices=ANCHORS,
                   help=f"flow pairs of the mask (default {defaults.mask_anchor})")
    p.add_argument("--mask_temporal", choices=TEMPORAL_MODES,
                   help=f"pixel frames -> latent frames (default {defaults.mask_temporal})")
    p.add_argument("--mask_gate", choices=GATES,
                   help=f"zero flow far from intensity changes (default {defaults.mask_gate})")
    p.add_argument("--fraction", type=float, help=f"share of clips to keep (default {defaults.fraction})")
    p.add_argument("--percentile", type=float,
                   help=f"per-query vote threshold percentile (default {defaults.percentile:g})")
    p.add_argument("--mode", choices=MODES, help="filter (default: keep the top --fraction), reweight (sampling "
                   "weights for every clip), prune-negative (drop clips with a negative mean score)")
    p.add_argument("--reweight_mode", choices=REWEIGHT_MODES,
                   help="with --mode reweight: weights from the vote share (default) or the z-scored mean score")
    p.add_argument("--floor", type=float, help=f"with --mode reweight: the smallest weight (default {defaults.floor})")
    p.add_argument("--lora", help="a saved LoRA (folder or .safetensors) loaded for the pass; --params lora "
                   "differentiates only its weights")
    p.add_argument("--flush_every", type=int, help=f"clips per feature-store part (default {defaults.flush_every})")
    placement = p.add_argument_group("placement", "where and in which dtype the pass runs")
    placement.add_argument("--device", help="auto (default: the GPU when there is one, each torchrun rank its "
                           "LOCAL_RANK's), cpu, cuda or cuda:N")
    placement.add_argument("--dtype", help="dtype of the frozen weights: bf16, fp16 or fp32 (default: as the "
                           "checkpoint stores them); gradients are projected in fp32 whatever it is")
    placement.add_argument("--gradient_checkpointing", action="store_true", default=None,
                           help="recompute each block's activations in backward: the same gradients, much less "
                           "activation memory (default off)")
    placement.add_argument("--enable_model_cpu_offload", action="store_true", default=None,
                           help="diffusers' model offload: each component waits on the CPU until it runs (needs "
                           "a GPU; default off)")
    placement.add_argument("--vae_tiling", action="store_true", default=None,
                           help="encode clips tile by tile (bounded VAE memory at large sizes; default off)")
    placement.add_argument("--projector_cache_mb", help="MiB of projector random state kept on the gradients' "
                           "device instead of regenerated for every clip: auto (default: 40%% of free GPU "
                           "memory, 25%% of available host memory) or a number; never changes a feature")
    placement.add_argument("--projector_rng", choices=("auto", "cpu"), help="where the projector's random state "
                           "is generated: auto (default: on the GPU when the gradients are there: much faster, but "
                           "another random stream, so scores are reproducible per device type) or cpu (the same "
                           "features on every machine)")
    placement.add_argument("--process_group_timeout_s", type=float, help="timeout of every collective of the "
                           f"process group the pass creates under torchrun (default {defaults.process_group_timeout_s:g} s)")
    p.set_defaults(func=_run)
    return p
