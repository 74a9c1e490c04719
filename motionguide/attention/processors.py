"""Instrumented attention processors, one per model family, installed with `Attention.set_processor`.

Each one keeps the stock processor object it replaces. When nothing is active for a call it hands the call
to that object unchanged; when an instrument is active it runs the same operations in the same order as the
stock processor (so outputs stay bit-identical) and additionally hands q / k / outputs to a capture, or
swaps the attention kernel for the frame-local one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from .kernels import frame_local_attention, sdpa_bshd

if TYPE_CHECKING:  # pragma: no cover
    from .controller import AttentionController, CallPlan


class InstrumentError(RuntimeError):
    """An attention module or processor that the instruments cannot handle faithfully."""


def _wan_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved RoPE on [B, S, H, D], operation for operation as the stock processor applies it."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class _Instrumented:
    """Shared state: the controller, the stock processor it stands in for, and where it sits."""

    def _setup(self, controller: "AttentionController", original: Any, block: int, attention: str) -> None:
        self.controller = controller
        self.original = original
        self.block = block
        self.attention = attention  # "self", "text" or "joint"
        # Keep the backend chosen with `set_attention_backend` on the stock processor.
        self._attention_backend = getattr(original, "_attention_backend", None)
        self._parallel_config = getattr(original, "_parallel_config", None)


class InstrumentedWanProcessor(WanAttnProcessor, _Instrumented):
    """Stands in for `WanAttnProcessor` on `attn1` (attention="self") or `attn2` (attention="text")."""

    def __init__(self, controller: "AttentionController", original: Any, block: int, attention: str):
        if type(original) is not WanAttnProcessor:
            raise InstrumentError(
                f"block {block} {'attn1' if attention == 'self' else 'attn2'} uses {type(original).__name__}; "
                "motionguide instruments only the stock WanAttnProcessor. Remove custom processors first."
            )
        super().__init__()
        self._setup(controller, original, block, attention)

    def _projections(self, attn, hidden_states, encoder_hidden_states):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if getattr(attn, "fused_projections", False):
            if not attn.is_cross_attention:
                return attn.to_qkv(hidden_states).chunk(3, dim=-1)
            key, value = attn.to_kv(context).chunk(2, dim=-1)
            return attn.to_q(hidden_states), key, value
        return attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        plan: CallPlan | None = self.controller._plan_call(self, hidden_states.shape[0])
        if plan is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)

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
            query = _wan_rotary(query, *rotary_emb)
            key = _wan_rotary(key, *rotary_emb)

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
                query, key, value, frames=plan.info.grid.frames, text_len=0,
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


class InstrumentedCogVideoXProcessor(CogVideoXAttnProcessor2_0, _Instrumented):
    """Stands in for `CogVideoXAttnProcessor2_0` on the joint `attn1` ([text; video] tokens, text first)."""

    def __init__(self, controller: "AttentionController", original: Any, block: int, attention: str):
        if type(original) is not CogVideoXAttnProcessor2_0:
            hint = " (call unfuse_qkv_projections() first)" if "Fused" in type(original).__name__ else ""
            raise InstrumentError(
                f"block {block} attn1 uses {type(original).__name__}; motionguide instruments only the stock "
                f"CogVideoXAttnProcessor2_0{hint}"
            )
        super().__init__()
        self._setup(controller, original, block, "joint")

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        plan: CallPlan | None = self.controller._plan_call(self, hidden_states.shape[0])
        if plan is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

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
                frames=plan.info.grid.frames, text_len=text_seq_length,
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


#: instrumented processor class per backbone family
INSTRUMENTED_PROCESSORS: dict[str, type] = {
    "wan": InstrumentedWanProcessor,
    "cogvideox": InstrumentedCogVideoXProcessor,
}
