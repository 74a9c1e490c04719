"""What the loop needs to know about sharded training (DeepSpeed ZeRO-2/3, FSDP) and lean checkpoints.

- ZeRO-3 partitions every `transformers` model loaded while accelerate's DeepSpeed config is registered, so the
  frozen text encoder would be split across ranks and then called outside any engine (`'weight' must be 2-D`).
  `frozen_components_unpartitioned` loads the pipeline without that registration: only the transformer handed
  to `accelerator.prepare` is partitioned (by `deepspeed.initialize`).
- Partitioned weights are read whole inside `gathered` (a collective: every rank enters it), and a sharded
  transformer's forwards must run on every rank (each layer's all-gather needs every rank), which
  `runs_on_every_rank` tells sampling and probes.
- Checkpoints hold the trainable weights (LoRA, or all weights for full fine-tuning), the optimiser, the
  LR schedule and the RNG states, never the frozen transformer: `register_lean_checkpoint_hooks` for
  single-process / DDP runs, `save_state_options` / `load_state_options` for the DeepSpeed engine.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ..errors import ConfigError
from .lora import lora_state_dict

TRAINABLE_WEIGHTS_NAME = "trainable_weights.safetensors"


def deepspeed_plugin(accelerator: Any) -> Any:
    """The active DeepSpeed plugin, or None."""
    return getattr(accelerator.state, "deepspeed_plugin", None)


def zero_stage(accelerator: Any) -> int:
    """DeepSpeed's ZeRO stage (0 without DeepSpeed)."""
    plugin = deepspeed_plugin(accelerator)
    if plugin is None:
        return 0
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0) or 0)


def uses_fsdp(accelerator: Any) -> bool:
    """Whether accelerate runs the model under FSDP."""
    return str(getattr(accelerator, "distributed_type", "")).endswith("FSDP")


def runs_on_every_rank(accelerator: Any) -> bool:
    """Whether the transformer's weights are sharded (ZeRO-3, FSDP): then any forward, including sampling and
    probes, must run on every rank, because each layer gathers its weights with a collective."""
    return zero_stage(accelerator) == 3 or uses_fsdp(accelerator)


def check_launch_took_effect(accelerator: Any) -> None:
    """Refuse a multi-process launch whose sharding accelerate silently dropped.

    accelerate (1.x) turns an FSDP launch config into FSDP only on GPU-class ranks; on CPU ranks it leaves the
    distributed type at NO (or MULTI_CPU with `use_cpu`), so every rank would train its own unsynchronised
    copy. (torch's FSDP2 itself runs on gloo; accelerate does not apply it there.)"""
    asked_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if asked_fsdp and not uses_fsdp(accelerator):
        raise ConfigError(
            f"the accelerate config asks for FSDP, but accelerate applied {accelerator.distributed_type} on these "
            f"{accelerator.device.type} ranks (it applies FSDP only on GPUs); on CPUs launch with "
            "configs/accelerate/cpu_ddp_2ranks.yaml or cpu_deepspeed_zero3_2ranks.yaml instead")
    if accelerator.num_processes > 1 and str(accelerator.distributed_type).endswith(".NO"):
        raise ConfigError(
            f"{accelerator.num_processes} processes but accelerate set up no distributed training (type NO): the "
            "ranks would not synchronise; check the accelerate config's distributed_type and use_cpu")


@contextlib.contextmanager
def frozen_components_unpartitioned(accelerator: Any) -> Iterator[None]:
    """Load models inside this block whole on every rank, even under ZeRO-3.

    accelerate registers its DeepSpeed config with `transformers` (a weak reference) as soon as the plugin is
    selected; while it is registered, every `transformers` `from_pretrained` runs under `deepspeed.zero.Init`
    and the text encoder comes back partitioned. (`zero3_init_flag: false` does not help: accelerate registers
    the config either way.) Unregistering it for the block and registering it again afterwards leaves the
    transformer to `deepspeed.initialize`, which partitions it when `accelerator.prepare` wraps it."""
    plugin = deepspeed_plugin(accelerator)
    if plugin is None or zero_stage(accelerator) != 3:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.dschf = None
        plugin.set_deepspeed_weakref()


