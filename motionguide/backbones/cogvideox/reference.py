"""CogVideoX-2B, CogVideoX-5B and CogVideoX-5B-I2V as recipes for random-weight copies (`motionguide random-pipeline
--like cogvideox-2b` / `cogvideox-5b` / `cogvideox-5b-i2v`).

The numbers are the released diffusers checkpoint's (`THUDM/CogVideoX-2b`): the transformer (shared with
`motionguide shapes` through `reference_configs`), the 3D VAE (scaling factor 1.15258426), the T5 v1.1 XXL text
encoder's width (4096, 64 heads, gated-GELU FFN 10240; 24 layers and a 32,128-token vocabulary in the release,
few layers and a word-level vocabulary here), text length 226, and the CogVideoX DDIM scheduler
(v-prediction, zero-terminal-SNR betas, SNR shift 3, trailing timesteps).
"""

from __future__ import annotations

from ..random_weights import ModelRecipe, RecipeFamily
from ..reference_configs import COGVIDEOX_2B, COGVIDEOX_5B, COGVIDEOX_5B_I2V

#: `AutoencoderKLCogVideoX` of CogVideoX-2B
COGVIDEOX_2B_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["CogVideoXDownBlock3D"] * 4,
    "up_block_types": ["CogVideoXUpBlock3D"] * 4,
    "block_out_channels": [128, 256, 256, 512],
    "latent_channels": 16,
    "layers_per_block": 3,
    "act_fn": "silu",
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
    "temporal_compression_ratio": 4,
    "sample_height": 480,
    "sample_width": 720,
    "scaling_factor": 1.15258426,
    "force_upcast": True,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}

#: `google/t5-v1_1-xxl`'s encoder (CogVideoX's text encoder)
T5_V1_1_XXL = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
}

#: CogVideoX-2B's released scheduler
COGVIDEOX_2B_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "snr_shift_scale": 3.0,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}

#: what every CogVideoX recipe shares: diffusers' CogVideoX classes, T5-XXL's width, its DDIM, 226 text tokens
COGVIDEOX_FAMILY = RecipeFamily(
    pipeline_class_path="diffusers.CogVideoXPipeline",
    transformer_class_path="diffusers.CogVideoXTransformer3DModel",
    vae_class_path="diffusers.AutoencoderKLCogVideoX",
    text_encoder=ModelRecipe("transformers.T5EncoderModel", T5_V1_1_XXL, config_class_path="transformers.T5Config"),
    scheduler_class_path="diffusers.CogVideoXDDIMScheduler",
    max_sequence_length=226,
)

COGVIDEOX_2B_PIPELINE = COGVIDEOX_FAMILY.pipeline(
    "cogvideox-2b", COGVIDEOX_2B, COGVIDEOX_2B_VAE, COGVIDEOX_2B_SCHEDULER,
    source="THUDM/CogVideoX-2b configs (transformer, vae, text_encoder width, scheduler)",
)

#: the 5B models' VAE: the 2B's architecture with scaling factor 0.7
COGVIDEOX_5B_VAE = {**COGVIDEOX_2B_VAE, "scaling_factor": 0.7}

#: the 5B models' scheduler: the 2B's with SNR shift 1 (the 2B's is 3)
COGVIDEOX_5B_SCHEDULER = {**COGVIDEOX_2B_SCHEDULER, "snr_shift_scale": 1.0}

#: `THUDM/CogVideoX-5b`: the 5B transformer (48 heads, 42 blocks, 3D RoPE, no learned positions, so any size), the
#: 5B VAE and scheduler and the T5 XXL width
COGVIDEOX_5B_PIPELINE = COGVIDEOX_FAMILY.pipeline(
    "cogvideox-5b", COGVIDEOX_5B, COGVIDEOX_5B_VAE, COGVIDEOX_5B_SCHEDULER,
    source="THUDM/CogVideoX-5b as diffusers' CogVideoX conversion sets it up (3D RoPE, VAE scaling factor 0.7, "
           "scheduler SNR shift 1.0)",
)

#: `THUDM/CogVideoX-5b-I2V`: `CogVideoXImageToVideoPipeline` over the 5B-I2V transformer (32 input channels, 3D RoPE,
#: learned positions at 480 x 720), the 5B VAE and scheduler and the T5 XXL width
COGVIDEOX_5B_I2V_PIPELINE = COGVIDEOX_FAMILY.pipeline(
    "cogvideox-5b-i2v", COGVIDEOX_5B_I2V, COGVIDEOX_5B_VAE, COGVIDEOX_5B_SCHEDULER,
    pipeline_class_path="diffusers.CogVideoXImageToVideoPipeline",
    source="THUDM/CogVideoX-5b-I2V as diffusers' CogVideoX conversion sets it up (transformer in_channels 32 and "
           "learned positions, VAE scaling factor 0.7, scheduler SNR shift 1.0)",
)

__all__ = ["COGVIDEOX_FAMILY", "COGVIDEOX_2B_PIPELINE", "COGVIDEOX_2B_VAE", "T5_V1_1_XXL",
           "COGVIDEOX_2B_SCHEDULER", "COGVIDEOX_5B_VAE", "COGVIDEOX_5B_SCHEDULER", "COGVIDEOX_5B_PIPELINE",
           "COGVIDEOX_5B_I2V_PIPELINE"]
