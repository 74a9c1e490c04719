"""Gating: captures fire once per forward under gradient checkpointing, and only on the conditional branch."""

import torch

from motionguide.attention import AttentionController
from motionguide.testing import tiny_cogvideox_pipeline, tiny_wan_pipeline, tiny_wan_transformer

from helpers import wan_inputs

PIPE_KW = dict(num_frames=9, height=16, width=16, num_inference_steps=2, max_sequence_length=16, output_type="latent")


def test_capture_fires_once_per_forward_under_gradient_checkpointing():
    transformer = tiny_wan_transformer().train()
    transformer.enable_gradient_checkpointing()
    inputs = wan_inputs(transformer)
    calls = []
    hook = transformer.blocks[0].attn1.register_forward_pre_hook(lambda m, a: calls.append(1))
    events = []
    with AttentionController(transformer).capture(events.append, blocks=[0]):
        for _ in range(2):
            transformer(**inputs)[0].square().mean().backward()
    hook.remove()
    assert len(calls) == 4, "the block should run twice per step (forward + recomputation)"
    assert len(events) == 2


def test_frame_local_gradients_match_with_and_without_checkpointing():
    grads = []
    for checkpointing in (False, True):
        transformer = tiny_wan_transformer().train()
        if checkpointing:
            transformer.enable_gradient_checkpointing()
        with AttentionController(transformer).frame_local(blocks=[0, 1], renormalize=False):
            transformer(**wan_inputs(transformer))[0].square().mean().backward()
        grads.append(transformer.blocks[0].attn1.to_q.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_wan_pipeline_two_steps_captures_conditional_passes_only():
    pipe = tiny_wan_pipeline()
    stock = pipe("a red circle moves left", generator=torch.Generator().manual_seed(0), **PIPE_KW).frames
    controller = AttentionController(pipe)
    cond, everything = [], []
    with controller.capture(cond.append, attention=("self", "text")), \
            controller.capture(everything.append, blocks=[0], branches="all"):
        out = pipe("a red circle moves left", generator=torch.Generator().manual_seed(0), **PIPE_KW).frames
    assert torch.equal(stock, out)
    # 2 steps x 2 blocks x (self, text), conditional passes only
    assert len(cond) == 8
    assert {e.info.branch for e in cond} == {"cond"}
    assert sorted({e.info.step_index for e in cond}) == [0, 1]
    assert {e.info.branch for e in everything} == {"cond", "uncond"} and len(everything) == 4
    assert all(e.grid.as_tuple() == (3, 1, 1) for e in cond)


def test_wan_pipeline_step_filter_and_frame_local_scope():
    pipe = tiny_wan_pipeline()
    events = []
    with AttentionController(pipe).capture(events.append, blocks=[1], steps={1}):
        pipe("a blue square moves up", **PIPE_KW)
    assert [e.info.step_index for e in events] == [1]


def test_cogvideox_pipeline_two_steps_captures_conditional_rows():
    pipe = tiny_cogvideox_pipeline(rotary=True)
    kw = dict(PIPE_KW, guidance_scale=6.0)
    stock = pipe("a red circle moves left", generator=torch.Generator().manual_seed(0), **kw).frames
    cond, everything = [], []
    controller = AttentionController(pipe)
    with controller.capture(cond.append, blocks=[0]), controller.capture(everything.append, blocks=[0], branches="all"):
        out = pipe("a red circle moves left", generator=torch.Generator().manual_seed(0), **kw).frames
    assert torch.equal(stock, out)
    assert len(cond) == 2 and len(everything) == 2
    for c, a in zip(cond, everything):
        assert c.info.branch == "cond_uncond"
        assert c.query.shape[0] == 1 and a.query.shape[0] == 2
        torch.testing.assert_close(c.query, a.query[1:])  # [uncond; cond]: the second row is conditional
        assert c.grid.as_tuple() == (3, 1, 1) and c.text_len == 16


def test_cogvideox_captures_know_their_step_and_perturbed_passes_are_not_conditional():
    pipe = tiny_cogvideox_pipeline()
    events = []
    with AttentionController(pipe).capture(events.append, blocks=[0], steps={1}):
        pipe("a red circle", **dict(PIPE_KW, guidance_scale=6.0))
    assert [e.info.step_index for e in events] == [1]  # from the scheduler: the cache context has no step
    transformer = tiny_wan_transformer()
    controller = AttentionController(transformer)
    seen = []
    from helpers import wan_inputs

    with controller.capture(seen.append, blocks=[0]):
        with transformer.cache_context("cond_perturbed"):
            transformer(**wan_inputs(transformer))
        with transformer.cache_context("cond"):
            transformer(**wan_inputs(transformer))
    assert [e.info.branch for e in seen] == ["cond"]



def test_cogvideox_dynamic_cfg_keeps_the_row_split_chosen_at_the_start_of_the_call():
    """`use_dynamic_cfg` rewrites the pipeline's guidance scale after every step, to values that no longer say
    whether the batch is [uncond; cond]: here CFG is off (scale 1) but the scale rises above 1 after step 0."""
    pipe = tiny_cogvideox_pipeline()
    kw = dict(PIPE_KW, num_inference_steps=3, guidance_scale=1.0, use_dynamic_cfg=True)
    cond, everything, scales = [], [], []
    controller = AttentionController(pipe)
    with controller.capture(cond.append, blocks=[0]), controller.capture(everything.append, blocks=[0], branches="all"):
        pipe(["a red circle moves left", "a blue square"],
             callback_on_step_end=lambda p, i, t, k: scales.append(p.guidance_scale) or {}, **kw)
    assert max(scales) > 1.0  # what the pipeline reports mid-call would say "CFG on"
    assert len(cond) == len(everything) == 3
    for c, a in zip(cond, everything):  # two videos, no CFG: both rows are conditional
        assert c.query.shape[0] == 2 and torch.equal(c.query, a.query)
