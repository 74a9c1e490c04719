"""Tiny random diffusers models built offline, for tests, examples and cost checks.

Configs follow the sizes of diffusers' own tiny test models, scaled
just enough to have several latent frames and heads. Everything is seeded and built in-process.
"""

from __future__ import annotations

import torch

TEST_WORDS = "a red green blue yellow circle square triangle moves left right up down stays still quickly slowly".split()


def _seeded(model_class, seed: int, **config):
    """`model_class(**config)` built right after `torch.manual_seed(seed)` (so its weights depend on the seed alone),
    in eval mode."""
    torch.manual_seed(seed)
    return model_class(**config).eval()


def tiny_wan_transformer(seed: int = 0, num_layers: int = 2, heads: int = 2, head_dim: int = 12, in_channels: int = 16,
                         text_dim: int = 32, image_to_video: bool = False, image_dim: int | None = 16):
    """A seeded, tiny random `WanTransformer3DModel` in eval mode. `image_to_video`: Wan2.1-I2V's layout, reading
    `in_channels` + 4 (mask) + `in_channels` (the condition video's latents) and writing `in_channels`, with CLIP
    image embeddings of width `image_dim` through added key / value projections in the cross-attention
    (`image_dim=None`: no CLIP branch, as in each Wan2.2-I2V-A14B expert)."""
    from diffusers import WanTransformer3DModel

    extra = dict(image_dim=image_dim, added_kv_proj_dim=heads * head_dim) if image_to_video and image_dim else {}
    return _seeded(
        WanTransformer3DModel, seed,
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=2 * in_channels + 4 if image_to_video else in_channels,
        out_channels=in_channels,
        **extra,
        text_dim=text_dim,
        freq_dim=256,
        ffn_dim=32,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def tiny_cogvideox_transformer(seed: int = 0, rotary: bool = False, num_layers: int = 2, heads: int = 4,
                               head_dim: int | None = None, in_channels: int = 4, text_dim: int = 32, max_text: int = 16,
                               image_to_video: bool = False, learned_positions: bool = False,
                               ofs_embed_dim: int | None = None, sample_size: int = 4):
    """A seeded, tiny random `CogVideoXTransformer3DModel` in eval mode (3D RoPE if `rotary`).

    `image_to_video`: CogVideoX-I2V's layout, reading 2 x `in_channels` (noise + image latents) and writing
    `in_channels`; `learned_positions` (5B-I2V's stored position table, which fixes the latent size to
    `sample_size`) and `ofs_embed_dim` (CogVideoX1.5-I2V's ofs embedding) as in those configs."""
    from diffusers import CogVideoXTransformer3DModel

    head_dim = head_dim or (16 if rotary else 8)  # 3D RoPE splits the head dim 2:3:3, so it needs 16
    return _seeded(
        CogVideoXTransformer3DModel, seed,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=2 * in_channels if image_to_video else in_channels,
        out_channels=in_channels,
        time_embed_dim=2,
        text_embed_dim=text_dim,
        num_layers=num_layers,
        sample_width=sample_size,
        sample_height=sample_size,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=max_text,
        use_rotary_positional_embeddings=rotary,
        use_learned_positional_embeddings=learned_positions,
        ofs_embed_dim=ofs_embed_dim,
    )


def _tiny_t5_encoder(model_class, config_class, vocab_size: int, d_model: int, seed: int):
    """A seeded, tiny random T5-style encoder (2 layers, 4 heads of 8) in eval mode."""
    torch.manual_seed(seed)
    cfg = config_class(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                       relative_attention_num_buckets=8)
    return model_class(cfg).eval()


def tiny_umt5(vocab_size: int, d_model: int = 32, seed: int = 0):
    """A seeded, tiny random `UMT5EncoderModel` (Wan's text encoder) in eval mode."""
    from transformers import UMT5Config, UMT5EncoderModel

    return _tiny_t5_encoder(UMT5EncoderModel, UMT5Config, vocab_size, d_model, seed)


def tiny_t5(vocab_size: int, d_model: int = 32, seed: int = 0):
    """A seeded, tiny random `T5EncoderModel` (CogVideoX's text encoder) in eval mode."""
    from transformers import T5Config, T5EncoderModel

    return _tiny_t5_encoder(T5EncoderModel, T5Config, vocab_size, d_model, seed)


def _tiny_wan_pipeline(seed: int, num_layers: int, make_vae, in_channels: int, shift: float, **pipeline_config):
    """A stock `WanPipeline` over a word-level tokenizer, `make_vae()`, a tiny UMT5 and a tiny transformer of
    `in_channels` latent channels (built in that order), with the flow-matching Euler scheduler at `shift`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    from .text import word_level_tokenizer

    tokenizer = word_level_tokenizer(TEST_WORDS)
    vae = make_vae()
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_umt5(len(tokenizer), seed=seed),
        transformer=tiny_wan_transformer(seed, num_layers=num_layers, in_channels=in_channels),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        **pipeline_config,
    )


def tiny_wan_pipeline(seed: int = 0, num_layers: int = 2):
    """A stock `WanPipeline` with tiny random components and a word-level tokenizer."""
    from diffusers import AutoencoderKLWan

    return _tiny_wan_pipeline(seed, num_layers, lambda: _seeded(
        AutoencoderKLWan, seed, base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True]), in_channels=16, shift=7.0)


def tiny_clip_vision(seed: int = 0, hidden_size: int = 16, image_size: int = 32):
    """A seeded, tiny random `CLIPVisionModel` (Wan2.1-I2V's image encoder) and its `CLIPImageProcessor` at
    `image_size` pixels (16 patches + the class token)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    model = CLIPVisionModel(CLIPVisionConfig(hidden_size=hidden_size, intermediate_size=37, num_hidden_layers=2,
                                             num_attention_heads=2, image_size=image_size, patch_size=8)).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    return model, processor


def tiny_wan_i2v_pipeline(seed: int = 0, num_layers: int = 2):
    """A stock `WanImageToVideoPipeline` shaped like Wan2.1-I2V at tiny size: Wan2.1's VAE layout, a transformer
    of 16 + 4 + 16 input channels with CLIP image embeddings in its cross-attention, a tiny CLIP image encoder."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    pipe = tiny_wan_pipeline(seed, num_layers=num_layers)
    image_encoder, image_processor = tiny_clip_vision(seed)
    return WanImageToVideoPipeline(
        tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), image_processor=image_processor,
        image_encoder=image_encoder,
        transformer=tiny_wan_transformer(seed, num_layers=num_layers, image_to_video=True,
                                         image_dim=image_encoder.config.hidden_size),
    )


def tiny_wan22_vae(seed: int = 0):
    """A seeded, tiny random Wan2.2 `AutoencoderKLWan` (TI2V-5B's layout): 48 latent channels, 2x2 pixel
    patches into a residual encoder, 16x16 spatial and 4x temporal compression, uneven latent statistics."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(base_dim=4, decoder_base_dim=4, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
                            out_channels=12, patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                            latents_mean=[round(-0.5 + i / 48, 4) for i in range(48)],
                            latents_std=[round(0.5 + i / 24, 4) for i in range(48)]).eval()


def tiny_wan22_ti2v_pipeline(seed: int = 0, num_layers: int = 2):
    """A stock `WanPipeline` shaped like Wan2.2-TI2V-5B at tiny size: the 48-channel 16x VAE, a transformer of
    48 in / out channels and per-token timesteps (`expand_timesteps`)."""
    return _tiny_wan_pipeline(seed, num_layers, lambda: tiny_wan22_vae(seed), in_channels=48, shift=5.0,
                              expand_timesteps=True)


def tiny_wan22_ti2v_i2v_pipeline(seed: int = 0, num_layers: int = 2):
    """A stock `WanImageToVideoPipeline` shaped like Wan2.2-TI2V-5B conditioned on an image: the TI2V components
    with `expand_timesteps` (latent frame 0 is the image's latents, at timestep 0), no image encoder."""
    from diffusers import WanImageToVideoPipeline

    pipe = tiny_wan22_ti2v_pipeline(seed, num_layers=num_layers)
    return WanImageToVideoPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                                   scheduler=pipe.scheduler, transformer=pipe.transformer, expand_timesteps=True)


def tiny_wan22_a14b_pipeline(seed: int = 0, num_layers: int = 2, boundary_ratio: float = 0.875):
    """A stock `WanPipeline` shaped like Wan2.2-T2V-A14B at tiny size: two experts of different weights,
    `transformer` for t >= boundary_ratio x 1000 and `transformer_2` below, on Wan2.1's VAE layout."""
    from diffusers import WanPipeline

    pipe = tiny_wan_pipeline(seed, num_layers=num_layers)
    return WanPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        transformer=pipe.transformer,
        transformer_2=tiny_wan_transformer(seed + 1, num_layers=num_layers),
        vae=pipe.vae,
        scheduler=pipe.scheduler,
        boundary_ratio=boundary_ratio,
    )