def gathered_lora_state_dict(accelerator: Any, model: Any, transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights whole, as `lora_state_dict` names them, copied to the CPU, in fp32 when they train in
    fp32 (under DeepSpeed bf16 / fp16: the optimiser's fp32 master weights, not the module's rounded copy).
    Under DeepSpeed and FSDP every rank must call this (the weights are gathered with collectives); elsewhere
    it only reads them.

    `model` is what `accelerator.prepare` returned, `transformer` the module inside it."""
    if uses_fsdp(accelerator):  # not run yet: accelerate applies FSDP on GPUs only
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(transformer, state_dict=accelerator.get_state_dict(model))
    elif deepspeed_holds_fp32_masters(accelerator, transformer):
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(transformer, state_dict=fp32_master_weights(transformer))
    else:
        params = [p for p in transformer.parameters() if p.requires_grad]
        with gathered(accelerator, params):
            state = {k: v.detach().to("cpu", copy=True) for k, v in lora_state_dict(transformer).items()}
        return state
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def full_transformer_state_dict(accelerator: Any, model: Any,
                                transformer: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """A full fine-tune's transformer weights, whole, on the CPU, for `from_pretrained`; None where the module
    itself holds them (one process, DDP, DeepSpeed fp32 ZeRO-1/2: save the module as it is).

    Under DeepSpeed bf16 / fp16 the module holds DeepSpeed's rounded copy, so every trained weight comes from the
    optimiser's fp32 master weights (the same fp32 checkpoint a fp32 run writes; `transformer_dtype` cannot ask
    for a 16-bit full fine-tune, see `TrainConfig.validate`). Under ZeRO-3 / FSDP in fp32: gathered by
    accelerate. Every rank must call it under DeepSpeed and FSDP (collectives)."""
    if deepspeed_holds_fp32_masters(accelerator, transformer):
        masters = fp32_master_weights(transformer)
        frozen = [p for p in transformer.parameters() if not p.requires_grad]
        with gathered(accelerator, frozen):  # persistent buffers and any frozen weight, as the module has them
            state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in transformer.state_dict().items()
                     if k not in masters}
        return {**state, **masters}
    if runs_on_every_rank(accelerator):
        return {k: v.detach().to("cpu", copy=True) for k, v in accelerator.get_state_dict(model).items()}
    return None


def deepspeed_holds_fp32_masters(accelerator: Any, transformer: torch.nn.Module) -> bool:
    """Whether the trainable weights in the module are DeepSpeed's low-precision copies of fp32 master weights.

    Under `mixed_precision: bf16` (or fp16) DeepSpeed casts every parameter of the prepared module, the fp32
    LoRA included, to that dtype and keeps the fp32 weights the optimiser updates in its own partitions; the
    module's copy is rounded, so what is saved must come from the partitions. The same on every rank."""
    if deepspeed_plugin(accelerator) is None:
        return False
    return any(p.requires_grad and p.dtype != torch.float32 for p in transformer.parameters())


