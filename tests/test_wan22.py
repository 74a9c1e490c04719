"""Wan2.2: what differs from Wan2.1, checked against the stock pipeline and the configs' own numbers.

TI2V-5B: the 48-channel VAE that compresses 16x16 spatially, and per-token timesteps (`expand_timesteps`).
T2V-A14B: two experts, `transformer` for t >= boundary_ratio x 1000 and `transformer_2` below; every method runs
on the expert that owns its timestep. The shared method tests (guidance, saliency, Motive, LoRA, tracking) run on
both in tests/test_family_matrix.py; this file holds what only Wan2.2 has.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from motionguide.attention import AttentionController
from motionguide.backbones import ProvisionalProfileWarning, backbone_for
from motionguide.backbones.reference_configs import build_on_meta
from motionguide.backbones.wan import WanBackbone
from motionguide.errors import ConfigError
from motionguide.testing import tiny_wan22_a14b_pipeline, tiny_wan22_ti2v_pipeline, tiny_wan22_vae, tiny_wan_pipeline

PIPE_KW = dict(num_frames=9, height=16, width=16, num_inference_steps=3, max_sequence_length=16,
               output_type="latent")


@pytest.fixture(scope="module")
def a14b():
    return tiny_wan22_a14b_pipeline()


@pytest.fixture(scope="module")
def ti2v():
    return tiny_wan22_ti2v_pipeline()


def _record_attn1_inputs(pipe, block=1):
    """(attention module, hidden states) of every call of `block`'s attn1 in either expert, in call order."""
    calls, handles = [], []
    for expert in (pipe.transformer, pipe.transformer_2):
        module = expert.blocks[block].attn1
        handles.append(module.register_forward_pre_hook(
            lambda mod, args, kwargs: calls.append((mod, kwargs.get("hidden_states", args[0] if args else None))),
            with_kwargs=True))
    return calls, handles


# ---------------------------------------------------------------------------------------------- T2V-A14B
def test_the_boundary_is_ratio_times_train_steps_and_751_belongs_to_the_low_noise_expert(a14b):
    backbone = backbone_for(a14b)
    assert backbone.boundary_timestep == pytest.approx(875.0)
    assert [backbone.expert_index(t) for t in (1000.0, 875.0, 874.9, 751.0, 0.0)] == [0, 0, 1, 1, 1]
    low = backbone.for_timestep(751.0)
    assert low.transformer is a14b.transformer_2 and low.expert == 1 and low.vae is a14b.vae
    assert backbone.for_timestep(900.0) is backbone
    assert backbone_for(tiny_wan_pipeline()).boundary_timestep is None  # Wan2.1: one transformer, no boundary


def test_the_motive_pass_differentiates_the_expert_that_owns_t_fix_and_records_it(a14b):
    from motionguide.motive.featurizer import CommonRandomness, GradientFeaturizer, select_parameters

    backbone = backbone_for(a14b)
    projector = lambda sizes: SimpleNamespace(describe=lambda: {"name": "none"})  # noqa: E731 (nothing projected)
    low = GradientFeaturizer(backbone, projector, CommonRandomness(timestep=751.0), scope="all")
    high = GradientFeaturizer(backbone, projector, CommonRandomness(timestep=900.0), scope="all")
    owned = {id(p) for _, p in select_parameters(a14b.transformer_2, "all", None)}
    assert {id(p) for _, p in low.named} == owned and low.describe()["expert"] == 1
    assert not owned & {id(p) for _, p in high.named} and "expert" not in high.describe()


@torch.no_grad()
def test_the_adapter_picks_the_expert_the_stock_pipeline_runs_at_each_step(a14b):
    backbone = backbone_for(a14b)
    ran = []
    handles = [expert.register_forward_pre_hook(
        lambda mod, args, kwargs: ran.append((mod, float(kwargs["timestep"].flatten()[0]))), with_kwargs=True)
        for expert in backbone.experts]
    try:
        a14b("a red circle moves left", generator=torch.Generator().manual_seed(0), guidance_scale=5.0, **PIPE_KW)
    finally:
        for handle in handles:
            handle.remove()
    assert {id(module) for module, _ in ran} == {id(e) for e in backbone.experts}  # the steps straddle 875
    for module, t in ran:
        assert module is backbone.experts[backbone.expert_index(t)]


