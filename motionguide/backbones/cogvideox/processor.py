"""CogVideoX's instrumented attention processor: `CogVideoXAttnProcessor2_0` with hands for captures and
frame-local attention.

Installed by the :class:`~motionguide.attention.AttentionController` in place of the stock processor on the joint
`attn1` of a block ([text; video] tokens, text first). With nothing active for a call it hands the call to the stock
processor object unchanged; otherwise it runs the stock processor's operations in the same order (so outputs stay
bit-identical) and also hands q / k / outputs to the captures, or swaps the attention kernel for the frame-local
one of DiffTrack (https://arxiv.org/abs/2506.17220): each video query sees the text tokens and the video keys of
its own latent frame only, which is what correspondence guidance perturbs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb

from ...attention.instrumented import InstrumentedProcessor, InstrumentError, Planner
from ...attention.kernels import frame_local_attention, sdpa_bshd


class InstrumentedCogVideoXProcessor(InstrumentedProcessor, CogVideoXAttnProcessor2_0):
    """Stands in for `CogVideoXAttnProcessor2_0` on the joint `attn1` ([text; video] tokens, text first)."""

    def __init__(self, controller: Planner, original: Any, block: int, attention: str):
        if type(original) is not CogVideoXAttnProcessor2_0:
            hint = " (call unfuse_qkv_projections() first)" if "Fused" in type(original).__name__ else ""
            raise InstrumentError(
                f"block {block} attn1 uses {type(original).__name__}; motionguide instruments only the stock "
                f"CogVideoXAttnProcessor2_0{hint}"
            )
        CogVideoXAttnProcessor2_0.__init__(self)
        InstrumentedProcessor.__init__(self, controller, original, block, "joint")

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        if not self.active:  # idle: the stock processor, with nothing read that a compiled graph would guard on
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if not self.capturing:  # frame-local only: stays in a compiled graph
            plan, frames = self.frame_local_plan()
            return self._attend(plan, frames, attn, hidden_states, encoder_hidden_states, attention_mask,
                                image_rotary_emb)
        return self.instrumented_call(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    @torch.compiler.disable
    def instrumented_call(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        """A call at a module a capture covers; eager under torch.compile (captures call arbitrary Python)."""
        plan = self.plan(hidden_states.shape[0])
        if plan is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        frames = plan.info.grid.frames
        return self._attend(plan, frames, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    def _attend(self, plan, frames, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb):
        """The stock processor's operations in its order, with the plan's kernel swap and captures."""
        text_seq_length = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch_size, sequence_length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        keep_pre_rope = bool(plan.captures) and plan.wants_pre_rope
        # the stock processor rotates in place: copies keep the pre-RoPE values only when a capture asks
        query_pre_rope = query.clone() if keep_pre_rope else None
        key_pre_rope = key.clone() if keep_pre_rope else None
        if image_rotary_emb is not None:
            query[:, :, text_seq_length:] = apply_rotary_emb(query[:, :, text_seq_length:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_seq_length:] = apply_rotary_emb(key[:, :, text_seq_length:], image_rotary_emb)

        if plan.frame_local is not None:
            if attention_mask is not None:
                raise InstrumentError("frame-local attention does not support an attention mask")
            out = frame_local_attention(
                query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                frames=frames, text_len=text_seq_length,
                renormalize=plan.frame_local.renormalize, attend=sdpa_bshd,
            ).transpose(1, 2)
        else:
            out = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
            )
        if plan.captures:
            plan.emit(self, query, key, out, text_len=text_seq_length,
                      query_pre_rope=query_pre_rope, key_pre_rope=key_pre_rope)

        hidden_states = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        encoder_hidden_states, hidden_states = hidden_states.split(
            [text_seq_length, hidden_states.size(1) - text_seq_length], dim=1
        )
        return hidden_states, encoder_hidden_states
