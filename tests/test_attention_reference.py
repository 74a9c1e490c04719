"""Captured q / k / outputs and frame-local outputs equal tensors recomputed in the test from module weights."""

import pytest
import torch

from motionguide.attention import AttentionController
from motionguide.testing import tiny_cogvideox_transformer, tiny_wan_transformer

from helpers import (cog_inputs, cog_rotary, dense_attention, frame_local_mask, rope_interleaved_complex,
                     wan_inputs)


def _record_inputs(module):
    seen = {}

    def hook(mod, args, kwargs):
        seen["args"], seen["kwargs"] = args, kwargs

    return seen, module.register_forward_pre_hook(hook, with_kwargs=True)


def _record_output(module):
    seen = {}
    return seen, module.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out))


def _heads(x, heads):
    return x.unflatten(-1, (heads, -1))  # [B, S, H, D]


def _wan_reference(attn, x, context, rotary):
    q = _heads(attn.norm_q(attn.to_q(x)), attn.heads)
    k = _heads(attn.norm_k(attn.to_k(context)), attn.heads)
    v = _heads(attn.to_v(context), attn.heads)
    if rotary is not None:
        q, k = rope_interleaved_complex(q, *rotary), rope_interleaved_complex(k, *rotary)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, S, D]


@torch.no_grad()
def test_wan_capture_matches_recomputation():
    transformer = tiny_wan_transformer()
    inputs = wan_inputs(transformer)
    block = transformer.blocks[1]
    seen1, h1 = _record_inputs(block.attn1)
    seen2, h2 = _record_inputs(block.attn2)
    events = []
    with AttentionController(transformer).capture(events.append, blocks=[1], attention=("self", "text")):
        transformer(**inputs)
    h1.remove(), h2.remove()
    by_kind = {e.attention: e for e in events}
    assert set(by_kind) == {"self", "text"}

    x, _, _, rotary = seen1["args"]
    q, k, v = _wan_reference(block.attn1, x, x, rotary)
    ev = by_kind["self"]
    assert ev.grid.as_tuple() == (3, 4, 4) and ev.block == 1
    torch.testing.assert_close(ev.video_query(), q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.video_key(), k, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.video_output(), dense_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert ev.text_key() is None

    x, context = seen2["args"][:2]
    q, k, v = _wan_reference(block.attn2, x, context, None)
    ev = by_kind["text"]
    torch.testing.assert_close(ev.video_query(), q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.text_key(), k, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.video_output(), dense_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert ev.video_key() is None


def _cog_reference(attn, hidden, text, rotary):
    x = torch.cat([text, hidden], dim=1)
    q = attn.norm_q(_heads(attn.to_q(x), attn.heads)).transpose(1, 2)
    k = attn.norm_k(_heads(attn.to_k(x), attn.heads)).transpose(1, 2)
    v = _heads(attn.to_v(x), attn.heads).transpose(1, 2)
    if rotary is not None:
        t = text.shape[1]
        cos, sin = (r[None, :, None, :] for r in rotary)  # [1, S_vid, 1, D]
        rot = lambda y: rope_interleaved_complex(y.transpose(1, 2), cos, sin).transpose(1, 2)  # noqa: E731
        q = torch.cat([q[:, :, :t], rot(q[:, :, t:])], dim=2)
        k = torch.cat([k[:, :, :t], rot(k[:, :, t:])], dim=2)
    return q, k, v


@pytest.mark.parametrize("rotary", [False, True])
@torch.no_grad()
def test_cogvideox_capture_matches_recomputation(rotary):
    transformer = tiny_cogvideox_transformer(rotary=rotary)
    inputs = cog_inputs(transformer)
    if rotary:
        inputs["image_rotary_emb"] = cog_rotary(transformer, 3, 8)
    attn = transformer.transformer_blocks[0].attn1
    seen, hook = _record_inputs(attn)
    events = []
    with AttentionController(transformer).capture(events.append, blocks=[0], attention="text"):
        transformer(**inputs)
    hook.remove()
    (ev,) = events
    kw = seen["kwargs"]
    q, k, v = _cog_reference(attn, kw["hidden_states"], kw["encoder_hidden_states"], kw.get("image_rotary_emb"))
    t = inputs["encoder_hidden_states"].shape[1]
    assert ev.attention == "joint" and ev.text_len == t and ev.grid.as_tuple() == (3, 4, 4)
    torch.testing.assert_close(ev.query, q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.key, k, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.output, dense_attention(q, k, v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.text_key(), k[:, :, :t])
    torch.testing.assert_close(ev.video_key(), k[:, :, t:])


@torch.no_grad()
def test_pre_rope_capture_equals_the_normalised_projections_before_rotation():
    """Reference: the outputs of each attention's own `norm_q` / `norm_k` modules, read with forward hooks."""
    wan = tiny_wan_transformer()
    attn = wan.blocks[1].attn1
    seen_q, hq = _record_output(attn.norm_q)
    seen_k, hk = _record_output(attn.norm_k)
    events = []
    with AttentionController(wan).capture(events.append, blocks=[1], pre_rope=True):
        wan(**wan_inputs(wan))
    hq.remove(), hk.remove()
    (ev,) = events
    torch.testing.assert_close(ev.video_query(pre_rope=True), _heads(seen_q["out"], attn.heads).transpose(1, 2))
    torch.testing.assert_close(ev.video_key(pre_rope=True), _heads(seen_k["out"], attn.heads).transpose(1, 2))
    assert not torch.allclose(ev.video_query(pre_rope=True), ev.video_query())  # the rotation did change them

    cog = tiny_cogvideox_transformer(rotary=True)
    inputs = {**cog_inputs(cog), "image_rotary_emb": cog_rotary(cog, 3, 8)}
    attn = cog.transformer_blocks[0].attn1
    events = []
    with AttentionController(cog).capture(events.append, blocks=[0], pre_rope=True):
        cog(**inputs)
    (ev,) = events
    t = ev.text_len
    # CogVideoX rotates norm_q's output in place, so a hook on norm_q would see post-RoPE values by the time it is
    # read: the pre-RoPE reference is recomputed from the projections instead.
    q_ref, k_ref, _ = _cog_reference(attn, *_cog_inputs_of(cog, inputs), None)
    torch.testing.assert_close(ev.query_pre_rope, q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.video_key(pre_rope=True), k_ref[:, :, t:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.query_pre_rope[:, :, :t], ev.query[:, :, :t])  # text tokens carry no RoPE
    with pytest.raises(ValueError, match="pre_rope=True"):
        events2 = []
        with AttentionController(cog).capture(events2.append, blocks=[0]):
            cog(**inputs)
        events2[0].video_query(pre_rope=True)


def _cog_inputs_of(transformer, inputs):
    """(hidden, text) as block 0's attention receives them, read with a pre-hook in one extra forward."""
    seen, hook = _record_inputs(transformer.transformer_blocks[0].attn1)
    transformer(**inputs)
    hook.remove()
    return seen["kwargs"]["hidden_states"], seen["kwargs"]["encoder_hidden_states"]


@pytest.mark.parametrize("renormalize", [True, False])
@torch.no_grad()
def test_wan_frame_local_module_matches_dense_mask(renormalize):
    transformer = tiny_wan_transformer()
    inputs = wan_inputs(transformer)
    attn = transformer.blocks[0].attn1
    seen, h1 = _record_inputs(attn)
    out, h2 = _record_output(attn)
    with AttentionController(transformer).frame_local(blocks=[0], renormalize=renormalize):
        transformer(**inputs)
    h1.remove(), h2.remove()
    x, _, _, rotary = seen["args"]
    q, k, v = _wan_reference(attn, x, x, rotary)
    ref = dense_attention(q, k, v, frame_local_mask(0, 3, 16), renormalize)
    ref = attn.to_out[0](ref.transpose(1, 2).flatten(2))
    torch.testing.assert_close(out["out"], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("renormalize", [True, False])
@torch.no_grad()
def test_cogvideox_frame_local_module_matches_dense_mask(renormalize):
    transformer = tiny_cogvideox_transformer(rotary=True)
    inputs = {**cog_inputs(transformer), "image_rotary_emb": cog_rotary(transformer, 3, 8)}
    attn = transformer.transformer_blocks[1].attn1
    seen, h1 = _record_inputs(attn)
    out, h2 = _record_output(attn)
    with AttentionController(transformer).frame_local(blocks=[1], renormalize=renormalize):
        transformer(**inputs)
    h1.remove(), h2.remove()
    kw = seen["kwargs"]
    t = kw["encoder_hidden_states"].shape[1]
    q, k, v = _cog_reference(attn, kw["hidden_states"], kw["encoder_hidden_states"], kw["image_rotary_emb"])
    ref = dense_attention(q, k, v, frame_local_mask(t, 3, 16), renormalize)
    ref = attn.to_out[0](ref.transpose(1, 2).flatten(2))
    video, text = out["out"]
    torch.testing.assert_close(text, ref[:, :t], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(video, ref[:, t:], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_frame_local_changes_output_only_inside_the_scope():
    transformer = tiny_wan_transformer()
    inputs = wan_inputs(transformer)
    stock = transformer(**inputs)[0]
    controller = AttentionController(transformer)
    with controller.frame_local(blocks=[0, 1]):
        perturbed = transformer(**inputs)[0]
    assert not torch.allclose(stock, perturbed)
    assert torch.equal(stock, transformer(**inputs)[0])
