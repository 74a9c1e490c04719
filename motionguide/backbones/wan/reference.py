"""Wan2.1-T2V-1.3B as a recipe for a random-weight copy (`motionguide random-pipeline --like wan2.1-t2v-1.3b`).

The numbers are the released diffusers checkpoint's (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`): the transformer
(1,418,996,800 parameters, shared with `motionguide shapes` through `reference_configs`), the 3D causal VAE,
the UMT5-XXL text encoder's width (4096, 64 heads, gated-GELU FFN 10240; 24 layers and a 256,384-token
vocabulary in the release, few layers and a word-level vocabulary here), text length 512, and the UniPC
flow-matching scheduler with shift 3 (the 480p setting).
"""

from __future__ import annotations

from ..random_weights import ModelRecipe, ReferencePipeline
from ..reference_configs import WAN21_T2V_1_3B

#: `AutoencoderKLWan` of Wan2.1 (per-channel latent statistics used by `normalize_latents`)
WAN21_VAE = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916],
    "in_channels": 3,
    "out_channels": 3,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 8,
}

#: `google/umt5-xxl`'s encoder (Wan's text encoder)
UMT5_XXL = {
    "vocab_size": 256384,
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
    "scalable_attention": True,
    "tie_word_embeddings": False,
}

#: Wan2.1's released scheduler: UniPC on flow sigmas, shift 3.0 (the rest are diffusers' defaults)
WAN21_SCHEDULER = {
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "solver_order": 2,
    "solver_type": "bh2",
    "predict_x0": True,
    "lower_order_final": True,
    "final_sigmas_type": "zero",
    "timestep_spacing": "linspace",
}

WAN21_T2V_1_3B_PIPELINE = ReferencePipeline(
    name="wan2.1-t2v-1.3b",
    pipeline_class_path="diffusers.WanPipeline",
    transformer=ModelRecipe("diffusers.WanTransformer3DModel", WAN21_T2V_1_3B),
    vae=ModelRecipe("diffusers.AutoencoderKLWan", WAN21_VAE),
    text_encoder=ModelRecipe("transformers.UMT5EncoderModel", UMT5_XXL, config_class_path="transformers.UMT5Config"),
    scheduler_class_path="diffusers.UniPCMultistepScheduler",
    scheduler_config=WAN21_SCHEDULER,
    max_sequence_length=512,
    source="Wan-AI/Wan2.1-T2V-1.3B-Diffusers configs (transformer, vae, text_encoder width, scheduler)",
)

__all__ = ["WAN21_T2V_1_3B_PIPELINE", "WAN21_VAE", "UMT5_XXL", "WAN21_SCHEDULER"]
