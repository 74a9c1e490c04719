"""One test matrix over every registered model family's tiny random config: the instruments are exact, and the
methods run on each family as they do on Wan2.1.

Families (ids): Wan2.1 ("wan2.1"), CogVideoX-2B ("cogvideox-2b": sin-cos positions), CogVideoX-5B-like
("cogvideox-5b": 3D RoPE, the 5B's layout at tiny size) and HunyuanVideo ("hunyuanvideo": one dual-stream then two
single-stream blocks, text AFTER video, padded text masked out of the keys, embedded guidance), Wan2.2-TI2V-5B-like
("wan2.2-ti2v-5b": 48 latent channels, per-token timesteps, the 16x VAE in its pipeline) and, among the
pipelines, Wan2.2-T2V-A14B-like ("wan2.2-t2v-a14b": two experts split at t = 875) and the image-to-video models:
CogVideoX-5B-I2V-like ("cogvideox-5b-i2v": noise + image latents on the channel axis, 3D RoPE) and Wan2.1-I2V-like
("wan2.1-i2v": noise + mask + condition-video latents, CLIP image tokens through the added key / value projections
of the cross-attention, 512 text tokens) and Wan2.2-I2V-A14B-like ("wan2.2-i2v-a14b": two experts split at t = 900,
each reading noise + mask + condition-video latents, no CLIP branch); every method call passes the conditioning
image. Each family case says only how to build its model and inputs and how to recompute its attention from the
module's weights (written here from the papers' equations, not from the processors); the tests themselves are shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from motionguide.attention import AttentionController
from motionguide.backbones import backbone_for, condition_kwargs, image_pixels, supported_families
from motionguide.motive.featurizer import select_parameters
from motionguide.testing import (tiny_cogvideox_transformer, tiny_hunyuan_video_transformer,
                                 tiny_wan_transformer)

from helpers import (MatrixProjector, cog_inputs, cog_rotary, hunyuan_inputs, rope_interleaved_complex,
                     wan_inputs)

FRAMES, SIZE = 3, 8
PER_FRAME = (SIZE // 2) ** 2


def _heads(x, heads):
    return x.unflatten(-1, (heads, -1))  # [B, S, H, D]


def _rotate(y, rotary):
    """Interleaved-pair RoPE on [B, S, H, D] with (cos, sin) [S, D] (Wan passes [1, S, 1, D] already)."""
    cos, sin = rotary
    if cos.ndim == 2:
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return rope_interleaved_complex(y, cos, sin)


# ---------------------------------------------------------------------------------------------- the families
@dataclass
class Reference:
    """q / k / v [B, H, S, D] recomputed from the weights, which positions are text, which keys the model masks."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    is_text: torch.Tensor  # [S] bool
    key_valid: torch.Tensor  # [S] bool


def _wan_reference(attn, args, kwargs):
    x, rotary = args[0], args[3]
    q = _rotate(_heads(attn.norm_q(attn.to_q(x)), attn.heads), rotary)
    k = _rotate(_heads(attn.norm_k(attn.to_k(x)), attn.heads), rotary)
    v = _heads(attn.to_v(x), attn.heads)
    s = x.shape[1]
    return Reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), torch.zeros(s, dtype=torch.bool),
                     torch.ones(s, dtype=torch.bool))


def _cog_reference(attn, args, kwargs):
    hidden, text, rotary = kwargs["hidden_states"], kwargs["encoder_hidden_states"], kwargs.get("image_rotary_emb")
    x, t = torch.cat([text, hidden], dim=1), text.shape[1]
    q = attn.norm_q(_heads(attn.to_q(x), attn.heads).transpose(1, 2)).transpose(1, 2)
    k = attn.norm_k(_heads(attn.to_k(x), attn.heads).transpose(1, 2)).transpose(1, 2)
    v = _heads(attn.to_v(x), attn.heads)
    if rotary is not None:
        q = torch.cat([q[:, :t], _rotate(q[:, t:], rotary)], dim=1)
        k = torch.cat([k[:, :t], _rotate(k[:, t:], rotary)], dim=1)
    is_text = torch.arange(x.shape[1]) < t
    return Reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_text,
                     torch.ones(x.shape[1], dtype=torch.bool))


