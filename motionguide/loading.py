"""Loading a stock diffusers pipeline the way a GPU user runs it: in bf16, on the accelerator, checked.

Why one function: training, `curate`, `generate` and the benchmarks must load a model identically, or a LoRA
trained in one dtype is scored or sampled in another. Weights are loaded with `dtype` (formerly `torch_dtype`) (a dict per
component when the user overrides one), so diffusers itself decides which modules stay fp32
(`_keep_in_fp32_modules`), and the pipeline's components are checked against each other (latent channels,
text width) before any data is touched, instead of at the first forward after a whole latent cache was built.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from .errors import ConfigError

__all__ = ["DTYPES", "COMPONENTS", "PipelinePlacement", "parse_dtype", "dtype_of_mixed_precision",
           "resolve_device", "load_pipeline", "component_dtypes_of", "majority_dtype", "parameter_dtype_counts",
           "expert_lora_folder", "load_lora_into_pipeline"]

#: accepted spellings of a dtype on the command line and in configs
DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32, "no": torch.float32,
}
#: the pipeline components whose dtype a user may set on their own
COMPONENTS = ("transformer", "vae", "text_encoder")


def parse_dtype(value: str | torch.dtype | None, what: str = "--dtype") -> torch.dtype | None:
    """A torch dtype from 'bf16' / 'fp16' / 'fp32' (and their long names); None stays None."""
    if value is None or isinstance(value, torch.dtype):
        return value
    try:
        return DTYPES[str(value).strip().lower()]
    except KeyError:
        raise ConfigError(f"{what} {value!r}: not a dtype; use one of bf16, fp16, fp32") from None


def dtype_of_mixed_precision(mixed_precision: str | None) -> torch.dtype:
    """The dtype frozen weights are loaded in for accelerate's `--mixed_precision` (no -> fp32)."""
    return parse_dtype(mixed_precision or "no", "mixed_precision") or torch.float32


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' / None -> the accelerator when there is one (cuda, then mps), else the CPU; other names as given,
    checked: asking for cuda on a machine without it is a one-line error, not a crash inside the first `.to`."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this machine has no CUDA device; use --device cpu (or auto)")
    return resolved


@dataclass(frozen=True)
class PipelinePlacement:
    """Where and in which dtype a pipeline runs.

    `dtype` is every component's dtype unless `component_dtypes` names one (keys: transformer, vae,
    text_encoder); None keeps what the checkpoint stores. `enable_model_cpu_offload` keeps each component on
    the CPU until the pipeline calls it (diffusers' model offload: the text encoder leaves the GPU once the
    prompt is encoded). VAE tiling / slicing bound the decoder's and encoder's memory at long or large videos.
    """

    dtype: torch.dtype | None = None
    component_dtypes: Mapping[str, torch.dtype] = field(default_factory=dict)
    device: str | None = None
    enable_model_cpu_offload: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.component_dtypes) - set(COMPONENTS))
        if unknown:
            raise ConfigError(f"component dtype for {', '.join(unknown)}: only {', '.join(COMPONENTS)} can be set")

    def torch_dtype_argument(self) -> torch.dtype | dict[str, torch.dtype] | None:
        """What `from_pretrained(dtype=...)` gets: one dtype, or a dict when a component differs."""
        overrides = {k: v for k, v in self.component_dtypes.items() if v is not None}
        if not overrides:
            return self.dtype
        return {"default": self.dtype or torch.float32, **overrides}


def parameter_dtype_counts(module: torch.nn.Module) -> dict[torch.dtype, int]:
    """How many floating parameter values `module` holds in each dtype (in the order the dtypes first occur)."""
    counts: dict[torch.dtype, int] = {}
    for p in module.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return counts


def majority_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype holding most of `module`'s floating weights (None without any). Not the first parameter's:
    a bf16 Wan transformer starts with a module diffusers keeps in fp32."""
    counts = parameter_dtype_counts(module)
    return max(counts, key=counts.get) if counts else None


def component_dtypes_of(pipe: Any) -> dict[str, torch.dtype]:
    """The dtype holding most of each torch module's floating weights (a bf16 transformer keeps a few small
    modules in fp32 by diffusers' choice; this says bf16 for it), for reports and tests."""
    found = {}
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            dtype = majority_dtype(module)
            if dtype is not None:
                found[name] = dtype
    return found


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_model_reference(model: str | os.PathLike) -> None:
    """A model that is neither an existing folder nor shaped like a hub id (owner/name) fails here, naming
    the path, instead of deep inside the hub client with a message about offline mode."""
    text = str(model)
    if os.path.isdir(os.path.expanduser(text)):
        if not os.path.isfile(os.path.join(os.path.expanduser(text), "model_index.json")):
            raise ConfigError(f"model {text}: no model_index.json in this folder; give the pipeline folder that "
                              "save_pretrained wrote (model_index.json, transformer/, vae/, ...)")
        return
    if os.path.exists(text):
        raise ConfigError(f"model {text}: a file, not a pipeline folder; give the folder holding model_index.json")
    if not _HUB_ID.fullmatch(text):
        raise ConfigError(f"model {text}: no such folder; give a local pipeline folder or a hub id like "
                          "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")


