"""What a capture hands to its consumer: per-head q, k and pre-`to_out` outputs of one attention call.

The tensors are views of what the attention computed (detached), valid only during the consumer call:
a consumer reduces them (a matching cost, a saliency map, a head score) and keeps only the result, so
nothing the size of the sequence outlives the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..backbones.base import TokenGrid


@dataclass
class ForwardInfo:
    """Where the transformer is when an attention call happens (set once per transformer forward)."""

    forward_id: int
    grid: TokenGrid
    batch_size: int
    branch: str | None = None  # the pipeline's cache-context name ("cond", "uncond", "cond_uncond") or None
    step_index: int | None = None
    num_inference_steps: int | None = None
    timestep: float | None = None
    sigma: float | None = None
    cond_rows: slice | None = field(default_factory=lambda: slice(None))  # batch rows of the conditional branch; None: no conditional rows


@dataclass
class AttentionCapture:
    """One attention call's per-head tensors, layout [batch, heads, tokens, head_dim], conditional rows only.

    `attention` is "self" (Wan `attn1`: video x video), "text" (Wan `attn2`: video queries x text keys) or
    "joint" (CogVideoX `attn1`: [text; video] x [text; video], text first, `text_len` leading tokens).
    Use the accessors rather than slicing by hand.
    """

    block: int
    attention: str
    info: ForwardInfo
    query: torch.Tensor
    key: torch.Tensor
    output: torch.Tensor
    text_len: int = 0

    @property
    def grid(self) -> TokenGrid:
        """Token grid of the transformer forward this call belongs to."""
        return self.info.grid

    def video_query(self) -> torch.Tensor:
        """Queries of the video tokens only (the leading text tokens dropped in joint attention)."""
        return self.query[:, :, self.text_len :] if self.attention == "joint" else self.query

    def video_key(self) -> torch.Tensor | None:
        """Keys of the video tokens; None for text cross-attention, whose keys are all text."""
        if self.attention == "text":
            return None
        return self.key[:, :, self.text_len :] if self.attention == "joint" else self.key

    def text_key(self) -> torch.Tensor | None:
        """Keys of the text tokens; None for video self-attention, which has none."""
        if self.attention == "self":
            return None
        return self.key[:, :, : self.text_len] if self.attention == "joint" else self.key

    def video_output(self) -> torch.Tensor:
        """Pre-`to_out` outputs of the video tokens only."""
        return self.output[:, :, self.text_len :] if self.attention == "joint" else self.output


CaptureConsumer = Callable[[AttentionCapture], None]
