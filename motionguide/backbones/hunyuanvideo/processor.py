"""HunyuanVideo's instrumented attention processor: `HunyuanVideoAttnProcessor2_0` with hands for captures and
frame-local attention.

Installed by the :class:`~motionguide.attention.AttentionController` on the joint `attn` of a dual-stream block
(video through `to_q/k/v`, text through `add_q/k/v_proj`) or a single-stream block (one projection over
[video; text]). Either way the attention runs over [video; text], the text AFTER the video, RoPE on video only, and
the model masks padded text slots out of the keys. With nothing active for a call it hands the call to the stock
processor object unchanged; otherwise it runs the stock operations in the same order (outputs stay bit-identical)
and hands q / k / outputs to the captures (`text_last=True`, padded text slots left out), or swaps the kernel for
DiffTrack's frame-local one (https://arxiv.org/abs/2506.17220): each video query sees the prompt's text tokens and
the video keys of its own latent frame only; text queries keep full attention.

Under torch.compile idle instruments compile as stock (`fullgraph=True` works: tests/test_compile.py, with inductor
in the slow set); the frame-local path reads each row's unmasked text length from the mask (a data-dependent
value), so unlike Wan's and CogVideoX's it breaks the graph there and needs `fullgraph=False` (no recompilation
per forward: tested there too).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0

from ...attention.instrumented import InstrumentedProcessor, InstrumentError, Planner
from ...attention.kernels import frame_local_attention, sdpa_bshd


def valid_text_lengths(attention_mask: torch.Tensor | None, video_len: int, text_len: int, batch: int) -> list[int]:
    """Unmasked text slots per batch row, from the model's [B, 1, 1, S] key mask (None: all of them).

    The transformer builds that mask as "video, then the first n text slots": anything else is refused, since the
    frame-local kernel and the captures rely on it.
    """
    if attention_mask is None:
        return [text_len] * batch
    keys = attention_mask.reshape(attention_mask.shape[0], -1)
    if keys.shape[1] != video_len + text_len or keys.dtype != torch.bool:
        raise InstrumentError("HunyuanVideo attention mask is not the transformer's [B, 1, 1, video + text] key "
                              "mask; motionguide instruments only the stock transformer's calls")
    lengths = keys[:, video_len:].sum(dim=1).tolist()
    expected = torch.arange(text_len, device=keys.device)[None] < torch.tensor(lengths, device=keys.device)[:, None]
    if not bool(keys[:, :video_len].all()) or not torch.equal(keys[:, video_len:], expected):
        raise InstrumentError("HunyuanVideo attention mask is not 'all video, then a prefix of the text'")
    return [int(n) for n in lengths] * (batch // len(lengths))


def frame_local_video_last_text(query, key, value, frames: int, video_len: int, text_valid: list[int],
                                renormalize: bool) -> torch.Tensor:
    """Frame-local attention on [B, S, H, D] tensors laid out [video; text] with `text_valid[b]` unmasked text
    slots per row: video queries see the unmasked text and their own latent frame; every text query (padded ones
    too, as in the model) sees all video and the unmasked text. Row by row, since rows may differ in text length."""
    rows = []
    for b, n_text in enumerate(text_valid):
        q, k, v = query[b:b + 1], key[b:b + 1], value[b:b + 1]
        keep = slice(video_len, video_len + n_text)
        text_first = [torch.cat([t[:, keep], t[:, :video_len]], dim=1) for t in (q, k, v)]
        video_out = frame_local_attention(*text_first, frames=frames, text_len=n_text, renormalize=renormalize,
                                          attend=sdpa_bshd)[:, n_text:]
        text_out = sdpa_bshd(q[:, video_len:], k[:, :video_len + n_text], v[:, :video_len + n_text])
        rows.append(torch.cat([video_out, text_out], dim=1))
    return torch.cat(rows, dim=0)


class InstrumentedHunyuanVideoProcessor(InstrumentedProcessor, HunyuanVideoAttnProcessor2_0):
    """Stands in for `HunyuanVideoAttnProcessor2_0` on a dual- or single-stream block's `attn` ([video; text])."""

    def __init__(self, controller: Planner, original: Any, block: int, attention: str):
        if type(original) is not HunyuanVideoAttnProcessor2_0:
            raise InstrumentError(
                f"block {block} attn uses {type(original).__name__}; motionguide instruments only the stock "
                "HunyuanVideoAttnProcessor2_0"
            )
        HunyuanVideoAttnProcessor2_0.__init__(self)
        InstrumentedProcessor.__init__(self, controller, original, block, "joint")

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if not self.active:  # idle: the stock processor, with nothing read that a compiled graph would guard on
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if not self.capturing:  # frame-local only
            plan, frames = self.frame_local_plan()
            return self._attend(plan, frames, attn, hidden_states, encoder_hidden_states, attention_mask,
                                image_rotary_emb)
        return self.instrumented_call(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    @torch.compiler.disable
    def instrumented_call(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                          image_rotary_emb=None):
        """A call at a module a capture covers; eager under torch.compile (captures call arbitrary Python)."""
        plan = self.plan(hidden_states.shape[0])
        if plan is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        return self._attend(plan, plan.info.grid.frames, attn, hidden_states, encoder_hidden_states, attention_mask,
                            image_rotary_emb)

    def _attend(self, plan, frames, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb):
        """The stock processor's operations in its order, with the plan's kernel swap and captures."""
        if encoder_hidden_states is None:
            raise InstrumentError("HunyuanVideo attention without text tokens is not a video block's attention")
        video_len, text_len = hidden_states.shape[1], encoder_hidden_states.shape[1]
        single_stream = attn.add_q_proj is None
        if single_stream:
            hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)

        query = attn.to_q(hidden_states).unflatten(2, (attn.heads, -1))
        key = attn.to_k(hidden_states).unflatten(2, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        query_pre_rope, key_pre_rope = query, key  # RoPE below builds new tensors: these stay pre-RoPE
        if image_rotary_emb is not None:
            if single_stream:
                query = torch.cat([apply_rotary_emb(query[:, :-text_len], image_rotary_emb, sequence_dim=1),
                                   query[:, -text_len:]], dim=1)
                key = torch.cat([apply_rotary_emb(key[:, :-text_len], image_rotary_emb, sequence_dim=1),
                                 key[:, -text_len:]], dim=1)
            else:
                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        if not single_stream:
            encoder_query = attn.add_q_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            encoder_key = attn.add_k_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            encoder_value = attn.add_v_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            if attn.norm_added_q is not None:
                encoder_query = attn.norm_added_q(encoder_query)
            if attn.norm_added_k is not None:
                encoder_key = attn.norm_added_k(encoder_key)
            query = torch.cat([query, encoder_query], dim=1)
            key = torch.cat([key, encoder_key], dim=1)
            value = torch.cat([value, encoder_value], dim=1)
            if plan.captures and plan.wants_pre_rope:
                query_pre_rope = torch.cat([query_pre_rope, encoder_query], dim=1)
                key_pre_rope = torch.cat([key_pre_rope, encoder_key], dim=1)

        if plan.frame_local is not None:
            text_valid = valid_text_lengths(attention_mask, video_len, text_len, query.shape[0])
            out = frame_local_video_last_text(query, key, value, frames, video_len, text_valid,
                                              plan.frame_local.renormalize)
        else:
            out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                                        backend=self._attention_backend, parallel_config=self._parallel_config)
        if plan.captures:
            # padded text slots are masked out of every key: hand over the video and the unmasked text only
            kept = video_len + max(valid_text_lengths(attention_mask, video_len, text_len, query.shape[0]))
            pre = plan.wants_pre_rope
            plan.emit(self, query[:, :kept].transpose(1, 2), key[:, :kept].transpose(1, 2),
                      out[:, :kept].transpose(1, 2), text_len=kept - video_len, text_last=True,
                      query_pre_rope=query_pre_rope[:, :kept].transpose(1, 2) if pre else None,
                      key_pre_rope=key_pre_rope[:, :kept].transpose(1, 2) if pre else None)

        hidden_states = out.flatten(2, 3).to(query.dtype)
        hidden_states, encoder_hidden_states = hidden_states[:, :-text_len], hidden_states[:, -text_len:]
        if getattr(attn, "to_out", None) is not None:
            hidden_states = attn.to_out[0](hidden_states)
            hidden_states = attn.to_out[1](hidden_states)
        if getattr(attn, "to_add_out", None) is not None:
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states
