"""Installing instruments (off and capture) leaves outputs bit-identical; removing them restores stock processors."""

import pytest
import torch

from motionguide.attention import AttentionController
from motionguide.testing import tiny_cogvideox_transformer, tiny_wan_transformer

from helpers import cog_inputs, cog_rotary, wan_inputs


def _processors(transformer):
    return {name: proc for name, proc in transformer.attn_processors.items()}


def _cases():
    wan = tiny_wan_transformer()
    yield "wan", wan, wan_inputs(wan)
    cog = tiny_cogvideox_transformer()
    yield "cogvideox", cog, cog_inputs(cog)
    rope = tiny_cogvideox_transformer(rotary=True)
    yield "cogvideox-rope", rope, {**cog_inputs(rope), "image_rotary_emb": cog_rotary(rope, 3, 8)}


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_off_and_capture_are_bit_identical_and_restore_processors(case):
    _, transformer, inputs = case
    before = _processors(transformer)
    with torch.no_grad():
        stock = transformer(**inputs)[0]
        controller = AttentionController(transformer)
        with controller.installed(attention=("self", "text")):
            assert all(p is not before[n] for n, p in _processors(transformer).items())
            off = transformer(**inputs)[0]
        events = []
        with controller.capture(events.append, attention=("self", "text")):
            captured = transformer(**inputs)[0]
        pre_rope_events = []
        with controller.capture(pre_rope_events.append, attention=("self", "text"), pre_rope=True):
            captured_pre_rope = transformer(**inputs)[0]
        after = transformer(**inputs)[0]
    assert events, "capture never fired"
    assert all(e.query_pre_rope is None for e in events)
    assert pre_rope_events and all(e.query_pre_rope is not None for e in pre_rope_events)
    assert torch.equal(stock, off)
    assert torch.equal(stock, captured)
    assert torch.equal(stock, captured_pre_rope)
    assert torch.equal(stock, after)
    assert all(p is before[n] for n, p in _processors(transformer).items())
    assert not controller.is_installed


def test_nested_scopes_restore_only_at_the_end():
    transformer = tiny_wan_transformer()
    original = transformer.blocks[0].attn1.processor
    controller = AttentionController(transformer)
    with controller.installed(blocks=[0]):
        with controller.capture(lambda e: None, blocks=[0]):
            pass
        assert transformer.blocks[0].attn1.processor is not original
    assert transformer.blocks[0].attn1.processor is original


def test_processors_restored_after_an_exception():
    transformer = tiny_wan_transformer()
    before = _processors(transformer)
    controller = AttentionController(transformer)
    with pytest.raises(RuntimeError, match="boom"):
        with controller.capture(lambda e: None):
            raise RuntimeError("boom")
    assert all(p is before[n] for n, p in _processors(transformer).items())


def test_fused_cogvideox_projections_are_refused():
    from motionguide.attention import InstrumentError

    transformer = tiny_cogvideox_transformer()
    transformer.fuse_qkv_projections()
    with pytest.raises(InstrumentError, match="unfuse"):
        with AttentionController(transformer).capture(lambda e: None, blocks=[0]):
            pass
