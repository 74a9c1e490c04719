"""Removing the instruments leaves a model exactly as it was found, and leaves other people's settings working.

Checked on tiny random Wan and CogVideoX models, against the module tree (every module's attribute names, every
attention module's processor object and its attributes, the diffusers hooks on each module) and against outputs:

- install-then-remove (attention controller, prefix reuse, a whole guided call) deletes the hook registry and the
  instance-level `forward` it created;
- a diffusers cache (FasterCache, FirstBlockCache) enabled while instruments are installed works exactly as it
  would alone after they are removed;
- an attention backend set while instruments are installed reaches the stock processors and stays set.
"""

from __future__ import annotations

import pytest
import torch
from diffusers.hooks import FasterCacheConfig, FirstBlockCacheConfig
from diffusers.models.attention_dispatch import _AttentionBackendRegistry

from motionguide.attention import AttentionController, InstrumentError
from motionguide.backbones import backbone_for
from motionguide.correspondence.guidance import correspondence_guided
from motionguide.correspondence.prefix_reuse import PrefixReuse
from motionguide.testing import (tiny_cogvideox_pipeline, tiny_cogvideox_transformer, tiny_wan_pipeline,
                                 tiny_wan_transformer)

from helpers import cog_inputs, wan_inputs

PIPE_KW = dict(num_frames=9, height=16, width=16, num_inference_steps=4, max_sequence_length=16, output_type="latent",
               guidance_scale=5.0)
TRANSFORMERS = {"wan": (tiny_wan_transformer, wan_inputs), "cog": (tiny_cogvideox_transformer, cog_inputs)}
PIPELINES = {"wan": tiny_wan_pipeline, "cog": tiny_cogvideox_pipeline}


def tree(model: torch.nn.Module) -> dict:
    """Attribute names of every module, processor objects and their attributes, hook names per module."""
    out = {}
    for name, module in model.named_modules():
        registry = module.__dict__.get("_diffusers_hook")
        processor = getattr(module, "processor", None)
        out[name] = (
            sorted(module.__dict__),
            None if registry is None else list(registry._hook_order),
            None if processor is None else (id(processor), sorted(vars(processor).items(), key=lambda kv: kv[0])),
        )
    return out


def hook_names(model: torch.nn.Module) -> dict:
    """The diffusers hooks on each module, in order (what a second, identically set-up model must also carry).

    Empty registries are left out: one that `enable_cache` found already made by us goes with ours.
    """
    return {name: list(m._diffusers_hook._hook_order) for name, m in model.named_modules()
            if "_diffusers_hook" in m.__dict__ and m._diffusers_hook.hooks}


def run(pipe) -> torch.Tensor:
    return pipe("a red circle moves left", generator=torch.Generator().manual_seed(0), **PIPE_KW).frames


# ---------------------------------------------------------------------------------------------- install, remove
@pytest.mark.parametrize("which", ["wan", "cog"])
@pytest.mark.parametrize("scope", ["installed", "capture", "frame_local", "prefix_reuse"])
@torch.no_grad()
def test_install_then_remove_leaves_the_transformer_as_found(which, scope):
    build, inputs = TRANSFORMERS[which]
    transformer = build()
    stock = transformer(**inputs(transformer))[0]
    before = tree(transformer)
    controller = AttentionController(transformer)
    if scope == "installed":
        context = controller.installed(blocks=[0, 1])
    elif scope == "capture":
        context = controller.capture(lambda e: None, blocks=[1], attention=("self", "text"))
    elif scope == "frame_local":
        context = controller.frame_local(blocks=[1])
    else:
        context = PrefixReuse(backbone_for(transformer).blocks, 2, root=transformer).installed()
    with context:
        assert tree(transformer) != before  # something was installed ...
        transformer(**inputs(transformer))
    assert tree(transformer) == before  # ... and all of it is gone
    assert "_diffusers_hook" not in vars(transformer) and "forward" not in vars(transformer)
    assert torch.equal(transformer(**inputs(transformer))[0], stock)