def fp32_master_weights(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters' fp32 master weights from DeepSpeed's optimiser partitions, whole, on the CPU,
    by their name in `transformer`. A collective per parameter (ZeRO-1/2: an all-reduce, ZeRO-3: an
    all-gather): every rank must call it, and in the same order (`named_parameters` order)."""
    from deepspeed.utils import safe_get_full_fp32_param

    masters = {}
    for name, param in transformer.named_parameters():
        if not param.requires_grad:
            continue
        full = safe_get_full_fp32_param(param)
        if full is None:
            raise RuntimeError(f"DeepSpeed holds no fp32 master weight for the trainable parameter {name} "
                               f"({param.dtype}); was the model prepared with its optimizer by accelerate?")
        masters[name] = full.detach().to("cpu", torch.float32, copy=True).contiguous()
    return masters


@contextlib.contextmanager
def gathered(accelerator: Any, parameters: Iterable[torch.nn.Parameter]) -> Iterator[None]:
    """`parameters` whole inside the block. Under ZeRO-3 this all-gathers them, so every rank must enter;
    elsewhere it does nothing."""
    if zero_stage(accelerator) != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(parameters), modifier_rank=None):
        yield


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require gradients, by their name in `model`, detached and contiguous."""
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def register_lean_checkpoint_hooks(accelerator: Any) -> list[Any]:
    """Make `accelerator.save_state` / `load_state` store and restore only the trainable weights of the
    prepared models (plus what accelerate stores besides the models: optimiser, scheduler, RNG states).

    Applies where accelerate saves the weights itself (one process, DDP); the DeepSpeed engine is told by
    `save_state_options`. Returns the hook handles (`.remove()` them when the run ends).

    A checkpoint written before these hooks (a full `model.safetensors`, no `trainable_weights.safetensors`)
    still loads the old way."""
    from safetensors.torch import load_file, save_file

    def engine_saves_the_weights() -> bool:
        return deepspeed_plugin(accelerator) is not None or uses_fsdp(accelerator)

    def save_trainable_only(models: list, weights: list, output_dir: str) -> None:
        if engine_saves_the_weights() or not weights:
            return
        for index, model in enumerate(models):
            state = trainable_state_dict(accelerator.unwrap_model(model))
            save_file({k: v.cpu() for k, v in state.items()}, str(Path(output_dir) / _indexed(index)))
        weights.clear()  # accelerate writes no model.safetensors

    def load_trainable_only(models: list, input_dir: str) -> None:
        if engine_saves_the_weights() or not (Path(input_dir) / _indexed(0)).is_file():
            return
        for index, model in enumerate(models):
            unwrapped = accelerator.unwrap_model(model)
            state = load_file(str(Path(input_dir) / _indexed(index)))
            expected = {name: tuple(p.shape) for name, p in trainable_state_dict(unwrapped).items()}
            found = {name: tuple(t.shape) for name, t in state.items()}
            if found != expected:
                differ = sorted(n for n in set(found) | set(expected) if found.get(n) != expected.get(n))
                raise ConfigError(f"{input_dir}: the checkpoint's trainable weights do not match this model's "
                                   f"(first differences, checkpoint vs model: "
                                   f"{[(n, found.get(n), expected.get(n)) for n in differ[:3]]}); resume with "
                                   "the same training_type, rank and target_modules (and experts, on a "
                                   "two-expert model)")
            unwrapped.load_state_dict(state, strict=False)
        models.clear()  # accelerate must not look for model.safetensors

    return [accelerator.register_save_state_pre_hook(save_trainable_only),
            accelerator.register_load_state_pre_hook(load_trainable_only)]


def _indexed(index: int) -> str:
    stem, ext = TRAINABLE_WEIGHTS_NAME.rsplit(".", 1)
    return TRAINABLE_WEIGHTS_NAME if index == 0 else f"{stem}_{index}.{ext}"


def save_state_options(accelerator: Any) -> dict[str, Any]:
    """`accelerator.save_state` keyword arguments: the DeepSpeed engine leaves the frozen weights out."""
    return {"exclude_frozen_parameters": True} if deepspeed_plugin(accelerator) is not None else {}


def load_state_options(accelerator: Any) -> dict[str, Any]:
    """`accelerator.load_state` keyword arguments: the DeepSpeed engine's checkpoint lacks the frozen weights
    (they come from the pretrained model, loaded before), so its module state is loaded non-strictly; the
    trainable weights themselves are restored from the optimiser's fp32 partitions."""
    return {"load_module_strict": False} if deepspeed_plugin(accelerator) is not None else {}


def check_checkpoint_fits(checkpoint: str | os.PathLike, training_type: str, rank: int, target_modules: Any) -> None:
    """The checkpoint's trainable weights, read from their safetensors header only (no tensor, no model), fit
    this run's `training_type`, LoRA `rank` and `target_modules`; a one-line ConfigError otherwise.

    Why: loading them finds a mismatch only after the model load, the latent cache and the curation."""
    import re

    from safetensors import safe_open

    from .lora import normalize_target_modules

    file = Path(checkpoint) / _indexed(0)
    if not file.is_file():  # DeepSpeed's own folder, or a checkpoint from before the trainable-only files
        return
    with safe_open(str(file), framework="pt") as handle:
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    lora = {key.split(".lora_A.")[0]: shape for key, shape in shapes.items() if ".lora_A." in key}
    fix = "resume with the settings the checkpoint was trained with, or start a new output_dir"
    if (training_type == "lora") != bool(lora):
        made = "a LoRA" if lora else "a full fine-tune (no LoRA weights)"
        raise ConfigError(f"--resume_from_checkpoint {checkpoint}: it holds {made}, this run asks training_type="
                          f"{training_type}; {fix}")
    if not lora:
        return
    ranks = sorted({shape[0] for shape in lora.values()})
    if ranks != [rank]:
        raise ConfigError(f"--resume_from_checkpoint {checkpoint}: its LoRA has rank {', '.join(map(str, ranks))}, "
                          f"this run asks rank={rank}; {fix}")
    targets = normalize_target_modules(target_modules)

    def named(module: str, target: str) -> bool:
        return module == target or module.endswith("." + target)

    if isinstance(targets, str):
        outside = [m for m in lora if not re.fullmatch(targets, m)]
        missing: list[str] = []
    else:
        outside = [m for m in lora if not any(named(m, t) for t in targets)]
        missing = [t for t in targets if not any(named(m, t) for m in lora)]
    if outside or missing:
        what = (f"its LoRA sits on {outside[0]}, which target_modules does not name" if outside else
                f"target_modules names {missing[0]!r}, which has no LoRA in it")
        raise ConfigError(f"--resume_from_checkpoint {checkpoint}: {what}; {fix}")
