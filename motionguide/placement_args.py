"""The `--device` / `--dtype` flags shared by the commands that load a pipeline to run it (`sample/generate.py`,
`motionguide track`, `motionguide saliency`, `motionguide analyze-layers`), resolved into a `PipelinePlacement`.

Why "auto" for both: a GPU user should get the accelerator in bf16 without flags, while the toy model on the CPU
stays in fp32, where its numbers are bit-identical to every earlier run. Resolving happens before the model
loads, so `--device cuda` on a machine without CUDA, or model offload without a GPU, is a one-line error that
costs no loading time.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from .errors import ConfigError
from .loading import PipelinePlacement, parse_dtype, resolve_device

__all__ = ["DTYPE_CHOICES", "add_placement_arguments", "placement_from_args", "resolve_dtype"]

#: what `--dtype` accepts (long torch names too, as `analyze-layers` took them before)
DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32", "bfloat16", "float16", "float32")


def add_placement_arguments(parser: Any, offload: bool = False) -> None:
    """Add `--device`, `--dtype` and, with `offload`, `--enable_model_cpu_offload`, `--vae_tiling` and
    `--vae_slicing` to `parser` (an `ArgumentParser` of `motionguide.cli_args` or one of its groups)."""
    parser.add_argument("--device", type=str, default="auto",
                        help="auto (the accelerator when there is one: cuda, then mps; else cpu), cpu, cuda or "
                             "cuda:N (default: auto)")
    parser.add_argument("--dtype", type=str, default="auto", choices=DTYPE_CHOICES,
                        help="weights' dtype: auto is bf16 on an accelerator and fp32 on the CPU (default: auto); "
                             "modules diffusers keeps in fp32 stay fp32")
    if offload:
        parser.add_argument("--enable_model_cpu_offload", action="store_true",
                            help="keep each component on the CPU until the pipeline calls it (diffusers' model "
                                 "offload: the text encoder leaves the GPU once the prompt is encoded); needs a GPU")
        parser.add_argument("--vae_tiling", action="store_true",
                            help="decode the video tile by tile (bounds the VAE's memory at large sizes)")
        parser.add_argument("--vae_slicing", action="store_true",
                            help="decode one video of the batch at a time")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`auto` (or None) -> bf16 on an accelerator, fp32 on the CPU; other names as `parse_dtype` reads them."""
    if dtype is None or dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return parse_dtype(dtype)


def placement_from_args(args: argparse.Namespace) -> PipelinePlacement:
    """The placement the flags ask for, checked (call it before loading the model).

    Model offload computes on the accelerator, so `--dtype auto` then means bf16, and `--device cpu` (or no GPU
    at all) is refused here rather than after the weights are read."""
    device = resolve_device(getattr(args, "device", None))
    offload = bool(getattr(args, "enable_model_cpu_offload", False))
    if offload and device.type == "cpu":
        raise ConfigError("--enable_model_cpu_offload keeps components on the CPU until a GPU needs them; this run "
                          "has no GPU (--device resolves to cpu): drop the flag or use --device cuda on a GPU machine")
    return PipelinePlacement(
        dtype=resolve_dtype(getattr(args, "dtype", None), device),
        device=str(device),
        enable_model_cpu_offload=offload,
        vae_tiling=bool(getattr(args, "vae_tiling", False)),
        vae_slicing=bool(getattr(args, "vae_slicing", False)),
    )
