"""Attach a diffusers `ModelHook` and detach it so that the module is left exactly as it was found.

diffusers' `HookRegistry` is the extension point its own caches use, so the instruments use it too; but two parts
of it do not undo themselves:

- `HookRegistry.check_if_exists_or_initialize` adds `module._diffusers_hook` and `register_hook` an instance-level
  `module.forward`; `remove_hook` leaves both behind, so an install-then-remove model differs from a stock one
  (diffusers' own cache tests check for exactly this). :func:`detach_hook` deletes what :func:`attach_hook` created
  once the registry holds no other hook.
- `remove_hook` relinks the hook registered just above the removed one through its `forward`; a hook with a
  `new_forward` (FasterCache, FirstBlockCache) continues its chain through `original_forward` instead, so it would
  be bypassed, silently switching the cache off. :func:`detach_hook` relinks that hook where it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .instrumented import InstrumentError

_REGISTRY = "_diffusers_hook"


@dataclass
class AttachedHook:
    """Where one hook sits and what attaching it created (what detaching must delete)."""

    module: torch.nn.Module
    name: str
    created_registry: bool
    created_forward: bool
    forward: Any  # the module's forward right after attaching (ours, until a hook above ours wraps it)


def attach_hook(module: torch.nn.Module, hook: ModelHook, name: str) -> AttachedHook:
    """Register `hook` as `name` on `module` (on top of any hooks already there)."""
    created_registry = _REGISTRY not in module.__dict__
    created_forward = "forward" not in module.__dict__
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
    return AttachedHook(module, name, created_registry, created_forward, module.__dict__["forward"])


def detach_hook(attached: AttachedHook, root: torch.nn.Module | None = None) -> None:
    """Remove the hook; keep every hook registered after it working; delete what attaching created once unused.

    root: the model the module belongs to, whose registries cache their children's registries (cleared here).
    """
    module, name = attached.module, attached.name
    registry: HookRegistry = module.__dict__[_REGISTRY]
    index = registry._hook_order.index(name)
    below = registry._fn_refs[index]
    forward_below = below.original_forward if below.original_forward is not None else below.forward
    if index == len(registry._hook_order) - 1:
        if module.__dict__.get("forward") is not attached.forward:
            raise InstrumentError(
                f"{type(module).__name__}.forward was replaced after motionguide's hook {name!r} was attached "
                "(by something other than a diffusers hook); remove that wrapper first, then the instruments"
            )
        module.forward = forward_below
    else:
        above = registry._fn_refs[index + 1]
        if above.original_forward is not None:  # a `new_forward` hook calls the rest of the chain through this
            above.original_forward = forward_below
        else:
            above.forward = forward_below
    registry.hooks[name].deinitalize_hook(module)  # (sic: diffusers' spelling)
    del registry.hooks[name]
    registry._hook_order.pop(index)
    registry._fn_refs.pop(index)
    if not registry.hooks:
        if attached.created_forward:
            del module.__dict__["forward"]
        if attached.created_registry:
            del module.__dict__[_REGISTRY]
    if root is not None and _REGISTRY in root.__dict__:
        invalidate = getattr(root.__dict__[_REGISTRY], "invalidate_child_registries_cache", None)
        if invalidate is not None:  # recent diffusers caches child registries
            invalidate()