@torch.no_grad()
def test_a_capture_during_sampling_reads_whichever_expert_runs_each_step(a14b):
    """One capture per step (conditional pass only), each holding q of the expert that ran: recomputed here from
    that expert's own attn1 weights and the input it received."""
    backbone = backbone_for(a14b)
    events = []
    calls, handles = _record_attn1_inputs(a14b)
    try:
        with AttentionController(a14b).capture(events.append, blocks=[1], pre_rope=True):
            a14b("a red circle moves left", generator=torch.Generator().manual_seed(0), guidance_scale=5.0,
                 **PIPE_KW)
    finally:
        for handle in handles:
            handle.remove()
    assert len(events) == PIPE_KW["num_inference_steps"] and len(calls) == 2 * len(events)  # cond + uncond
    experts_seen = set()
    for step, event in enumerate(events):
        attn, hidden = calls[2 * step]  # the conditional call of this step
        expert = backbone.experts[backbone.expert_index(event.info.timestep)]
        assert attn is expert.blocks[1].attn1
        experts_seen.add(backbone.expert_index(event.info.timestep))
        q = attn.norm_q(attn.to_q(hidden)).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
        torch.testing.assert_close(event.query_pre_rope, q, atol=1e-6, rtol=1e-5)
    assert experts_seen == {0, 1}
    stock = type(a14b.transformer.blocks[0].attn1.processor).__name__
    assert all(type(b.attn1.processor).__name__ == stock for e in backbone.experts for b in e.blocks)


def test_the_trainer_refuses_a_two_expert_pipeline_before_caching_naming_the_lora_per_expert(a14b, ti2v, tmp_path):
    from pathlib import Path

    from motionguide.training.config import TrainConfig
    from motionguide.training.loop import Trainer

    from motionguide.toy import make_dataset

    a14b.save_pretrained(tmp_path / "model")
    make_dataset(tmp_path / "data", num_clips=2, seed=3, progress=False)
    configs = Path(__file__).resolve().parent.parent / "configs"
    cfg = TrainConfig.load(configs / "wan2.1-t2v-1.3b.yaml", [
        "--pretrained_model_name_or_path", str(tmp_path / "model"), "--output_dir", str(tmp_path / "out"),
        "--data_root", str(tmp_path / "data"), "--latent_cache_dir", str(tmp_path / "cache"),
        "--num_frames", "9", "--height", "16", "--width", "16", "--max_sequence_length", "16",
        "--train_steps", "1", "--report_to", "none", "--validation_prompts", "", "--mixed_precision", "no"])
    with pytest.raises(ConfigError, match="needs a LoRA per expert"):
        Trainer(cfg).run()
    assert not (tmp_path / "cache").exists()  # refused before any latent was cached
    backbone_for(ti2v).check_trainable()  # one transformer: trainable (its fine-tune: tests/test_training_config.py)


def test_a14b_ships_its_own_provisional_profile_not_wan21_14b_of_the_same_shape():
    experts = build_on_meta("wan2.2-t2v-a14b"), build_on_meta("wan2.2-t2v-a14b")
    pipeline = SimpleNamespace(transformer=experts[0], transformer_2=experts[1],
                               config=SimpleNamespace(boundary_ratio=0.875))
    backbone = WanBackbone(experts[0], pipeline=pipeline)
    assert backbone.default_profile().name == "wan2.2-t2v-a14b"
    assert backbone_for(build_on_meta("wan2.2-t2v-a14b")).default_profile().name == "wan2.1-t2v-14b"  # one expert
    from motionguide.correspondence.settings import resolve_cag_settings

    with pytest.warns(ProvisionalProfileWarning, match="analyze-layers"):
        settings = resolve_cag_settings(backbone)
    assert tuple(settings.blocks) == (17, 23, 28)


# ---------------------------------------------------------------------------------------------- TI2V-5B
def test_the_ti2v_vae_compresses_16x_with_48_channels_and_its_own_statistics(ti2v):
    backbone = backbone_for(ti2v)
    assert (backbone.vae_scale_spatial, backbone.pixels_per_token) == (16, 32)
    assert backbone.latent_shape(81, 480, 832) == (21, 30, 52)  # Motive's setting (reference/motive.md)
    assert backbone.token_grid_for_video(81, 480, 832).as_tuple() == (21, 15, 26)
    real = backbone_for(build_on_meta("wan2.2-ti2v-5b"))  # no VAE attached: the 48 channels name the VAE
    assert real.latent_shape(81, 480, 832) == (21, 30, 52) and real.pixels_per_token == 32
    assert WanBackbone.pixel_multiple(dict(real.config), None) == 32
    with torch.no_grad():
        video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
        latents = ti2v.vae.encode(video).latent_dist.mode()
    assert latents.shape == (1, 48, 3, 4, 4)
    mean = torch.tensor(ti2v.vae.config.latents_mean).view(1, 48, 1, 1, 1)
    std = torch.tensor(ti2v.vae.config.latents_std).view(1, 48, 1, 1, 1)
    torch.testing.assert_close(backbone.normalize_latents(latents), (latents - mean) / std)
    torch.testing.assert_close(backbone.denormalize_latents(backbone.normalize_latents(latents)), latents)


