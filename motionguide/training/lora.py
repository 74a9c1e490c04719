"""LoRA through peft on a diffusers transformer, saved so the stock pipeline's `load_lora_weights` restores it
exactly: `pytorch_lora_weights.safetensors` with the adapter metadata (without it alpha silently becomes r)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ConfigError

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def normalize_target_modules(target: Sequence[str] | str) -> list[str] | str:
    """A list of module-name suffixes, a comma-separated string of them, or one regex (peft full-matches it)."""
    if not isinstance(target, str):
        return list(target)
    if any(ch in target for ch in "^$*+?()[]|\\"):
        return target
    return [part.strip() for part in target.split(",") if part.strip()]


def check_target_modules(transformer: torch.nn.Module, target_modules: Sequence[str] | str) -> None:
    """`target_modules` names at least one module of `transformer` (peft's rule: a list entry matches a
    module name or its dotted suffix, a string is one regex over whole names); ConfigError naming the layers.
    Why: peft finds a typo only when the adapter is added, after the latent cache and the curation."""
    import re

    targets = normalize_target_modules(target_modules)
    names = [n for n, _ in transformer.named_modules() if n]
    if isinstance(targets, str):
        hit = any(re.fullmatch(targets, n) for n in names)
    else:
        hit = any(n == t or n.endswith("." + t) for n in names for t in targets)
    if not hit:
        leaves = sorted({n.split(".")[-1] for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"target_modules={target_modules!r} matched no layer of {type(transformer).__name__}. "
                          f"Linear layer names it has: {', '.join(leaves)}")


def add_lora(transformer: torch.nn.Module, rank: int, alpha: float, target_modules: Sequence[str] | str,
             adapter_name: str = "default") -> Any:
    """Freeze the transformer and add a trainable LoRA adapter; returns the peft config."""
    from peft import LoraConfig

    targets = normalize_target_modules(target_modules)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=True, target_modules=targets)
    transformer.requires_grad_(False)
    try:
        transformer.add_adapter(config, adapter_name=adapter_name)
    except ValueError as exc:
        names = sorted({n.split(".")[-1] for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(
            f"target_modules={target_modules!r} matched no layer of {type(transformer).__name__} ({exc}). "
            f"Linear layer names it has: {', '.join(names)}"
        ) from exc
    for p in transformer.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # trainable LoRA weights stay fp32 under mixed precision
    return config


def lora_state_dict(transformer: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's weights as peft names them."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer, adapter_name=adapter_name)


def save_lora(pipeline_class: type, transformer: torch.nn.Module, out_dir: str | os.PathLike,
              adapter_name: str = "default", state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `pytorch_lora_weights.safetensors` with adapter metadata via the pipeline's own LoRA mixin.

    `state_dict`: the adapter's weights when they are not whole in `transformer` (gathered from ZeRO-3 shards,
    as `lora_state_dict` names them); by default they are read from `transformer`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = transformer.peft_config[adapter_name].to_dict()
    pipeline_class.save_lora_weights(
        out_dir,
        transformer_lora_layers=state_dict if state_dict is not None else lora_state_dict(transformer, adapter_name),
        transformer_lora_adapter_metadata=metadata,
        safe_serialization=True,
    )
    return out_dir / LORA_WEIGHT_NAME


def save_expert_loras(pipeline_class: type, experts: Sequence[tuple[str, torch.nn.Module]],
                      out_dir: str | os.PathLike, states: dict[str, dict[str, torch.Tensor]] | None = None
                      ) -> dict[str, Path]:
    """The LoRA of each (pipeline attribute name, transformer) in `experts`, one `save_lora` each where
    `loading.expert_lora_folder` puts it (`transformer` in `out_dir`, `transformer_2` in `out_dir/transformer_2`),
    so the stock `load_lora_weights` (with `load_into_transformer_2=True` for the second) restores each expert.
    `states`: gathered weights per name (see `save_lora`). Returns the file written per name."""
    from ..loading import expert_lora_folder

    states = states or {}
    return {name: save_lora(pipeline_class, module, expert_lora_folder(out_dir, name), state_dict=states.get(name))
            for name, module in experts}


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters of `module` that require gradients."""
    return [p for p in module.parameters() if p.requires_grad]