def _hunyuan_reference(attn, args, kwargs):
    hidden, text = kwargs["hidden_states"], kwargs["encoder_hidden_states"]
    mask, rotary = kwargs["attention_mask"], kwargs["image_rotary_emb"]
    n = hidden.shape[1]
    if attn.add_q_proj is None:  # single stream: one projection over [video; text]
        x = torch.cat([hidden, text], dim=1)
        q, k, v = (_heads(proj(x), attn.heads) for proj in (attn.to_q, attn.to_k, attn.to_v))
        q, k = attn.norm_q(q), attn.norm_k(k)
    else:  # dual stream: video and text have their own projections and norms
        q = torch.cat([attn.norm_q(_heads(attn.to_q(hidden), attn.heads)),
                       attn.norm_added_q(_heads(attn.add_q_proj(text), attn.heads))], dim=1)
        k = torch.cat([attn.norm_k(_heads(attn.to_k(hidden), attn.heads)),
                       attn.norm_added_k(_heads(attn.add_k_proj(text), attn.heads))], dim=1)
        v = torch.cat([_heads(attn.to_v(hidden), attn.heads), _heads(attn.add_v_proj(text), attn.heads)], dim=1)
    q = torch.cat([_rotate(q[:, :n], rotary), q[:, n:]], dim=1)  # RoPE on video only
    k = torch.cat([_rotate(k[:, :n], rotary), k[:, n:]], dim=1)
    s = q.shape[1]
    return Reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), torch.arange(s) >= n,
                     mask.reshape(-1, s)[0].bool())


def _ti2v_inputs(transformer):
    """Wan2.2-TI2V-5B's call: one timestep per token ([B, tokens], `expand_timesteps`), all equal in text-to-video."""
    inputs = wan_inputs(transformer, FRAMES, SIZE)
    return {**inputs, "timestep": torch.full((1, FRAMES * PER_FRAME), 500)}


def _wan_i2v_inputs(transformer):
    """Wan2.1-I2V's call: 36 input channels, 512 text tokens (the stock processor splits the image context off at
    512) and CLIP image tokens."""
    g = torch.Generator().manual_seed(1)
    inputs = wan_inputs(transformer, FRAMES, SIZE, text_len=512)
    image = torch.randn(1, 17, transformer.config.image_dim, generator=g)
    return {**inputs, "encoder_hidden_states_image": image}


def _hunyuan_inputs(transformer):
    return hunyuan_inputs(transformer, FRAMES, SIZE)


@dataclass
class Family:
    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[torch.nn.Module], dict]
    reference: Callable


def _cog_rope_inputs(transformer):
    return {**cog_inputs(transformer, FRAMES, SIZE), "image_rotary_emb": cog_rotary(transformer, FRAMES, SIZE)}


FAMILIES = [
    Family("wan2.1", lambda: tiny_wan_transformer(), lambda m: wan_inputs(m, FRAMES, SIZE), _wan_reference),
    Family("cogvideox-2b", lambda: tiny_cogvideox_transformer(), lambda m: cog_inputs(m, FRAMES, SIZE),
           _cog_reference),
    Family("cogvideox-5b", lambda: tiny_cogvideox_transformer(rotary=True), _cog_rope_inputs, _cog_reference),
    Family("hunyuanvideo", lambda: tiny_hunyuan_video_transformer(), _hunyuan_inputs, _hunyuan_reference),
    Family("wan2.2-ti2v-5b", lambda: tiny_wan_transformer(in_channels=48), _ti2v_inputs, _wan_reference),
    Family("cogvideox-5b-i2v", lambda: tiny_cogvideox_transformer(rotary=True, image_to_video=True), _cog_rope_inputs,
           _cog_reference),
    Family("wan2.1-i2v", lambda: tiny_wan_transformer(image_to_video=True), _wan_i2v_inputs, _wan_reference),
    Family("wan2.2-i2v-a14b", lambda: tiny_wan_transformer(image_to_video=True, image_dim=None),
           lambda m: wan_inputs(m, FRAMES, SIZE), _wan_reference),
]


@pytest.fixture(params=FAMILIES, ids=lambda f: f.name)
def family(request):
    return request.param


def test_the_matrix_covers_every_registered_family():
    covered = {type(backbone_for(f.build())).family for f in FAMILIES}
    assert covered == set(supported_families())


# ---------------------------------------------------------------------------------------------- helpers
def _processors(transformer):
    return dict(transformer.attn_processors)


