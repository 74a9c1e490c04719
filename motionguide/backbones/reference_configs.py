"""Transformer configs of the real target models, for building them without weights (meta device).

The values are the public diffusers configs of the released checkpoints; they let tests and
`motionguide shapes` check token grids and memory at real size on a machine without the weights.
"""

from __future__ import annotations

from typing import Any

WAN21_T2V_1_3B = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}

WAN21_T2V_14B = {**WAN21_T2V_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}

#: `Wan-AI/Wan2.2-TI2V-5B-Diffusers`'s transformer: Wan2.1-1.3B's depth at width 3072 (24 heads x 128), reading and
#: writing the 48 channels of the Wan2.2 VAE (16x16 spatial compression)
WAN22_TI2V_5B = {**WAN21_T2V_1_3B, "num_attention_heads": 24, "ffn_dim": 14336, "in_channels": 48, "out_channels": 48}

#: `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`'s transformer: Wan2.1-14B reading 36 channels (16 noise + 4 mask + 16
#: condition-video latents) and CLIP ViT-H image tokens (1280 wide) through added key / value projections
WAN21_I2V_14B = {**WAN21_T2V_14B, "in_channels": 36, "image_dim": 1280, "added_kv_proj_dim": 5120}

#: one expert of `Wan-AI/Wan2.2-T2V-A14B-Diffusers` (`transformer` and `transformer_2` share Wan2.1-14B's shape)
WAN22_T2V_A14B_EXPERT = dict(WAN21_T2V_14B)

#: one expert of `Wan-AI/Wan2.2-I2V-A14B-Diffusers`: Wan2.1-I2V-14B's 36 input channels (16 noise + 4 mask + 16
#: condition-video latents) without its CLIP image branch (no `image_dim`, no added key / value projections)
WAN22_I2V_A14B_EXPERT = {**WAN21_T2V_14B, "in_channels": 36}

COGVIDEOX_2B = {
    "num_attention_heads": 30,
    "attention_head_dim": 64,
    "in_channels": 16,
    "out_channels": 16,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "time_embed_dim": 512,
    "text_embed_dim": 4096,
    "num_layers": 30,
    "dropout": 0.0,
    "attention_bias": True,
    "sample_width": 90,
    "sample_height": 60,
    "sample_frames": 49,
    "patch_size": 2,
    "temporal_compression_ratio": 4,
    "max_text_seq_length": 226,
    "activation_fn": "gelu-approximate",
    "timestep_activation_fn": "silu",
    "norm_elementwise_affine": True,
    "norm_eps": 1e-5,
    "spatial_interpolation_scale": 1.875,
    "temporal_interpolation_scale": 1.0,
    "use_rotary_positional_embeddings": False,
    "use_learned_positional_embeddings": False,
}

COGVIDEOX_5B = {**COGVIDEOX_2B, "num_attention_heads": 48, "num_layers": 42, "use_rotary_positional_embeddings": True}

#: `THUDM/CogVideoX-5b-I2V`'s transformer: CogVideoX-5B reading 32 channels (16 noise + 16 image latents) with a
#: stored (learned) position table, which fixes its latent size to 60 x 90 (480 x 720 frames)
COGVIDEOX_5B_I2V = {**COGVIDEOX_5B, "in_channels": 32, "use_learned_positional_embeddings": True}

#: `hunyuanvideo-community/HunyuanVideo`'s transformer: 20 dual-stream + 40 single-stream blocks, 24 heads x 128
HUNYUANVIDEO = {
    "in_channels": 16,
    "out_channels": 16,
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "num_layers": 20,
    "num_single_layers": 40,
    "num_refiner_layers": 2,
    "mlp_ratio": 4.0,
    "patch_size": 2,
    "patch_size_t": 1,
    "qk_norm": "rms_norm",
    "guidance_embeds": True,
    "text_embed_dim": 4096,
    "pooled_projection_dim": 768,
    "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56),
}

REFERENCE_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "wan2.1-t2v-1.3b": ("WanTransformer3DModel", WAN21_T2V_1_3B),
    "wan2.1-t2v-14b": ("WanTransformer3DModel", WAN21_T2V_14B),
    "wan2.1-i2v-14b": ("WanTransformer3DModel", WAN21_I2V_14B),
    "wan2.2-ti2v-5b": ("WanTransformer3DModel", WAN22_TI2V_5B),
    "wan2.2-t2v-a14b": ("WanTransformer3DModel", WAN22_T2V_A14B_EXPERT),  # each of its two experts
    "wan2.2-i2v-a14b": ("WanTransformer3DModel", WAN22_I2V_A14B_EXPERT),  # each of its two experts
    "cogvideox-2b": ("CogVideoXTransformer3DModel", COGVIDEOX_2B),
    "cogvideox-5b": ("CogVideoXTransformer3DModel", COGVIDEOX_5B),
    "cogvideox-5b-i2v": ("CogVideoXTransformer3DModel", COGVIDEOX_5B_I2V),
    "hunyuanvideo": ("HunyuanVideoTransformer3DModel", HUNYUANVIDEO),
}


def build_on_meta(name: str):
    """The named real transformer with parameters on the meta device (no memory, no download)."""
    import diffusers
    from accelerate import init_empty_weights

    if name not in REFERENCE_CONFIGS:
        raise KeyError(f"unknown reference model {name!r}; known: {', '.join(REFERENCE_CONFIGS)}")
    class_name, config = REFERENCE_CONFIGS[name]
    cls = getattr(diffusers, class_name)
    with init_empty_weights():
        return cls.from_config(dict(config))