def test_a_wan21_vae_on_a_ti2v_transformer_is_refused_before_any_latent(ti2v):
    wan21_vae = tiny_wan_pipeline().vae
    backbone = WanBackbone(ti2v.transformer, vae=wan21_vae, text_encoder=ti2v.text_encoder, pipeline=ti2v)
    with pytest.raises(ConfigError, match="z_dim = 16 but transformer.config.in_channels = 48"):
        backbone.check_components()
    WanBackbone(ti2v.transformer, vae=tiny_wan22_vae(), text_encoder=ti2v.text_encoder).check_components()


@torch.no_grad()
def test_one_timestep_per_sample_predicts_what_the_pipelines_per_token_timesteps_give(ti2v):
    """Text-to-video TI2V-5B gives every token the step's t; training and the Motive pass pass one t per sample
    (a fraction of the memory), which the transformer only broadcasts."""
    backbone = backbone_for(ti2v)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, 3, 4, 4, generator=g)
    embeds = torch.randn(1, 6, ti2v.transformer.config.text_dim, generator=g)
    per_sample = backbone.predict(x, torch.tensor([751.0]), embeds)
    tokens = backbone.token_grid(x.shape).num_tokens
    per_token = ti2v.transformer(hidden_states=x, timestep=torch.full((1, tokens), 751.0),
                                 encoder_hidden_states=embeds, return_dict=False)[0]
    torch.testing.assert_close(per_sample, per_token, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- random-pipeline
@pytest.mark.slow
@pytest.mark.parametrize("like", ["wan2.2-ti2v-5b", "wan2.2-t2v-a14b"])
def test_a_random_copy_of_the_released_architecture_loads_and_samples_on_the_expert_of_each_step(like, tmp_path):
    """One block per expert and one text layer (the VAE at released size); the stock pipeline samples with the
    released scheduler, and each expert runs exactly the steps the adapter assigns it."""
    from motionguide.cli import main
    from motionguide.loading import PipelinePlacement, load_pipeline

    out = tmp_path / like
    assert main(["random-pipeline", "--like", like, "--out", str(out), "--num_layers", "1", "--text_layers", "1",
                 "--dtype", "bfloat16"]) == 0
    pipe = load_pipeline(str(out), PipelinePlacement(dtype=torch.bfloat16))  # checks the components fit
    pipe.set_progress_bar_config(disable=True)
    backbone = backbone_for(pipe)
    if like == "wan2.2-ti2v-5b":
        assert pipe.config.expand_timesteps and len(backbone.experts) == 1
        assert (backbone.vae_scale_spatial, backbone.pixels_per_token, pipe.vae.config.z_dim) == (16, 32, 48)
        assert pipe.vae.config.latents_std[:2] == [0.4765, 1.0364] and pipe.scheduler.config.flow_shift == 5.0
        size = 32
    else:
        assert backbone.boundary_timestep == 875.0 and pipe.scheduler.config.flow_shift == 12.0
        first, second = backbone.experts
        assert not torch.equal(first.blocks[0].attn1.to_q.weight, second.blocks[0].attn1.to_q.weight)
        size = 16
    ran = []
    handles = [expert.register_forward_pre_hook(
        lambda mod, args, kwargs: ran.append((mod, float(kwargs["timestep"].flatten()[0]))), with_kwargs=True)
        for expert in backbone.experts]
    try:
        video = pipe("a red ball moves left", num_frames=5, height=size, width=size, num_inference_steps=3,
                     max_sequence_length=16, guidance_scale=4.0, output_type="pt",
                     generator=torch.Generator().manual_seed(0)).frames
    finally:
        for handle in handles:
            handle.remove()
    assert video.shape == (1, 5, 3, size, size) and torch.isfinite(video.float()).all()
    assert len(ran) == 6 and all(module is backbone.experts[backbone.expert_index(t)] for module, t in ran)
    assert {backbone.expert_index(t) for _, t in ran} == set(range(len(backbone.experts)))
