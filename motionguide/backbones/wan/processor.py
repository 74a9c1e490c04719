"""Wan's instrumented attention processor: `WanAttnProcessor` with hands for captures and frame-local attention.

Installed by the :class:`~motionguide.attention.AttentionController` in place of the stock `WanAttnProcessor` on
`attn1` (video self-attention, 3D RoPE) or `attn2` (video queries x text keys). With nothing active for a call it
hands the call to the stock processor object unchanged; otherwise it runs the stock processor's operations in the
same order (so outputs stay bit-identical) and also hands q / k / outputs to the captures, or swaps the attention
kernel for the frame-local one of DiffTrack (https://arxiv.org/abs/2506.17220): each video query sees only the keys
of its own latent frame, which is what correspondence guidance perturbs.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from ...attention.instrumented import InstrumentedProcessor, InstrumentError, Planner
from ...attention.kernels import frame_local_attention


def wan_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved RoPE on [B, S, H, D], operation for operation as the stock processor applies it."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class InstrumentedWanProcessor(InstrumentedProcessor, WanAttnProcessor):
    """Stands in for `WanAttnProcessor` on `attn1` (attention="self") or `attn2` (attention="text")."""

    def __init__(self, controller: Planner, original: Any, block: int, attention: str):
        if type(original) is not WanAttnProcessor:
            raise InstrumentError(
                f"block {block} {'attn1' if attention == 'self' else 'attn2'} uses {type(original).__name__}; "
                "motionguide instruments only the stock WanAttnProcessor. Remove custom processors first."
            )
        WanAttnProcessor.__init__(self)
        InstrumentedProcessor.__init__(self, controller, original, block, attention)

    def _projections(self, attn, hidden_states, encoder_hidden_states):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if getattr(attn, "fused_projections", False):
            if not attn.is_cross_attention:
                return attn.to_qkv(hidden_states).chunk(3, dim=-1)
            key, value = attn.to_kv(context).chunk(2, dim=-1)
            return attn.to_q(hidden_states), key, value
        return attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if not self.active:  # idle: the stock processor, with nothing read that a compiled graph would guard on
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        if not self.capturing:  # frame-local only: stays in a compiled graph
            plan, frames = self.frame_local_plan()
            return self._attend(plan, frames, attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        return self.instrumented_call(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)

    @torch.compiler.disable
    def instrumented_call(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        """A call at a module a capture covers; eager under torch.compile (captures call arbitrary Python)."""
        plan = self.plan(hidden_states.shape[0])
        if plan is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        frames = plan.info.grid.frames
        return self._attend(plan, frames, attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)

    def _attend(self, plan, frames, attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb):
        """The stock processor's operations in its order, with the plan's kernel swap and captures."""
        encoder_hidden_states_img = None
        if attn.add_k_proj is not None:
            image_context_length = encoder_hidden_states.shape[1] - 512
            encoder_hidden_states_img = encoder_hidden_states[:, :image_context_length]
            encoder_hidden_states = encoder_hidden_states[:, image_context_length:]

        query, key, value = self._projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        query = query.unflatten(2, (attn.heads, -1))
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        query_pre_rope, key_pre_rope = query, key  # the rotation below returns new tensors
        if rotary_emb is not None:
            query = wan_rotary(query, *rotary_emb)
            key = wan_rotary(key, *rotary_emb)

        hidden_states_img = None
        if encoder_hidden_states_img is not None:
            key_img, value_img = (
                attn.to_added_kv(encoder_hidden_states_img).chunk(2, dim=-1)
                if getattr(attn, "fused_projections", False)
                else (attn.add_k_proj(encoder_hidden_states_img), attn.add_v_proj(encoder_hidden_states_img))
            )
            key_img = attn.norm_added_k(key_img).unflatten(2, (attn.heads, -1))
            value_img = value_img.unflatten(2, (attn.heads, -1))
            hidden_states_img = dispatch_attention_fn(
                query, key_img, value_img, attn_mask=None, dropout_p=0.0, is_causal=False,
                backend=self._attention_backend, parallel_config=None,
            )
            hidden_states_img = hidden_states_img.flatten(2, 3).type_as(query)

        if plan.frame_local is not None:
            if attention_mask is not None or self._parallel_config is not None:
                raise InstrumentError("frame-local attention supports neither attention masks nor context parallelism")
            backend = self._attention_backend

            def attend(q, k, v):
                return dispatch_attention_fn(q, k, v, dropout_p=0.0, is_causal=False, backend=backend)

            out = frame_local_attention(
                query, key, value, frames=frames, text_len=0,
                renormalize=plan.frame_local.renormalize, attend=attend,
            )
        else:
            out = dispatch_attention_fn(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                backend=self._attention_backend,
                parallel_config=(self._parallel_config if encoder_hidden_states is None else None),
            )
        if plan.captures:
            pre = plan.wants_pre_rope
            plan.emit(self, query.transpose(1, 2), key.transpose(1, 2), out.transpose(1, 2), text_len=0,
                      query_pre_rope=query_pre_rope.transpose(1, 2) if pre else None,
                      key_pre_rope=key_pre_rope.transpose(1, 2) if pre else None)

        hidden_states = out.flatten(2, 3)
        hidden_states = hidden_states.type_as(query)
        if hidden_states_img is not None:
            hidden_states = hidden_states + hidden_states_img
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states
