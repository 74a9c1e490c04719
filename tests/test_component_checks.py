"""`VideoBackbone.check_components`: a pipeline whose parts cannot work together fails when it loads, with one
line naming both components, their values and the fix (not at the first forward, after a whole latent cache)."""

import pytest
import torch

from motionguide.backbones import backbone_for
from motionguide.errors import ConfigError
from motionguide.loading import load_pipeline
from motionguide.testing import (TEST_WORDS, tiny_cogvideox_pipeline, tiny_t5, tiny_umt5, tiny_wan_pipeline,
                                 tiny_wan_transformer)
from motionguide.text import word_level_tokenizer


def _wan_vae(z_dim: int):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan(base_dim=3, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True]).eval()


def _cogvideox_vae(latent_channels: int):
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    return AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=latent_channels,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4).eval()


def _cogvideox_transformer(in_channels: int, out_channels: int, text_dim: int = 32):
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=in_channels, out_channels=out_channels,
        time_embed_dim=2, text_embed_dim=text_dim, num_layers=1, sample_width=4, sample_height=4, sample_frames=9,
        patch_size=2, temporal_compression_ratio=4, max_text_seq_length=16).eval()


def _assert_one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


def test_matching_pipelines_pass_the_check():
    for pipe in (tiny_wan_pipeline(), tiny_cogvideox_pipeline()):
        backbone_for(pipe).check_components()
    backbone_for(load_pipeline("assets/toy-model")).check_components()


def test_an_8_channel_vae_with_a_16_channel_wan_transformer_fails_at_load(tmp_path):
    pipe = tiny_wan_pipeline()
    pipe.vae = _wan_vae(8)
    pipe.register_modules(vae=pipe.vae)
    pipe.save_pretrained(tmp_path / "mismatched")
    with pytest.raises(ConfigError) as exc:
        load_pipeline(tmp_path / "mismatched")
    _assert_one_line(exc, "vae.config.z_dim = 8", "transformer.config.in_channels = 16", "same model")


def test_a_matching_saved_pipeline_loads(tmp_path):
    tiny_wan_pipeline().save_pretrained(tmp_path / "matching")
    pipe = load_pipeline(tmp_path / "matching")
    assert pipe.vae.config.z_dim == pipe.transformer.config.in_channels == 16


def test_a_wan_text_encoder_of_another_width_is_named():
    from diffusers import WanPipeline

    pipe = tiny_wan_pipeline()
    tokenizer = word_level_tokenizer(TEST_WORDS)
    narrow = WanPipeline(tokenizer=tokenizer, text_encoder=tiny_umt5(len(tokenizer), d_model=24), vae=pipe.vae,
                         transformer=pipe.transformer, scheduler=pipe.scheduler)
    with pytest.raises(ConfigError) as exc:
        backbone_for(narrow).check_components()
    _assert_one_line(exc, "text_encoder.config.d_model = 24", "transformer.config.text_dim = 32", "UMT5")


def test_a_wan_transformer_whose_output_channels_differ_from_the_vae_is_named():
    from diffusers import WanPipeline

    pipe = tiny_wan_pipeline()
    transformer = tiny_wan_transformer(in_channels=8)
    odd = WanPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                      transformer=transformer, scheduler=pipe.scheduler)
    with pytest.raises(ConfigError) as exc:
        backbone_for(odd).check_components()
    _assert_one_line(exc, "vae.config.z_dim = 16", "transformer.config.in_channels = 8")


def test_cogvideox_latent_channels_and_text_width_are_checked():
    from diffusers import CogVideoXPipeline

    base = tiny_cogvideox_pipeline()
    wide = CogVideoXPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=_cogvideox_vae(4),
                             transformer=_cogvideox_transformer(16, 16), scheduler=base.scheduler)
    with pytest.raises(ConfigError) as exc:
        backbone_for(wide).check_components()
    _assert_one_line(exc, "vae.config.latent_channels = 4", "transformer.config.in_channels = 16")

    tokenizer = base.tokenizer
    narrow_text = CogVideoXPipeline(tokenizer=tokenizer, text_encoder=tiny_t5(len(tokenizer), d_model=16),
                                    vae=base.vae, transformer=base.transformer, scheduler=base.scheduler)
    with pytest.raises(ConfigError) as exc:
        backbone_for(narrow_text).check_components()
    _assert_one_line(exc, "text_encoder.config.d_model = 16", "transformer.config.text_embed_dim = 32")


def test_a_cogvideox_image_to_video_transformer_fits_its_own_pipeline_and_is_named_in_a_text_to_video_one():
    """CogVideoX-I2V's transformer takes twice the latent channels (noise + image latents): consistent in an
    image-to-video pipeline; in a text-to-video one the error says what it is."""
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline

    base = tiny_cogvideox_pipeline()
    parts = dict(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=_cogvideox_vae(4),
                 transformer=_cogvideox_transformer(8, 4), scheduler=base.scheduler)
    backbone_for(CogVideoXImageToVideoPipeline(**parts)).check_components()
    with pytest.raises(ConfigError) as exc:
        backbone_for(CogVideoXPipeline(**parts)).check_components()
    _assert_one_line(exc, "in_channels = 8", "latent_channels = 4", "image-to-video", "text-to-video")