@pytest.mark.parametrize("which", ["wan", "cog"])
@pytest.mark.parametrize("warm", [False, True])
@torch.no_grad()
def test_a_guided_call_leaves_the_pipeline_as_found(which, warm):
    pipe = PIPELINES[which]()
    if warm:  # a stock call leaves diffusers' own (empty) registry from `cache_context`: it must stay
        run(pipe)
    before = tree(pipe.transformer)
    with correspondence_guided(pipe, scale=1.0, blocks=[1], window=(0.0, 1.0)) as proxy:
        run(pipe)
    assert proxy.perturbed_calls > 0
    assert pipe.transformer is proxy.inner and tree(pipe.transformer) == before


def test_removal_refuses_when_something_else_wrapped_forward_above_our_hook():
    transformer = tiny_wan_transformer()
    with pytest.raises(InstrumentError, match="replaced"):
        with AttentionController(transformer).installed(blocks=[0]):
            ours = transformer.forward
            transformer.forward = lambda *args, **kwargs: ours(*args, **kwargs)  # not a diffusers hook


# ---------------------------------------------------------------------------------------------- foreign caches
def faster_cache(pipe):
    return FasterCacheConfig(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 901),
                             unconditional_batch_skip_range=2, attention_weight_callback=lambda _: 0.5,
                             is_guidance_distilled=False, current_timestep_callback=lambda: pipe.current_timestep)


def first_block_cache(pipe):
    return FirstBlockCacheConfig(threshold=10.0)


CACHES = {"faster": faster_cache, "first_block": first_block_cache}


def instruments(pipe, where: str):
    """Our instruments on the transformer root (controller hook + processors) or on the prefix blocks."""
    transformer = pipe.transformer
    if where == "controller":
        return AttentionController(pipe).capture(lambda e: None, blocks=[1])
    return PrefixReuse(backbone_for(pipe).blocks, 2, root=transformer).installed()


@pytest.mark.parametrize("which,cache,where", [
    ("cog", "faster", "controller"),
    ("cog", "first_block", "prefix_reuse"),
    ("wan", "first_block", "prefix_reuse"),
    ("wan", "first_block", "controller"),
])
@torch.no_grad()
def test_a_cache_enabled_while_instrumented_keeps_working_after_removal(which, cache, where):
    stock = run(PIPELINES[which]())
    alone = PIPELINES[which]()
    alone.transformer.enable_cache(CACHES[cache](alone))
    reference = run(alone)
    assert not torch.equal(reference, stock)  # the cache does change this run: it is switched on

    pipe = PIPELINES[which]()
    with instruments(pipe, where):
        pipe.transformer.enable_cache(CACHES[cache](pipe))
    assert hook_names(pipe.transformer) == hook_names(alone.transformer)
    assert torch.equal(run(pipe), reference)
    pipe.transformer.disable_cache()
    assert torch.equal(run(pipe), stock)


# ---------------------------------------------------------------------------------------------- attention backend
@pytest.fixture
def restore_active_backend():
    """`set_attention_backend` also sets diffusers' process-wide active backend: put it back afterwards."""
    active = _AttentionBackendRegistry._active_backend
    yield
    _AttentionBackendRegistry._active_backend = active


@pytest.mark.parametrize("which", ["wan", "cog"])
@torch.no_grad()
def test_an_attention_backend_set_while_instrumented_outlives_removal(which, restore_active_backend):
    build, inputs = TRANSFORMERS[which]
    alone = build()
    alone.set_attention_backend("_native_math")
    reference = alone(**inputs(alone))[0]

    transformer = build()
    controller = AttentionController(transformer)
    with controller.installed(blocks=[0, 1]):
        transformer.set_attention_backend("_native_math")
        assert torch.equal(transformer(**inputs(transformer))[0], reference)  # idle instruments use it too
    assert torch.equal(transformer(**inputs(transformer))[0], reference)
    strip = {name: (keys, hooks, proc and proc[1]) for name, (keys, hooks, proc) in tree(transformer).items()}
    assert strip == {name: (keys, hooks, proc and proc[1]) for name, (keys, hooks, proc) in tree(alone).items()}
    if which == "wan":
        assert str(transformer.blocks[0].attn1.processor._attention_backend.value) == "_native_math"
