"""A made-up third model family, written entirely here, gets capture, frame-local attention and `--params blocks`.

The family's transformer is built from diffusers pieces (`Attention`, `FeedForward`) but keeps its blocks under
`layers` (Wan: `blocks`, CogVideoX: `transformer_blocks`) and runs its own attention processor class. All the library
is told is one adapter (a `VideoBackbone` subclass that returns its instrumented processor), registered with
`register_backbone`: nothing in `motionguide/` names this family.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.modeling_utils import ModelMixin

from motionguide.attention import AttentionController, InstrumentedProcessor, InstrumentError, frame_local_attention
from motionguide.attention.kernels import sdpa_bshd
from motionguide.motive.featurizer import select_parameters
from motionguide.backbones import TokenGrid, VideoBackbone, backbone_for, register_backbone

from helpers import dense_attention, frame_local_mask

FRAMES, SIZE, TEXT_LEN = 3, 8, 5
PER_FRAME = (SIZE // 2) ** 2


# ---------------------------------------------------------------------------------------------- the model
class TinyAttnProcessor:
    """The family's stock processor: plain scaled dot-product attention, self or cross."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = _heads(attn, attn.to_q(hidden_states)), _heads(attn, attn.to_k(context)), \
            _heads(attn, attn.to_v(context))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        return _merge(attn, out)


def _heads(attn, x):  # [B, S, H*D] -> [B, H, S, D]
    return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)


def _merge(attn, out):  # [B, H, S, D] -> to_out
    return attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2)))


