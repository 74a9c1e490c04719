"""Attention instruments on a `torch.compile`d transformer.

Idle instruments (installed, nothing subscribed) must compile as the stock model does: one graph with
`fullgraph=True`, no recompilation across forwards at different timesteps, none per block under regional
compilation. Frame-local attention (correspondence guidance) compiles with `fullgraph=True` too; captures (and the
IMAP probe, a capture) run with graph breaks at the captured attention calls. All must give what the uncompiled
model gives.

Compiled outputs are compared with `allclose` at float32 tolerance, not bit for bit: inductor fuses and reorders
floating-point operations, and even `aot_eager` runs AOTAutograd's decompositions of some operators.
Compilations are counted by a backend that counts the graphs it is handed.
"""

import pytest
import torch
import torch._dynamo

from motionguide.attention import AttentionController
from motionguide.backbones import backbone_for
from motionguide.saliency import saliency_for_latents
from motionguide.testing import (tiny_cogvideox_transformer, tiny_hunyuan_video_transformer, tiny_wan_pipeline,
                                 tiny_wan_transformer)

from helpers import cog_inputs, hunyuan_inputs, wan_inputs

TIMESTEPS = (900, 500, 100)
FAMILIES = ["wan", "cogvideox", "hunyuanvideo"]
FLOAT32 = dict(atol=1e-5, rtol=1e-4)


class CountingBackend:
    """A torch.compile backend that counts the graphs dynamo hands it, then compiles them with `backend`."""

    def __init__(self, backend: str = "aot_eager"):
        self.compile = torch._dynamo.lookup_backend(backend)
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return self.compile(graph_module, example_inputs)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _family(name):
    if name == "wan":
        transformer = tiny_wan_transformer()
        return transformer, wan_inputs(transformer)
    if name == "hunyuanvideo":  # dual- then single-stream blocks, text after video, padded text masked
        transformer = tiny_hunyuan_video_transformer()
        return transformer, hunyuan_inputs(transformer)
    transformer = tiny_cogvideox_transformer()
    return transformer, cog_inputs(transformer)


def _attention_kinds(transformer):
    return ("self", "text") if backbone_for(transformer).family == "wan" else "self"


def _at(inputs, timestep):
    return {**inputs, "timestep": torch.full_like(inputs["timestep"], timestep)}


def _outputs(model, inputs):
    with torch.no_grad():
        return [model(**_at(inputs, t))[0] for t in TIMESTEPS]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_idle_instruments_compile_to_one_full_graph_with_inductor(family):
    transformer, inputs = _family(family)
    stock = _outputs(transformer, inputs)
    backend = CountingBackend("inductor")
    compiled = torch.compile(transformer, fullgraph=True, backend=backend)
    with AttentionController(transformer).installed(attention=_attention_kinds(transformer)):
        outputs = _outputs(compiled, inputs)
    assert backend.graphs == 1  # no recompilation at a new timestep, no graph break (fullgraph)
    for got, want in zip(outputs, stock):
        torch.testing.assert_close(got, want, **FLOAT32)


def _compile_blocks(transformer, backend):
    for block in backbone_for(transformer).blocks:  # what `compile_repeated_blocks` does (Wan declares it)
        block.compile(fullgraph=True, backend=backend)


@pytest.mark.parametrize("family", FAMILIES)
def test_idle_instruments_add_no_compilation_under_regional_compilation(family):
    reference, inputs = _family(family)
    stock = _outputs(reference, inputs)
    stock_backend = CountingBackend()
    _compile_blocks(reference, stock_backend)
    _outputs(reference, inputs)
    torch._dynamo.reset()  # blocks share their forward's code, so the stock graphs would otherwise be reused
    transformer, _ = _family(family)
    backend = CountingBackend()
    with AttentionController(transformer).installed(attention=_attention_kinds(transformer)):
        _compile_blocks(transformer, backend)
        outputs = _outputs(transformer, inputs)
    # Wan: both blocks share one graph. Stock CogVideoX compiles its block twice (the first block's input has
    # other strides), with or without instruments; stock HunyuanVideo compiles its dual-stream block once and its
    # single-stream block twice (likewise); none is added per block or per timestep.
    assert backend.graphs == stock_backend.graphs == {"wan": 1, "cogvideox": 2, "hunyuanvideo": 3}[family]
    for got, want in zip(outputs, stock):
        torch.testing.assert_close(got, want, **FLOAT32)


def test_an_idle_model_exports():
    transformer = tiny_wan_transformer()
    inputs = wan_inputs(transformer)
    with torch.no_grad(), AttentionController(transformer).installed(attention=("self", "text")):
        exported = torch.export.export(transformer, args=(), kwargs=inputs)
        got = exported.module()(**inputs)[0]
        want = transformer(**inputs)[0]
    torch.testing.assert_close(got, want, **FLOAT32)