def _record_inputs(module):
    seen = {}

    def hook(mod, args, kwargs):
        seen.setdefault("calls", []).append((args, kwargs))

    return seen, module.register_forward_pre_hook(hook, with_kwargs=True)


def _dense(ref: Reference, frame_local: bool = False, renormalize: bool = True):
    """softmax(q k^T / sqrt(d)) v in float64 over the keys the model does not mask; frame-local: a video query keeps
    text keys and its own latent frame (renormalised, or DiffTrack's full softmax with the rest zeroed)."""
    q, k, v = ref.query.double(), ref.key.double(), ref.value.double()
    logits = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~ref.key_valid, float("-inf"))
    if not frame_local:
        return (logits.softmax(-1) @ v).float()
    video_index = torch.cumsum(~ref.is_text, 0) - 1
    frame_of = torch.where(ref.is_text, torch.full_like(video_index, -1), video_index // PER_FRAME)
    allowed = (frame_of[:, None] == frame_of[None, :]) | ref.is_text[None, :] | ref.is_text[:, None]
    if renormalize:
        probs = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    else:
        probs = logits.softmax(-1) * allowed
    return (probs @ v).float()


def _kept(ref: Reference) -> int:
    """Positions a capture holds: everything but masked keys at the end of the sequence (HunyuanVideo's padding)."""
    return int(ref.key_valid.nonzero().max()) + 1


# ---------------------------------------------------------------------------------------------- mechanism
@torch.no_grad()
def test_instruments_idle_capturing_and_removed_leave_the_output_bit_identical(family):
    transformer = family.build()
    backbone = backbone_for(transformer)
    inputs = family.inputs(transformer)
    before = _processors(transformer)
    stock = transformer(**inputs)[0]
    controller = AttentionController(transformer)
    with controller.installed(attention=("self", "text")):
        modules = [backbone.attention_module(b, kind) for b in range(backbone.num_blocks) for kind in ("self", "text")]
        assert all(type(m.processor).__name__.startswith("Instrumented") for m in modules)
        idle = transformer(**inputs)[0]
    events = []
    with controller.capture(events.append, attention=("self", "text"), pre_rope=True):
        captured = transformer(**inputs)[0]
    after = transformer(**inputs)[0]
    assert events and all(e.query_pre_rope is not None for e in events)
    assert torch.equal(stock, idle) and torch.equal(stock, captured) and torch.equal(stock, after)
    assert all(p is before[n] for n, p in _processors(transformer).items())
    assert not controller.is_installed


@torch.no_grad()
def test_capture_hands_over_the_q_k_and_output_the_weights_give(family):
    transformer = family.build()
    backbone = backbone_for(transformer)
    inputs = family.inputs(transformer)
    last = backbone.num_blocks - 1  # HunyuanVideo: a single-stream block; block 0 is dual-stream
    for block in (0, last):
        attn = backbone.video_self_attention(block)
        seen, hook = _record_inputs(attn)
        events = []
        with AttentionController(transformer).capture(events.append, blocks=[block]):
            transformer(**inputs)
        hook.remove()
        (event,) = events
        ref = family.reference(attn, *seen["calls"][0])
        kept = _kept(ref)
        assert event.block == block and event.grid.as_tuple() == (FRAMES, SIZE // 2, SIZE // 2)
        torch.testing.assert_close(event.query, ref.query[:, :, :kept], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(event.key, ref.key[:, :, :kept], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(event.output, _dense(ref)[:, :, :kept], atol=1e-5, rtol=1e-5)
        video = ~ref.is_text[:kept]
        torch.testing.assert_close(event.video_query(), ref.query[:, :, :kept][:, :, video], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(event.video_key(), ref.key[:, :, :kept][:, :, video], atol=1e-5, rtol=1e-5)
        assert event.video_query().shape[2] == FRAMES * PER_FRAME
        text_key = event.text_key()
        if ref.is_text.any():
            torch.testing.assert_close(text_key, ref.key[:, :, :kept][:, :, ~video], atol=1e-5, rtol=1e-5)
        else:
            assert text_key is None


@pytest.mark.parametrize("renormalize", [True, False], ids=["renormalised", "difftrack"])
@torch.no_grad()
def test_frame_local_attention_equals_a_dense_masked_reference(family, renormalize):
    transformer = family.build()
    backbone = backbone_for(transformer)
    inputs = family.inputs(transformer)
    stock = transformer(**inputs)[0]
    before = _processors(transformer)
    block = backbone.num_blocks - 1
    attn = backbone.video_self_attention(block)
    seen, hook = _record_inputs(attn)
    events = []
    controller = AttentionController(transformer)
    with controller.frame_local(blocks=[block], renormalize=renormalize), \
            controller.capture(events.append, blocks=[block]):
        local = transformer(**inputs)[0]
    hook.remove()
    (event,) = events
    ref = family.reference(attn, *seen["calls"][0])
    kept = _kept(ref)
    expected = _dense(ref, frame_local=True, renormalize=renormalize)[:, :, :kept]
    torch.testing.assert_close(event.output, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(local, stock)  # the scope acted ...
    assert torch.equal(transformer(**inputs)[0], stock) and _processors(transformer) == before  # ... only inside it


def test_params_blocks_selects_exactly_the_named_blocks(family):
    transformer = family.build()
    backbone = backbone_for(transformer)
    chosen_blocks = [0, backbone.num_blocks - 1]
    chosen = [name for name, _ in select_parameters(transformer, "blocks", chosen_blocks)]
    modules = [backbone.blocks[b] for b in chosen_blocks]
    expected = {name for name, p in transformer.named_parameters()
                if any(p is q for m in modules for q in m.parameters())}
    assert chosen and set(chosen) == expected
    assert chosen == [name for name, _ in transformer.named_parameters() if name in expected]


# ---------------------------------------------------------------------------------------------- the methods
PIPE_KW = dict(num_frames=9, height=16, width=16, num_inference_steps=2, max_sequence_length=16,
               output_type="latent")
PROMPT = "a red circle moves left"


def _flow_target(backbone, x0, noise, t):
    return noise - x0  # flow-matching velocity (Wan, HunyuanVideo)


def _v_target(backbone, x0, noise, t):
    a = backbone.scheduler.alphas_cumprod[t.long()].view(-1, 1, 1, 1, 1)
    return a.sqrt() * noise - (1 - a).sqrt() * x0  # v-prediction (CogVideoX)


@dataclass
class PipelineFamily:
    name: str
    build: Callable
    guidance_scale: float
    #: the scale is embedded guidance (an input of the transformer, HunyuanVideo), not CFG over two predictions
    embedded: bool
    target: Callable
    #: frame side in pixels (two tokens across: 16 on 8x VAEs, 32 on Wan2.2-TI2V-5B's 16x VAE)
    size: int = 16
    #: an image-to-video pipeline: its call takes `image=` and every transformer call its conditioning
    image: bool = False
    #: text tokens per prompt (Wan2.1-I2V: 512, where its attention splits image from text context)
    text_len: int = 16


def _tiny_pipeline(name):
    from motionguide.testing import (tiny_cogvideox_pipeline, tiny_hunyuan_video_pipeline, tiny_wan22_a14b_pipeline,
                                     tiny_wan22_i2v_a14b_pipeline, tiny_wan22_ti2v_i2v_pipeline,
                                     tiny_wan22_ti2v_pipeline, tiny_wan_i2v_pipeline, tiny_wan_pipeline)

    return {"wan2.1": tiny_wan_pipeline, "cogvideox-2b": tiny_cogvideox_pipeline,
            "cogvideox-5b": lambda: tiny_cogvideox_pipeline(rotary=True),
            "hunyuanvideo": tiny_hunyuan_video_pipeline, "wan2.2-ti2v-5b": tiny_wan22_ti2v_pipeline,
            "wan2.2-t2v-a14b": tiny_wan22_a14b_pipeline,
            "cogvideox-5b-i2v": lambda: tiny_cogvideox_pipeline(rotary=True, image_to_video=True),
            "wan2.1-i2v": tiny_wan_i2v_pipeline, "wan2.2-ti2v-5b-i2v": tiny_wan22_ti2v_i2v_pipeline,
            "wan2.2-i2v-a14b": tiny_wan22_i2v_a14b_pipeline}[name]()


PIPELINES = [
    PipelineFamily("wan2.1", lambda: _tiny_pipeline("wan2.1"), 5.0, False, _flow_target),
    PipelineFamily("cogvideox-2b", lambda: _tiny_pipeline("cogvideox-2b"), 6.0, False, _v_target),
    PipelineFamily("cogvideox-5b", lambda: _tiny_pipeline("cogvideox-5b"), 6.0, False, _v_target),
    PipelineFamily("hunyuanvideo", lambda: _tiny_pipeline("hunyuanvideo"), 6.0, True, _flow_target),
    PipelineFamily("wan2.2-ti2v-5b", lambda: _tiny_pipeline("wan2.2-ti2v-5b"), 5.0, False, _flow_target, size=32),
    PipelineFamily("wan2.2-t2v-a14b", lambda: _tiny_pipeline("wan2.2-t2v-a14b"), 5.0, False, _flow_target),
    PipelineFamily("cogvideox-5b-i2v", lambda: _tiny_pipeline("cogvideox-5b-i2v"), 6.0, False, _v_target, image=True),
    PipelineFamily("wan2.1-i2v", lambda: _tiny_pipeline("wan2.1-i2v"), 5.0, False, _flow_target, image=True,
                   text_len=512),
    PipelineFamily("wan2.2-ti2v-5b-i2v", lambda: _tiny_pipeline("wan2.2-ti2v-5b-i2v"), 5.0, False, _flow_target,
                   size=32, image=True),
    PipelineFamily("wan2.2-i2v-a14b", lambda: _tiny_pipeline("wan2.2-i2v-a14b"), 3.5, False, _flow_target,
                   image=True),
]
_BUILT: dict[str, object] = {}


@pytest.fixture(params=PIPELINES, ids=lambda f: f.name)
def pipeline_family(request):
    """(family, its tiny stock pipeline), the pipeline built once per module."""
    fam = request.param
    if fam.name not in _BUILT:
        _BUILT[fam.name] = fam.build()
    return fam, _BUILT[fam.name]


def _prompt_kwargs(pipe, fam, packed):
    """The stock pipeline's own prompt arguments for a prompt packed by the backbone."""
    if not fam.embedded:
        return {"prompt_embeds": packed}
    from motionguide.backbones.hunyuanvideo.adapter import unpack_prompt

    embeds, mask, pooled = unpack_prompt(packed, pipe.transformer.config.pooled_projection_dim)
    return {"prompt_embeds": embeds, "prompt_attention_mask": mask, "pooled_prompt_embeds": pooled}


def _frame(side, seed=4):
    """A seeded random uint8 RGB frame [side, side, 3] (the conditioning image of the image-to-video cases)."""
    return torch.randint(0, 256, (side, side, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _condition(backbone, latents, seed=4):
    """An image-to-video model's conditioning for latents [B, C, F', h, w]: a seeded random first frame encoded
    as its pipeline encodes its image (posterior mode); {} for text-to-video."""
    if not backbone.conditions_on_image:
        return {}
    _, _, f, h, w = latents.shape
    side = h * backbone.vae_scale_spatial
    with torch.no_grad():
        return backbone.encode_condition(image_pixels(_frame(side, seed)), 1 + backbone.vae_scale_temporal * (f - 1))


def _record_scheduler_inputs(pipe):
    seen, step = [], pipe.scheduler.step

    def recording(model_output, timestep, sample, *args, **kwargs):
        seen.append((model_output.clone(), timestep, sample.clone()))
        return step(model_output, timestep, sample, *args, **kwargs)

    pipe.scheduler.step = recording
    return seen


def test_guided_prediction_equals_separate_transformer_calls(pipeline_family):
    """CFG families: eps_u + w (eps_c - eps_u) + s (eps_c - eps_ptb), each eps one transformer call. HunyuanVideo
    (embedded guidance, no CFG pass): eps_c + s (eps_c - eps_ptb), with eps_c and eps_ptb both computed at the
    pipeline's embedded guidance scale: correspondence guidance composes with the guidance-distilled prediction."""
    from motionguide.correspondence import correspondence_guided

    fam, pipe = pipeline_family
    backbone = backbone_for(pipe)
    cond = backbone.encode_prompt([PROMPT], max_sequence_length=fam.text_len)
    uncond = None if fam.embedded else backbone.encode_prompt([""], max_sequence_length=fam.text_len)
    scale, blocks, w = 0.7, [1], fam.guidance_scale
    seen = _record_scheduler_inputs(pipe)
    negative = {} if fam.embedded else {"negative_prompt_embeds": uncond}
    size = dict(height=fam.size, width=fam.size)
    image, condition = {}, {}
    if fam.image:  # the pipeline encodes its image first, drawing from the call's generator: so does the check
        from PIL import Image

        frame = _frame(fam.size)
        image = {"image": Image.fromarray(frame.numpy())}
        with torch.no_grad():
            condition = backbone.encode_condition(image_pixels(frame), PIPE_KW["num_frames"],
                                                  generator=torch.Generator().manual_seed(0))
    extra_c = condition_kwargs(condition)
    try:
        with correspondence_guided(pipe, scale=scale, blocks=blocks, window=(0.5, 1.0), renormalize=False) as proxy:
            pipe(**_prompt_kwargs(pipe, fam, cond), **negative, **image, guidance_scale=w,
                 generator=torch.Generator().manual_seed(0), **{**PIPE_KW, **size, "max_sequence_length": fam.text_len})
    finally:
        del pipe.scheduler.step
    # the window [0.5, 1) holds step 1 of 2 (Wan2.2-T2V-A14B: t = 47 < 875, its low-noise expert)
    assert sum(p.perturbed_calls for p in proxy.experts) == 1 and len(seen) == 2
    extra = {"guidance": w} if fam.embedded else {}
    for step, (guided, t, latents) in enumerate(seen):
        x, tt = backbone.from_transformer_layout(latents), t.reshape(1)
        expert = backbone.for_timestep(float(t))  # the model that runs this step (one but for two-expert Wan2.2)
        with torch.no_grad():
            v_c = expert.predict(x, tt, cond, **extra, **extra_c)
            v = v_c
            if not fam.embedded:
                v_u = expert.predict(x, tt, uncond, **extra_c)
                v = v_u + w * (v_c - v_u)
            if step == 1:
                with AttentionController(expert).frame_local(blocks=blocks, renormalize=False):
                    v_ptb = expert.predict(x, tt, cond, **extra, **extra_c)
                v = v + scale * (v_c - v_ptb)
        torch.testing.assert_close(guided.float(), backbone.to_transformer_layout(v).float(), atol=1e-5, rtol=1e-5)


def test_saliency_maps_come_out_finite_for_every_word(pipeline_family):
    from motionguide.saliency import saliency_for_latents

    fam, pipe = pipeline_family
    backbone = backbone_for(pipe)
    channels = backbone.transformer.config.out_channels  # the latent channels (I2V reads more: its condition)
    latents = torch.randn(channels, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    condition = _condition(backbone, latents[None])
    maps = saliency_for_latents(pipe, latents, PROMPT, ["red", "circle"], [0, 1], top_k=1, timestep=500.0,
                                max_sequence_length=fam.text_len, condition=condition or None)
    grid = backbone.token_grid(tuple(backbone.to_transformer_layout(latents[None]).shape)).as_tuple()
    for kind in maps.kinds:
        assert maps.maps[kind].shape == (2, *grid) and torch.isfinite(maps.maps[kind]).all()
    assert set(maps.selected_heads) == {0, 1}


def test_motive_feature_equals_the_projection_of_the_autograd_gradient(pipeline_family):
    from motionguide.motive.featurizer import CommonRandomness, GradientFeaturizer

    fam, pipe = pipeline_family
    backbone = backbone_for(pipe)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(backbone.transformer.config.out_channels, 3, 4, 4, generator=g)
    embeds = backbone.encode_prompt([PROMPT], max_sequence_length=fam.text_len)[0]
    condition = _condition(backbone, latents[None])  # batch of one; the featurizer takes one clip's, unbatched
    mask = torch.rand(3, 4, 4, generator=g)
    randomness = CommonRandomness(timestep=751.0, seed=5)
    featurizer = GradientFeaturizer(backbone, lambda sizes: MatrixProjector(sizes, dim=8), randomness, scope="blocks",
                                    blocks=[0, backbone.num_blocks - 1])
    result = featurizer.featurize(latents, embeds, mask, num_pixel_frames=9,
                                  condition={k: v[0] for k, v in condition.items()} or None)

    expert = backbone.for_timestep(751.0)  # Wan2.2-T2V-A14B: 751 < 875, the low-noise transformer_2
    params = [p for _, p in select_parameters(expert.transformer, "blocks", [0, backbone.num_blocks - 1])]
    t = torch.tensor([751.0])
    noise, x0 = randomness.noise_for(latents.shape)[None], latents[None]
    pred = expert.predict(backbone.add_noise(x0, noise, t), t, embeds[None], **condition_kwargs(condition))
    skip = backbone.conditioned_latent_frames(condition)  # TI2V image-to-video: frame 0 is the image, not denoised
    err = (pred - fam.target(backbone, x0, noise, t))[:, :, skip:].square().mean(dim=1)
    grads = torch.autograd.grad((err * mask[skip:]).mean() / 9, params, allow_unused=True)
    flat = torch.cat([(gr if gr is not None else torch.zeros_like(p)).flatten() for gr, p in zip(grads, params)])
    reference = featurizer.projector.matrix @ flat
    torch.testing.assert_close(result.feature, reference / reference.norm(), atol=1e-5, rtol=1e-4)
    assert all(p.grad is None for model in backbone.experts for p in model.parameters())


@pytest.mark.parametrize("fam", PIPELINES, ids=lambda f: f.name)
def test_a_lora_fine_tune_reloads_exactly_through_the_stock_pipeline(fam, tmp_path):
    """Two optimiser steps of the family's own training loss on a LoRA per expert (one transformer: itself;
    Wan2.2-T2V-A14B: each expert at a timestep it owns); the stock pipeline's `load_lora_weights` (with
    `load_into_transformer_2=True` for the second expert's folder) on a fresh copy of the base model then
    predicts exactly what each fine-tuned expert predicts."""
    from motionguide.loading import expert_lora_folder
    from motionguide.training.lora import add_lora, save_expert_loras

    tuned, stock = fam.build(), fam.build()
    backbone = backbone_for(tuned)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(1, tuned.transformer.config.out_channels, 3, 4, 4, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    times = [torch.tensor([600.0]), torch.tensor([950.0])][:len(backbone.experts)]
    if len(times) == 2:
        times.reverse()  # transformer: the high-noise expert (t >= 875), transformer_2 below it
    with torch.no_grad():
        embeds = backbone.encode_prompt([PROMPT], max_sequence_length=fam.text_len)
    extra = condition_kwargs(_condition(backbone, x0))  # image-to-video: the first frame's conditioning
    experts = [backbone.for_timestep(float(t)) for t in times]
    assert [e.expert for e in experts] == list(range(len(experts)))
    for expert, t in zip(experts, times):
        add_lora(expert.transformer, rank=2, alpha=4, target_modules=["to_q", "to_k", "to_v"])
        optimizer = torch.optim.AdamW([p for p in expert.transformer.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(2):
            pred = expert.predict(backbone.add_noise(x0, noise, t), t, embeds, **extra)
            loss = (pred - fam.target(backbone, x0, noise, t)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    names = backbone.expert_names
    save_expert_loras(type(tuned), [(n, e.transformer) for n, e in zip(names, experts)], tmp_path / "lora")
    stock_backbone = backbone_for(stock)
    with torch.no_grad():
        base = [stock_backbone.for_timestep(float(t)).predict(backbone.add_noise(x0, noise, t), t, embeds, **extra)
                for t in times]
        for name in names:
            options = {} if name == "transformer" else {"load_into_transformer_2": True}
            stock.load_lora_weights(expert_lora_folder(tmp_path / "lora", name), **options)
        for t, before in zip(times, base):
            noisy = backbone.add_noise(x0, noise, t)
            reloaded = stock_backbone.for_timestep(float(t)).predict(noisy, t, embeds, **extra)
            trained = backbone.for_timestep(float(t)).predict(noisy, t, embeds, **extra)
            assert not torch.allclose(trained, before)  # the fine-tune changed the model ...
            assert torch.equal(reloaded, trained)  # ... and the stock loader reproduces it exactly


def test_tracking_a_real_video_returns_finite_tracks_for_every_frame(pipeline_family):
    from motionguide.correspondence import track_video

    fam, pipe = pipeline_family
    side = 2 * fam.size  # two tokens across (16 px per token, 32 on Wan2.2-TI2V-5B)
    frames = torch.randint(0, 256, (5, side, side, 3), generator=torch.Generator().manual_seed(3)).to(torch.uint8)
    queries = [[4.0, 4.0], [20.0, 12.0]]
    tracks = track_video(pipe, frames.numpy(), queries, block=1, timestep=500.0, chunk_size=2,
                         max_sequence_length=fam.text_len)
    assert tracks.shape == (2, 5, 2) and torch.isfinite(torch.as_tensor(tracks)).all()
    assert torch.equal(torch.as_tensor(tracks[:, 0]), torch.tensor(queries))  # frame 0 holds the queries