def tiny_wan22_i2v_a14b_pipeline(seed: int = 0, num_layers: int = 2, boundary_ratio: float = 0.9):
    """A stock `WanImageToVideoPipeline` shaped like Wan2.2-I2V-A14B at tiny size: two experts of different weights
    (`transformer` for t >= boundary_ratio x 1000, 900 in the release, `transformer_2` below), each reading 16 + 4 +
    16 channels (noise, mask, the condition video's latents) with no CLIP branch, no image encoder, Wan2.1's VAE."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    pipe = tiny_wan_pipeline(seed, num_layers=num_layers)
    experts = [tiny_wan_transformer(seed + i, num_layers=num_layers, image_to_video=True, image_dim=None)
               for i in range(2)]
    return WanImageToVideoPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), transformer=experts[0],
                                   transformer_2=experts[1], boundary_ratio=boundary_ratio)


def tiny_cogvideox_pipeline(seed: int = 0, rotary: bool = False, num_layers: int = 2, image_to_video: bool = False,
                            **transformer_options):
    """A stock `CogVideoXPipeline` with tiny random components and a word-level tokenizer; with `image_to_video`, a
    `CogVideoXImageToVideoPipeline` over a transformer of CogVideoX-I2V's layout (see `tiny_cogvideox_transformer`,
    which `transformer_options` reach)."""
    from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline,
                           CogVideoXPipeline)

    from .text import word_level_tokenizer

    tokenizer = word_level_tokenizer(TEST_WORDS)
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4,
    ).eval()
    pipeline_class = CogVideoXImageToVideoPipeline if image_to_video else CogVideoXPipeline
    return pipeline_class(
        tokenizer=tokenizer,
        text_encoder=tiny_t5(len(tokenizer), seed=seed),
        transformer=tiny_cogvideox_transformer(seed, rotary=rotary, num_layers=num_layers,
                                               image_to_video=image_to_video, **transformer_options),
        vae=vae,
        scheduler=CogVideoXDDIMScheduler(),
    )


def tiny_hunyuan_video_transformer(seed: int = 0, num_layers: int = 1, num_single_layers: int = 2, heads: int = 2,
                                   head_dim: int = 16, in_channels: int = 4, text_dim: int = 16,
                                   pooled_dim: int = 8):
    """A seeded, tiny random `HunyuanVideoTransformer3DModel` in eval mode: `num_layers` dual-stream blocks then
    `num_single_layers` single-stream ones, 3D RoPE (axes 4:6:6 of the head dim), embedded guidance."""
    from diffusers import HunyuanVideoTransformer3DModel

    return _seeded(
        HunyuanVideoTransformer3DModel, seed,
        in_channels=in_channels,
        out_channels=in_channels,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=text_dim,
        pooled_projection_dim=pooled_dim,
        rope_axes_dim=(4, 6, 6),
    )


def tiny_hunyuan_video_pipeline(seed: int = 0, num_layers: int = 1, num_single_layers: int = 2):
    """A stock `HunyuanVideoPipeline` with tiny random components: a 2-layer Llama on a word-level tokenizer that
    crops the default prompt template as Llama-3's does (`backbones.hunyuanvideo.reference.llama_template_tokenizer`), a 2-layer CLIP text
    model, the causal 3D VAE (8x spatial, 4x temporal, 4 latent channels), the flow-matching Euler scheduler with
    shift 7 (the released one). It saves and reloads like any pipeline and samples with the stock defaults."""
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    from .backbones.hunyuanvideo.reference import llama_template_tokenizer
    from .text import word_level_tokenizer

    tokenizer = llama_template_tokenizer(TEST_WORDS)
    tokenizer_2 = word_level_tokenizer(TEST_WORDS, model_max_length=77)
    torch.manual_seed(seed)
    llama = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=37,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=1024)).eval()
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer_2), hidden_size=8, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                        projection_dim=8, eos_token_id=1, pad_token_id=0, bos_token_id=1)).eval()
    vae = AutoencoderKLHunyuanVideo(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                                    layers_per_block=1, norm_num_groups=4, mid_block_add_attention=False).eval()
    return HunyuanVideoPipeline(
        text_encoder=llama, tokenizer=tokenizer,
        transformer=tiny_hunyuan_video_transformer(seed, num_layers=num_layers, num_single_layers=num_single_layers),
        vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=clip, tokenizer_2=tokenizer_2,
    )