def _capture_events(model, controller, inputs, **scope):
    events = []

    def keep(capture):
        events.append((capture.block, capture.attention, capture.info.step_index,
                       capture.query.clone(), capture.key.clone(), capture.output.clone()))

    with controller.capture(keep, **scope):
        outputs = _outputs(model, inputs)
    return outputs, events


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_on_a_compiled_transformer_equals_the_uncompiled_one_without_recompiling_per_forward(family):
    transformer, inputs = _family(family)
    scope = dict(attention=_attention_kinds(transformer))
    stock = _outputs(transformer, inputs)
    controller = AttentionController(transformer)
    eager_outputs, eager_events = _capture_events(transformer, controller, inputs, **scope)
    backend = CountingBackend()
    compiled = torch.compile(transformer, backend=backend)
    with controller.installed(attention=_attention_kinds(transformer)):
        _outputs(compiled, inputs)
        assert backend.graphs == 1  # idle: one graph
        _capture_events(compiled, controller, inputs, **scope)  # busy: graph breaks, compiled once
        graphs_when_busy = backend.graphs
        outputs, events = _capture_events(compiled, controller, inputs, **scope)
        assert backend.graphs == graphs_when_busy  # a new scope and new timesteps reuse the graphs
        idle = _outputs(compiled, inputs)
        assert backend.graphs == graphs_when_busy  # the scope closed: back to the cached idle graph
    assert [e[:3] for e in events] == [e[:3] for e in eager_events]  # once per forward and module, in order
    assert len(events) == len(TIMESTEPS) * backbone_for(transformer).num_blocks * (2 if family == "wan" else 1)
    for got, want in zip(events, eager_events):
        for a, b in zip(got[3:], want[3:]):
            torch.testing.assert_close(a, b, **FLOAT32)
    for got, want in zip(outputs + idle, eager_outputs + stock):
        torch.testing.assert_close(got, want, **FLOAT32)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("renormalize", [True, False])
def test_frame_local_on_a_compiled_transformer_equals_the_uncompiled_one(family, renormalize):
    """Wan and CogVideoX: one full graph. HunyuanVideo's frame-local path reads each row's unmasked text length
    from the key mask (a data-dependent value), so it compiles with graph breaks there: no full graph, but nothing
    recompiled on a second pass or when the scope reopens."""
    transformer, inputs = _family(family)
    controller = AttentionController(transformer)
    stock = _outputs(transformer, inputs)
    with controller.frame_local(blocks=[1], renormalize=renormalize):
        eager = _outputs(transformer, inputs)
    backend = CountingBackend()
    fullgraph = family != "hunyuanvideo"
    compiled = torch.compile(transformer, fullgraph=fullgraph, backend=backend)  # frame-local breaks no graph
    with controller.frame_local(blocks=[1], renormalize=renormalize):
        first = _outputs(compiled, inputs)
        in_scope = backend.graphs
        again = _outputs(compiled, inputs)
    assert backend.graphs == in_scope and (in_scope == 1 or not fullgraph)  # every forward and timestep: reused
    plain = _outputs(compiled, inputs)  # the scope closed: the stock computation again, in its own graph
    after_plain = backend.graphs
    with controller.frame_local(blocks=[1], renormalize=renormalize):
        _outputs(compiled, inputs)
    assert backend.graphs == after_plain == (2 if fullgraph else after_plain)  # reopening the scope reuses its graph
    for got, want, off in zip(first + again, eager + eager, stock + stock):
        torch.testing.assert_close(got, want, **FLOAT32)
        assert not torch.allclose(got, off, **FLOAT32)  # the perturbation is really there
    for got, want in zip(plain, stock):
        torch.testing.assert_close(got, want, **FLOAT32)


def test_imap_probe_on_a_compiled_transformer_equals_the_uncompiled_one():
    pipe = tiny_wan_pipeline()
    latents = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    kw = dict(profile_or_blocks=[0, 1], top_k=1, timestep=400, max_sequence_length=16, seed=7)
    words = ["circle", "moves"]
    eager = saliency_for_latents(pipe, latents, "a red circle moves left", words, **kw)
    pipe.transformer.compile(backend=CountingBackend())  # in place: the pipeline keeps its transformer
    compiled = saliency_for_latents(pipe, latents, "a red circle moves left", words, **kw)
    assert compiled.selected_heads == eager.selected_heads
    for kind, value in eager.maps.items():
        torch.testing.assert_close(compiled.maps[kind], value, **FLOAT32)


def test_correspondence_guidance_with_a_compiled_transformer_equals_the_uncompiled_one():
    from motionguide.correspondence import correspondence_guided

    pipe = tiny_wan_pipeline()
    settings = dict(num_frames=9, height=16, width=16, num_inference_steps=2, max_sequence_length=16,
                    output_type="latent")

    def guided():
        with correspondence_guided(pipe, scale=0.7, blocks=[1], window=(0.0, 1.0), renormalize=False):
            return pipe("a red circle", generator=torch.Generator().manual_seed(0), **settings).frames

    eager = guided()
    backend = CountingBackend()
    pipe.transformer.compile(backend=backend)  # in place: the pipeline keeps its transformer
    first = guided()
    graphs = backend.graphs
    again = guided()
    assert backend.graphs == graphs  # a second guided generation compiles nothing new
    torch.testing.assert_close(first, eager, **FLOAT32)
    torch.testing.assert_close(again, eager, **FLOAT32)
