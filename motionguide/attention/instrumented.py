"""The family-independent half of an instrumented attention processor: what one call must do, and the base class.

An instrumented processor stands in for a model's stock attention processor (installed with
`Attention.set_processor` by the :class:`~motionguide.attention.AttentionController`). Each model family writes
its own subclass next to its adapter (`motionguide/backbones/<family>/processor.py`), because only the family
knows the exact operations of its stock processor; everything a family does *not* need to know lives here:

- :class:`CallPlan`: what one attention call must do beyond the stock computation (hand q / k / outputs to
  captures, swap the kernel for the frame-local one), asked of the controller with :meth:`plan`;
- :class:`InstrumentedProcessor`: the controller, the stock processor it stands in for, where it sits, and the
  attention backend / context-parallel settings, which are read from and written to the stock processor so that
  `set_attention_backend` on an instrumented model reaches the stock processor too and survives removal.

A subclass's `__call__` hands the call to `self.original` unchanged unless `self.active` (something is subscribed
at this module), so idle instruments are bit-identical to stock and compile as stock (that flag is the only thing
they read). A frame-local call without a capture takes :meth:`frame_local_plan` and stays in the graph; a call
with a capture goes to a `torch.compiler.disable`d method that asks for a plan (none: the stock processor again).
Both then run the stock processor's operations in the same order. A family that asks for a
plan directly in `__call__` still works eagerly, but breaks the graph of a compiled transformer on every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Container, Protocol

import torch

from .capture import AttentionCapture, CaptureConsumer, ForwardInfo


class InstrumentError(RuntimeError):
    """An attention module or processor that the instruments cannot handle faithfully."""


@dataclass
class FrameLocalConfig:
    """Options of one frame-local scope: softmax renormalised over the allowed keys (True) or not."""

    renormalize: bool = True


@dataclass
class Subscription:
    """One capture scope's consumer and its filters (branch "cond" or "all", steps, pre-RoPE q / k)."""

    consumer: CaptureConsumer
    branches: str
    steps: Container[int] | None
    pre_rope: bool = False


@dataclass
class CallPlan:
    """What one attention call must do beyond the stock computation."""

    info: ForwardInfo | None  # None on the frame-local-only path, which runs inside a compiled graph
    captures: list[Subscription]
    frame_local: FrameLocalConfig | None

    @property
    def wants_pre_rope(self) -> bool:
        """Whether a consumer asked for q / k before the rotary embedding (the processor then keeps them)."""
        return any(sub.pre_rope for sub in self.captures)

    def emit(self, processor: "InstrumentedProcessor", query, key, output, text_len: int,
             query_pre_rope=None, key_pre_rope=None, text_last: bool = False) -> None:
        """Hand [B, H, S, D] tensors to each consumer, restricted to the rows its branch filter allows.

        text_last: a joint sequence whose `text_len` text tokens follow the video (HunyuanVideo), not precede it.
        """
        with torch.no_grad():
            for sub in self.captures:
                rows = slice(None) if sub.branches == "all" else self.info.cond_rows
                if rows is None:
                    continue
                pre = sub.pre_rope and query_pre_rope is not None
                sub.consumer(
                    AttentionCapture(
                        block=processor.block,
                        attention=processor.attention,
                        info=self.info,
                        query=query[rows].detach(),
                        key=key[rows].detach(),
                        output=output[rows].detach(),
                        text_len=text_len,
                        text_last=text_last,
                        query_pre_rope=query_pre_rope[rows].detach() if pre else None,
                        key_pre_rope=key_pre_rope[rows].detach() if pre else None,
                    )
                )


class Planner(Protocol):
    """What an instrumented processor needs of its controller."""

    def plan_call(self, processor: "InstrumentedProcessor", batch: int) -> CallPlan | None:
        """None when the call should run the stock processor untouched."""

    def forward_frames(self) -> int:
        """Latent frames of the transformer forward under way."""


class InstrumentedProcessor:
    """Base of every family's instrumented processor (put it first among the bases, before the stock class).

    Subclasses check `original` in their `__init__` (raise :class:`InstrumentError` for a processor they cannot
    reproduce) and call ``InstrumentedProcessor.__init__``.
    """

    def __init__(self, controller: Planner, original: Any, block: int, attention: str):
        self.controller = controller
        self.original = original
        self.block = block
        self.attention = attention  # "self", "text" or "joint"
        #: whether a capture or frame-local scope covers this module (kept by the controller); False: the call
        #: goes to the stock processor. A flag rather than a lookup keyed by `block`, so that a compiled model
        #: is guarded on a value that is the same for every idle block (no recompilation per block).
        self.active = False
        #: whether a capture covers this module (then the call runs eagerly), and the frame-local scope's
        #: options if one does (without a capture that path compiles, with no graph break); kept by the controller
        self.capturing = False
        self.frame_local: FrameLocalConfig | None = None

    def plan(self, batch: int) -> CallPlan | None:
        """This call's plan from the controller; None: hand the call to the stock processor."""
        return self.controller.plan_call(self, batch)

    def frame_local_plan(self) -> tuple[CallPlan, int]:
        """The plan of an active call with no capture (frame-local only) and the forward's latent frames.

        Read from flags and the latent shape alone (no per-forward Python state), so it traces into a graph.
        """
        return CallPlan(None, [], self.frame_local), self.controller.forward_frames()

    # diffusers writes these on whatever processor is installed (`set_attention_backend`, context parallelism):
    # keep them on the stock processor, so a setting made while instruments are installed outlives them.
    # A stock processor without the attribute keeps `hasattr` False here too, as diffusers expects.
    @property
    def _attention_backend(self) -> Any:
        return self.original._attention_backend

    @_attention_backend.setter
    def _attention_backend(self, value: Any) -> None:
        self.original._attention_backend = value

    @property
    def _parallel_config(self) -> Any:
        return self.original._parallel_config

    @_parallel_config.setter
    def _parallel_config(self, value: Any) -> None:
        self.original._parallel_config = value