def load_pipeline(model: str | os.PathLike, placement: PipelinePlacement | None = None, *,
                  lora: str | os.PathLike | None = None, lora_scale: float = 1.0, check: bool = True,
                  **from_pretrained_kwargs: Any) -> Any:
    """The stock pipeline of `model` (folder or hub id) in `placement`'s dtypes and on its device.

    A LoRA, when given, is loaded through the pipeline's own `load_lora_weights`, so what runs is what
    diffusers users get from the same file. With `check`, the components are checked against each other
    (`VideoBackbone.check_components`) right after loading.
    """
    from diffusers import DiffusionPipeline

    placement = placement or PipelinePlacement()
    _check_model_reference(model)
    torch_dtype = placement.torch_dtype_argument()
    kwargs = dict(from_pretrained_kwargs)
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype  # diffusers' name since 0.36 (`torch_dtype` is deprecated)
    try:
        pipe = DiffusionPipeline.from_pretrained(str(model), **kwargs)
    except OSError as exc:  # a hub id that is misspelt, private, or not cached offline: diffusers' EnvironmentError
        if type(exc) is not OSError and exc.__class__.__module__.startswith("builtins"):
            raise  # FileNotFoundError and kin: already one line under the CLIs' error policy
        first = " ".join(str(exc).split())[:300]
        raise ConfigError(f"model {model}: cannot be loaded ({first}); check the name, or download it once "
                          "online (without HF_HUB_OFFLINE)") from exc
    if check:
        from .backbones import backbone_for

        backbone_for(pipe).check_components()
    if lora:
        try:
            load_lora_into_pipeline(pipe, lora, adapter_name="motionguide")
        except (ValueError, RuntimeError, KeyError, OSError) as error:  # shapes or names of another model
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise ConfigError(f"LoRA {lora} does not fit {model} ({first}); pass a LoRA trained on this model "
                              "(its pytorch_lora_weights.safetensors or folder)") from error
        pipe.set_adapters(["motionguide"], [lora_scale])
    vae = getattr(pipe, "vae", None)
    if placement.vae_tiling and vae is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if placement.vae_slicing and vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if placement.enable_model_cpu_offload:
        device = resolve_device(placement.device)
        if device.type == "cpu":
            raise ConfigError("--enable_model_cpu_offload keeps components on the CPU until a GPU needs them; "
                              "it needs --device cuda (or auto on a machine with a GPU)")
        pipe.enable_model_cpu_offload(device=device)
    elif placement.device is not None:
        pipe.to(resolve_device(placement.device))
    return pipe


# ---------------------------------------------------------------------- LoRA files of a several-expert model
def expert_lora_folder(root: str | os.PathLike, expert_name: str) -> "os.PathLike":
    """Where the trainer saves the LoRA of pipeline component `expert_name`: `root` for `transformer` (what a
    plain `pipe.load_lora_weights(root)` loads), `root/<name>` for a further expert (`transformer_2`, Wan2.2-T2V-
    A14B's low-noise expert: `pipe.load_lora_weights(root / "transformer_2", load_into_transformer_2=True)`).

    Why a subfolder and not a second file next to the first: diffusers guesses the file of a folder, and a
    folder holding only a low-noise LoRA would then be loaded into the high-noise expert without a word."""
    from pathlib import Path

    return Path(root) if expert_name == "transformer" else Path(root) / expert_name


def load_lora_into_pipeline(pipe: Any, lora: str | os.PathLike, adapter_name: str | None = None) -> list[str]:
    """Load a LoRA the trainer saved into each expert it has weights for, through the stock
    `load_lora_weights` (with `load_into_transformer_2=True` for `transformer_2`); returns the components loaded.

    `lora` is a `.safetensors` file (the `transformer`'s) or a folder laid out by :func:`expert_lora_folder`.
    ValueError when the LoRA holds weights for an expert the pipeline lacks, or none for any."""
    from pathlib import Path

    path = Path(lora)
    if path.is_file():
        pipe.load_lora_weights(str(path), adapter_name=adapter_name)
        return ["transformer"]
    loaded = []
    if any(path.glob("*.safetensors")):
        pipe.load_lora_weights(str(path), adapter_name=adapter_name)
        loaded.append("transformer")
    for name in ("transformer_2",):
        folder = expert_lora_folder(path, name)
        if not any(folder.glob("*.safetensors")):
            continue
        if getattr(pipe, name, None) is None:
            raise ValueError(f"{folder} holds a LoRA for {name}, which {type(pipe).__name__} does not have "
                             "(a LoRA of a two-expert Wan2.2-T2V-A14B model)")
        pipe.load_lora_weights(str(folder), adapter_name=adapter_name, load_into_transformer_2=True)
        loaded.append(name)
    if not loaded:
        raise ValueError(f"{path} holds no .safetensors LoRA file")
    return loaded
