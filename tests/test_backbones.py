"""Backbone adapters: lookup, token grids, causal temporal map, latent normalisation, targets, prompts."""

import pytest
import torch

from motionguide.backbones import CogVideoXBackbone, WanBackbone, backbone_for
from motionguide.errors import UnsupportedModelError
from motionguide.testing import tiny_cogvideox_pipeline, tiny_wan_pipeline


@pytest.fixture(scope="module")
def wan_pipe():
    return tiny_wan_pipeline()


@pytest.fixture(scope="module")
def cog_pipe():
    return tiny_cogvideox_pipeline()


def test_lookup_from_pipeline_and_transformer(wan_pipe, cog_pipe):
    assert isinstance(backbone_for(wan_pipe), WanBackbone)
    assert isinstance(backbone_for(cog_pipe.transformer), CogVideoXBackbone)


def test_unsupported_class_lists_families_and_how_to_add():
    with pytest.raises(UnsupportedModelError) as err:
        backbone_for(torch.nn.Linear(2, 2))
    msg = str(err.value)
    assert "Linear" in msg and "wan (WanTransformer3DModel)" in msg and "cogvideox" in msg
    assert "register_backbone" in msg


def test_attention_modules_and_text_layout(wan_pipe, cog_pipe):
    wan, cog = backbone_for(wan_pipe), backbone_for(cog_pipe)
    assert wan.video_self_attention(1) is wan_pipe.transformer.blocks[1].attn1
    assert wan.text_attention(1) is wan_pipe.transformer.blocks[1].attn2
    assert wan.text_layout == "cross" and cog.text_layout == "joint_first"
    assert cog.video_self_attention(0) is cog.text_attention(0) is cog_pipe.transformer.transformer_blocks[0].attn1
    with pytest.raises(IndexError, match="valid: 0..1"):
        wan.video_self_attention(5)


def test_token_grid_and_causal_map(wan_pipe, cog_pipe):
    wan, cog = backbone_for(wan_pipe), backbone_for(cog_pipe)
    assert wan.token_grid((1, 16, 5, 16, 16)).as_tuple() == (5, 8, 8)
    assert cog.token_grid((1, 5, 4, 16, 16)).as_tuple() == (5, 8, 8)
    assert wan.num_latent_frames(81) == 21 and cog.num_latent_frames(49) == 13
    assert list(wan.pixel_frames_of_latent(0)) == [0]
    assert list(wan.pixel_frames_of_latent(1)) == [1, 2, 3, 4]
    assert list(wan.pixel_frames_of_latent(20)) == [77, 78, 79, 80]
    assert all(wan.latent_frame_of_pixel(f) == k for k in range(21) for f in wan.pixel_frames_of_latent(k))
    with pytest.raises(ValueError, match="4k\\+1"):
        wan.num_latent_frames(80)


def test_wan_latent_normalisation_matches_pipeline_convention(wan_pipe):
    wan = backbone_for(wan_pipe)
    vae = wan_pipe.vae
    z = torch.randn(1, 16, 2, 4, 4)
    norm = wan.normalize_latents(z)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    # WanPipeline decodes with latents / (1 / std) + mean
    torch.testing.assert_close(norm / (1.0 / std) + mean, z)
    torch.testing.assert_close(wan.denormalize_latents(norm), z)


def test_wan_flow_matching_target(wan_pipe):
    wan = backbone_for(wan_pipe)
    x0, eps = torch.randn(2, 16, 2, 4, 4), torch.randn(2, 16, 2, 4, 4)
    t = torch.tensor([250.0, 751.0])
    xt = wan.add_noise(x0, eps, t)
    torch.testing.assert_close(xt[1], 0.249 * x0[1] + 0.751 * eps[1])
    torch.testing.assert_close(wan.training_target(x0, eps, t), eps - x0)
    # the velocity carries x_t towards x_0 along the straight path: x_t - sigma * v = x_0
    torch.testing.assert_close(xt[1] - 0.751 * (eps[1] - x0[1]), x0[1], atol=1e-5, rtol=1e-5)


