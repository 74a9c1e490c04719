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
    "joint" (CogVideoX `attn1`: [text; video] x [text; video], `text_len` leading text tokens; HunyuanVideo with
    `text_last`: [video; text], the `text_len` text tokens trailing). Use the accessors rather than slicing by hand.
    """

    block: int
    attention: str
    info: ForwardInfo
    query: torch.Tensor
    key: torch.Tensor
    output: torch.Tensor
    text_len: int = 0
    #: q / k after normalisation but before the rotary embedding; only when the capture asked for them
    #: (`controller.capture(..., pre_rope=True)`); text tokens carry no RoPE, so they equal `query` / `key` there
    query_pre_rope: torch.Tensor | None = None
    key_pre_rope: torch.Tensor | None = None
    #: joint attention with the text tokens after the video ones (the family's processor says so)
    text_last: bool = False

    @property
    def grid(self) -> TokenGrid:
        """Token grid of the transformer forward this call belongs to."""
        return self.info.grid

    def _pick(self, name: str, pre_rope: bool) -> torch.Tensor:
        if not pre_rope:
            return getattr(self, name)
        value = getattr(self, f"{name}_pre_rope")
        if value is None:
            raise ValueError(f"this capture holds no pre-RoPE {name}s: open the capture with "
                             "`controller.capture(..., pre_rope=True)` (or give the consumer `pre_rope = True`)")
        return value

    def _video_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.attention != "joint" or not self.text_len:
            return tensor
        return tensor[:, :, : tensor.shape[2] - self.text_len] if self.text_last else tensor[:, :, self.text_len :]

    def _text_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.attention != "joint":
            return tensor
        return tensor[:, :, tensor.shape[2] - self.text_len :] if self.text_last else tensor[:, :, : self.text_len]

    def video_query(self, pre_rope: bool = False) -> torch.Tensor:
        """Queries of the video tokens only (the leading text tokens dropped in joint attention).

        pre_rope: the queries before the rotary embedding (needs a capture opened with `pre_rope=True`).
        """
        return self._video_rows(self._pick("query", pre_rope))

    def video_key(self, pre_rope: bool = False) -> torch.Tensor | None:
        """Keys of the video tokens; None for text cross-attention, whose keys are all text."""
        if self.attention == "text":
            return None
        return self._video_rows(self._pick("key", pre_rope))

    def text_key(self) -> torch.Tensor | None:
        """Keys of the text tokens; None for video self-attention, which has none."""
        if self.attention == "self":
            return None
        return self._text_rows(self.key)

    def video_output(self) -> torch.Tensor:
        """Pre-`to_out` outputs of the video tokens only."""
        return self._video_rows(self.output)


CaptureConsumer = Callable[[AttentionCapture], None]
