"""The perturbed pass of correspondence guidance reuses the conditional pass's blocks before the first guidance block.

The perturbed pass differs from the conditional pass only from the first guidance block on: every earlier block sees
the same inputs and so computes the same outputs. During a guided conditional call the output of the last block
before the first guidance block is kept (conditional rows only, one hidden state); during the perturbed call the
earlier blocks are skipped: each hands its input on, and the last one returns the kept output. With guidance blocks
starting at block b of n, the extra pass costs (n - b) / n of a forward instead of a whole one.

Installed as diffusers `ModelHook`s with a `new_forward` (the extension point diffusers' own block caches use) for
the duration of one guided call, and removed afterwards with everything they created (`attention/hooks.py`), so the
blocks are exactly as found and hooks registered meanwhile keep working.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from diffusers.hooks import ModelHook

from ..attention import InstrumentError
from ..attention.hooks import attach_hook, detach_hook

_HOOK_NAME = "motionguide_cag_prefix_reuse"


@dataclass
class _PrefixState:
    mode: str = "off"  # "off", "record" (conditional call) or "replay" (perturbed call)
    rows: slice = field(default_factory=lambda: slice(None))
    batch: int = 0
    stored: Any = None


def _select_rows(value: Any, rows: slice, batch: int) -> Any:
    if isinstance(value, torch.Tensor):
        return value[rows] if value.ndim and value.shape[0] == batch else value
    if isinstance(value, tuple):
        return tuple(_select_rows(v, rows, batch) for v in value)
    return value


def _batch_of(value: Any) -> int | None:
    tensor = value[0] if isinstance(value, tuple) else value
    return tensor.shape[0] if isinstance(tensor, torch.Tensor) and tensor.ndim else None


class _PrefixBlockHook(ModelHook):
    """On one block before the first guidance block: runs it normally, keeps its output (last prefix block, record
    mode) or skips it (replay mode)."""

    def __init__(self, state: _PrefixState, last: bool):
        super().__init__()
        self.state = state
        self.last = last

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        """Record, replay or pass through, depending on the shared state's mode."""
        state = self.state
        if state.mode == "replay":
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            if state.stored is None or _batch_of(state.stored) != hidden.shape[0]:
                raise InstrumentError("the perturbed pass found no matching conditional-pass output to reuse; call "
                                      "correspondence guidance with reuse_prefix=False")
            if not self.last:  # skipped: hand the input on in the block's own output layout
                if isinstance(state.stored, tuple):
                    text = kwargs["encoder_hidden_states"] if "encoder_hidden_states" in kwargs else args[1]
                    return hidden, text
                return hidden
            return state.stored
        output = self.fn_ref.original_forward(*args, **kwargs)
        if state.mode == "record" and self.last:
            state.stored = _select_rows(output, state.rows, state.batch)
        return output


def reuse_blocker(transformer: torch.nn.Module, blocks: Sequence[torch.nn.Module]) -> str | None:
    """Why the prefix cannot be reused here (None when it can): other diffusers hooks on the transformer or its
    blocks (block caches, group offloading) expect every block to run in every pass."""
    for module in (transformer, *blocks):
        registry = getattr(module, "_diffusers_hook", None)
        names = registry.hooks if registry is not None else {}
        foreign = [name for name in names if not name.startswith("motionguide")]
        if foreign:
            names = ", ".join(foreign)
            return f"diffusers hooks are registered ({names}); they expect every block to run in every pass"
    return None


class PrefixReuse:
    """Hooks on the blocks before `first_guidance_block`; `recording(rows, batch)` and `replaying()` scope them."""

    def __init__(self, blocks: Sequence[torch.nn.Module], first_guidance_block: int,
                 root: torch.nn.Module | None = None):
        self.prefix = list(blocks[:first_guidance_block])
        self.root = root  # the transformer: its hook registry caches the blocks' registries
        self.state = _PrefixState()

    @property
    def saves_blocks(self) -> int:
        """Blocks the perturbed pass skips."""
        return len(self.prefix)

    @contextmanager
    def installed(self) -> Iterator["PrefixReuse"]:
        """Register the hooks (pass-through until a scope below is entered); remove them on exit."""
        attached = []
        try:
            for index, block in enumerate(self.prefix):
                hook = _PrefixBlockHook(self.state, last=index == len(self.prefix) - 1)
                attached.append(attach_hook(block, hook, _HOOK_NAME))
            yield self
        finally:
            for hook in reversed(attached):
                detach_hook(hook, root=self.root)
            self.state = _PrefixState()

    @contextmanager
    def _mode(self, mode: str, rows: slice = slice(None), batch: int = 0) -> Iterator[None]:
        state = self.state
        state.mode, state.rows, state.batch = mode, rows, batch
        if mode == "record":
            state.stored = None  # never replay an output from an earlier call
        try:
            yield
        finally:
            state.mode = "off"
            if mode == "replay":
                state.stored = None  # one conditional output serves exactly one perturbed pass

    def recording(self, rows: slice, batch: int):
        """Scope of a conditional call: keep the last prefix block's output for `rows` of a `batch`-row call."""
        return self._mode("record", rows, batch)

    def replaying(self):
        """Scope of the perturbed call: skip the prefix blocks and return the kept output."""
        return self._mode("replay")