class TinyBlock(torch.nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.mixer = Attention(query_dim=dim, heads=heads, dim_head=head_dim, bias=True, processor=TinyAttnProcessor())
        self.norm2 = torch.nn.LayerNorm(dim)
        self.cross = Attention(query_dim=dim, cross_attention_dim=dim, heads=heads, dim_head=head_dim, bias=True,
                               processor=TinyAttnProcessor())
        self.ff = FeedForward(dim, mult=2)

    def forward(self, x, text):
        x = x + self.mixer(self.norm1(x))
        x = x + self.cross(self.norm2(x), encoder_hidden_states=text)
        return x + self.ff(x)


class TinyDiTModel(ModelMixin, ConfigMixin):
    """Video latents [B, C, F, H, W] patched 1x2x2 into tokens in (frame, row, column) order."""

    @register_to_config
    def __init__(self, in_channels: int = 4, num_attention_heads: int = 2, attention_head_dim: int = 8,
                 num_layers: int = 3, text_dim: int = 12):
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        self.proj_in = torch.nn.Linear(in_channels * 4, dim)
        self.text_proj = torch.nn.Linear(text_dim, dim)
        self.layers = torch.nn.ModuleList(
            [TinyBlock(dim, num_attention_heads, attention_head_dim) for _ in range(num_layers)])
        self.proj_out = torch.nn.Linear(dim, in_channels * 4)

    def forward(self, hidden_states, encoder_hidden_states, timestep=None, return_dict=False):
        b, c, f, h, w = hidden_states.shape
        x = hidden_states.reshape(b, c, f, h // 2, 2, w // 2, 2).permute(0, 2, 3, 5, 1, 4, 6)
        x = self.proj_in(x.reshape(b, f * (h // 2) * (w // 2), c * 4))
        text = self.text_proj(encoder_hidden_states)
        for layer in self.layers:
            x = layer(x, text)
        x = self.proj_out(x).reshape(b, f, h // 2, w // 2, c, 2, 2).permute(0, 4, 1, 2, 5, 3, 6)
        return (x.reshape(b, c, f, h, w),)


# ---------------------------------------------------------------------------------------------- the family
class InstrumentedTinyProcessor(InstrumentedProcessor, TinyAttnProcessor):
    """`TinyAttnProcessor`'s operations in the same order, with captures and the frame-local kernel."""

    def __init__(self, controller, original, block, attention):
        if type(original) is not TinyAttnProcessor:
            raise InstrumentError(f"block {block} uses {type(original).__name__}, not TinyAttnProcessor")
        InstrumentedProcessor.__init__(self, controller, original, block, attention)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
        plan = self.plan(hidden_states.shape[0])
        if plan is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = _heads(attn, attn.to_q(hidden_states)), _heads(attn, attn.to_k(context)), \
            _heads(attn, attn.to_v(context))
        if plan.frame_local is not None:
            out = frame_local_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                        frames=plan.info.grid.frames, text_len=0,
                                        renormalize=plan.frame_local.renormalize, attend=sdpa_bshd).transpose(1, 2)
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        if plan.captures:
            plan.emit(self, query, key, out, text_len=0)
        return _merge(attn, out)


class TinyBackbone(VideoBackbone):
    family = "tinydit"
    transformer_class_names = ("TinyDiTModel",)
    text_layout = "cross"
    cfg_layout = "separate"

    @property
    def blocks(self):
        return self.transformer.layers

    @property
    def patch_size(self):
        return 1, 2, 2

    def video_self_attention(self, index):
        return self.blocks[self.check_block(index)].mixer

    def text_attention(self, index):
        return self.blocks[self.check_block(index)].cross

    def instrumented_processor(self, controller, original, block, attention):
        return InstrumentedTinyProcessor(controller, original, block, attention)

    def token_grid(self, latent_shape):
        _, _, f, h, w = latent_shape
        return TokenGrid(f, h // 2, w // 2)

    def normalize_latents(self, latents):
        return latents

    def denormalize_latents(self, latents):
        return latents

    def to_transformer_layout(self, latents):
        return latents

    def from_transformer_layout(self, latents):
        return latents

    def add_noise(self, latents, noise, timesteps):
        s = (timesteps.float() / 1000).view(-1, 1, 1, 1, 1)
        return (1 - s) * latents + s * noise

    def training_target(self, latents, noise, timesteps):
        return noise - latents

    def predict(self, latents, timesteps, prompt_embeds, model=None):
        return (model or self.transformer)(latents, prompt_embeds, timesteps)[0]


@pytest.fixture
def model(monkeypatch):
    """A seeded TinyDiTModel with its family registered for this test only."""
    from motionguide.backbones import registry

    monkeypatch.setattr(registry, "_ADAPTERS", list(registry._ADAPTERS))
    register_backbone(TinyBackbone)
    torch.manual_seed(0)
    return TinyDiTModel().eval()


def _inputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, model.config.in_channels, FRAMES, SIZE, SIZE, generator=g),
            torch.randn(1, TEXT_LEN, model.config.text_dim, generator=g))


def _tree(model):
    """What removal must restore: every module's attribute names and every attention module's processor object."""
    return ({name: sorted(m.__dict__) for name, m in model.named_modules()},
            {name: m.processor for name, m in model.named_modules() if isinstance(m, Attention)})


def _record(module):
    """The first input and the output of `module` for each call."""
    seen = []
    pre = module.register_forward_pre_hook(lambda m, args, kwargs: seen.append(dict(kwargs, x=args[0])),
                                           with_kwargs=True)
    post = module.register_forward_hook(lambda m, args, out: seen[-1].update(out=out))
    return seen, lambda: (pre.remove(), post.remove())


# ---------------------------------------------------------------------------------------------- the tests
def test_the_family_is_found_from_the_transformer(model):
    backbone = backbone_for(model)
    assert isinstance(backbone, TinyBackbone) and backbone.num_blocks == 3
    assert backbone.block_parameter_prefix(1) == "layers.1."


@torch.no_grad()
def test_capture_hands_over_the_attention_the_block_computed(model):
    hidden, text = _inputs(model)
    stock = model(hidden, text)[0]
    before = _tree(model)
    seen_self, done_self = _record(model.layers[1].mixer)
    seen_text, done_text = _record(model.layers[1].cross)
    events = []
    with AttentionController(model).capture(events.append, blocks=[1], attention=("self", "text")):
        out = model(hidden, text)[0]
    done_self(), done_text()
    assert torch.equal(out, stock)  # capturing changes nothing
    assert _tree(model) == before  # and removal leaves the model as found
    assert [(e.block, e.attention) for e in events] == [(1, "self"), (1, "text")]
    assert all(e.grid.as_tuple() == (FRAMES, SIZE // 2, SIZE // 2) for e in events)

    attn, x = model.layers[1].mixer, seen_self[0]["x"]
    q, k, v = (_heads(attn, proj(x)) for proj in (attn.to_q, attn.to_k, attn.to_v))
    torch.testing.assert_close(events[0].query, q)
    torch.testing.assert_close(events[0].key, k)
    torch.testing.assert_close(events[0].output, dense_attention(q, k, v), atol=1e-5, rtol=1e-5)

    attn, x, context = model.layers[1].cross, seen_text[0]["x"], seen_text[0]["encoder_hidden_states"]
    torch.testing.assert_close(events[1].query, _heads(attn, attn.to_q(x)))
    torch.testing.assert_close(events[1].text_key(), _heads(attn, attn.to_k(context)))
    assert events[1].key.shape[2] == TEXT_LEN and events[1].video_key() is None


@pytest.mark.parametrize("renormalize", [True, False])
@torch.no_grad()
def test_frame_local_attention_matches_a_dense_masked_reference(model, renormalize):
    hidden, text = _inputs(model)
    stock = model(hidden, text)[0]
    before = _tree(model)
    seen, done = _record(model.layers[0].mixer)
    with AttentionController(model).frame_local(blocks=[0], renormalize=renormalize):
        local = model(hidden, text)[0]
    done()
    attn, x = model.layers[0].mixer, seen[0]["x"]
    q, k, v = (_heads(attn, proj(x)) for proj in (attn.to_q, attn.to_k, attn.to_v))
    ref = _merge(attn, dense_attention(q, k, v, frame_local_mask(0, FRAMES, PER_FRAME), renormalize))
    torch.testing.assert_close(seen[0]["out"], ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(local, stock)  # the scope did act on the output ...
    assert torch.equal(model(hidden, text)[0], stock) and _tree(model) == before  # ... and only inside it


def test_params_blocks_selects_exactly_the_named_blocks(model):
    chosen = [name for name, _ in select_parameters(model, "blocks", [0, 2])]
    expected = [f"layers.{b}.{name}" for b in (0, 2) for name, _ in model.layers[b].named_parameters()]
    assert sorted(chosen) == sorted(expected) and chosen
    order = [name for name, _ in model.named_parameters()]
    assert chosen == [name for name in order if name in set(expected)]  # named_parameters() order


def test_a_family_without_an_instrumented_processor_is_refused_clearly(model, monkeypatch):
    monkeypatch.delattr(TinyBackbone, "instrumented_processor")
    before = _tree(model)
    with pytest.raises(InstrumentError, match="instrumented_processor"):
        with AttentionController(model).capture(lambda e: None, blocks=[0]):
            pass
    assert _tree(model) == before