def test_cogvideox_targets_match_scheduler(cog_pipe):
    cog = backbone_for(cog_pipe)
    x0, eps = torch.randn(2, 4, 2, 4, 4), torch.randn(2, 4, 2, 4, 4)
    t = torch.tensor([10, 700])
    torch.testing.assert_close(cog.add_noise(x0, eps, t), cog_pipe.scheduler.add_noise(x0, eps, t))
    torch.testing.assert_close(cog.training_target(x0, eps, t), cog_pipe.scheduler.get_velocity(x0, eps, t))
    z = torch.randn(1, 4, 2, 4, 4)
    torch.testing.assert_close(cog.normalize_latents(z), z * cog_pipe.vae.config.scaling_factor)
    assert cog.to_transformer_layout(z).shape == (1, 2, 4, 4, 4)


@pytest.mark.parametrize("which", ["wan", "cog"])
def test_encode_prompt_equals_stock_pipeline(which, wan_pipe, cog_pipe):
    pipe = wan_pipe if which == "wan" else cog_pipe
    ours = backbone_for(pipe).encode_prompt(["a red circle moves left", "a blue square"], max_sequence_length=16)
    stock, _ = pipe.encode_prompt(["a red circle moves left", "a blue square"], do_classifier_free_guidance=False,
                                  max_sequence_length=16)
    assert torch.equal(ours, stock) and ours.shape == (2, 16, 32)


def test_default_profile_missing_for_tiny_model(wan_pipe):
    from motionguide.errors import ConfigError

    with pytest.raises(ConfigError, match="analyze-layers"):
        backbone_for(wan_pipe).default_profile()


def test_each_family_says_which_rows_are_conditional_from_its_declared_cfg_layout(wan_pipe, cog_pipe):
    wan, cog = backbone_for(wan_pipe.transformer), backbone_for(cog_pipe.transformer)
    assert (wan.cfg_layout, cog.cfg_layout) == ("separate", "uncond_cond")
    for backbone in (wan, cog):
        assert backbone.conditional_rows("uncond", 2, True) is None
        assert backbone.conditional_rows("cond_perturbed", 2, True) is None
        assert backbone.conditional_rows("cond", 2, True) == slice(None)
        assert backbone.conditional_rows(None, 2, None) == slice(None)  # outside a pipeline: every row
    assert cog.conditional_rows("cond_uncond", 4, True) == slice(2, None)  # [uncond; cond]
    assert cog.conditional_rows("cond_uncond", 2, False) == slice(None)  # CFG off: no uncond half
    assert wan.conditional_rows("cond_uncond", 4, True) == slice(None)  # Wan never batches the two


def test_schedule_step_finds_the_timestep_in_the_pipelines_schedule(cog_pipe):
    backbone = backbone_for(cog_pipe)
    cog_pipe.scheduler.set_timesteps(4)
    timesteps = cog_pipe.scheduler.timesteps
    assert [backbone.schedule_step(t) for t in timesteps] == [0, 1, 2, 3]
    assert backbone.schedule_step(timesteps[2:3].expand(2)) == 2  # a batch of one timestep
    assert backbone.schedule_step(float(timesteps[1]) + 0.5) is None and backbone.schedule_step(None) is None
    assert backbone_for(cog_pipe.transformer).schedule_step(timesteps[0]) is None  # no pipeline, no schedule


def test_block_parameter_prefix_names_the_blocks_parameters(wan_pipe, cog_pipe):
    for pipe, attribute in ((wan_pipe, "blocks"), (cog_pipe, "transformer_blocks")):
        backbone = backbone_for(pipe)
        assert backbone.block_parameter_prefix(1) == f"{attribute}.1."
        assert backbone.block_parameter_prefix(-1) == f"{attribute}.{backbone.num_blocks - 1}."
        names = [n for n, _ in pipe.transformer.named_parameters() if n.startswith(backbone.block_parameter_prefix(0))]
        assert names == [f"{attribute}.0.{n}" for n, _ in backbone.blocks[0].named_parameters()]
