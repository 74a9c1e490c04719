"""Wan2.1-T2V-1.3B, Wan2.2-TI2V-5B, Wan2.2-T2V-A14B, Wan2.1-I2V-14B and Wan2.2-I2V-A14B as recipes for random-weight
copies (`motionguide random-pipeline --like wan2.1-t2v-1.3b | wan2.2-ti2v-5b | wan2.2-t2v-a14b | wan2.1-i2v-14b |
wan2.2-i2v-a14b`).

The numbers are the released diffusers checkpoint's (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`): the transformer
(1,418,996,800 parameters, shared with `motionguide shapes` through `reference_configs`), the 3D causal VAE,
the UMT5-XXL text encoder's width (4096, 64 heads, gated-GELU FFN 10240; 24 layers and a 256,384-token
vocabulary in the release, few layers and a word-level vocabulary here), text length 512, and the UniPC
flow-matching scheduler with shift 3 (the 480p setting).
"""

from __future__ import annotations

from ..random_weights import ModelRecipe, RecipeFamily
from ..reference_configs import (WAN21_I2V_14B, WAN21_T2V_1_3B, WAN22_I2V_A14B_EXPERT, WAN22_T2V_A14B_EXPERT,
                                 WAN22_TI2V_5B)

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

#: what every Wan recipe shares: diffusers' Wan classes, UMT5-XXL's width, UniPC and 512 text tokens
WAN_FAMILY = RecipeFamily(
    pipeline_class_path="diffusers.WanPipeline",
    transformer_class_path="diffusers.WanTransformer3DModel",
    vae_class_path="diffusers.AutoencoderKLWan",
    text_encoder=ModelRecipe("transformers.UMT5EncoderModel", UMT5_XXL, config_class_path="transformers.UMT5Config"),
    scheduler_class_path="diffusers.UniPCMultistepScheduler",
    max_sequence_length=512,
)

WAN21_T2V_1_3B_PIPELINE = WAN_FAMILY.pipeline(
    "wan2.1-t2v-1.3b", WAN21_T2V_1_3B, WAN21_VAE, WAN21_SCHEDULER,
    source="Wan-AI/Wan2.1-T2V-1.3B-Diffusers configs (transformer, vae, text_encoder width, scheduler)",
)

#: the image encoder of `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`: CLIP ViT-H/14 (open-clip XLM-RoBERTa-large-ViT-huge's
#: vision tower; 32 layers in the release), whose penultimate hidden states (257 tokens x 1280) the transformer reads
CLIP_VIT_H_14 = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1024,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}

#: its image processor: OpenAI CLIP's 224 px bicubic resize, centre crop and normalisation
CLIP_IMAGE_PROCESSOR = {
    "size": {"shortest_edge": 224},
    "crop_size": {"height": 224, "width": 224},
    "resample": 3,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}

#: `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`: `WanImageToVideoPipeline` over the I2V-14B transformer (36 input channels,
#: CLIP image tokens in the cross-attention), Wan2.1's VAE, UMT5-XXL width, CLIP ViT-H, UniPC with shift 3 (480p)
WAN21_I2V_14B_PIPELINE = WAN_FAMILY.pipeline(
    "wan2.1-i2v-14b", WAN21_I2V_14B, WAN21_VAE, WAN21_SCHEDULER,
    pipeline_class_path="diffusers.WanImageToVideoPipeline",
    source="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers layout (transformer in_channels 36, image_dim 1280, added k/v "
           "projections; CLIP ViT-H/14 image encoder) on Wan2.1's VAE, text width and 480p scheduler",
    image_encoder=ModelRecipe("transformers.CLIPVisionModel", CLIP_VIT_H_14,
                              config_class_path="transformers.CLIPVisionConfig", depth_key="num_hidden_layers",
                              min_depth=2),
    image_processor_config=CLIP_IMAGE_PROCESSOR,
)

#: `AutoencoderKLWan` of Wan2.2-TI2V-5B (`Wan-AI/Wan2.2-TI2V-5B-Diffusers` vae config, the statistics of the
#: original release's `Wan2_2_VAE`): 2x2 pixel patches into a residual encoder, 48 channels, 16x16 x 4 compression
WAN22_VAE = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 16,
    "latents_mean": [-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
                     -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
                     -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
                     -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
                     -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
                     0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667],
    "latents_std": [0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
                    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
                    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
                    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
                    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
                    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744],
}

WAN22_TI2V_5B_PIPELINE = WAN_FAMILY.pipeline(
    "wan2.2-ti2v-5b", WAN22_TI2V_5B, WAN22_VAE,
    {**WAN21_SCHEDULER, "flow_shift": 5.0},  # the release's sample_shift
    pipeline_config={"expand_timesteps": True},
    source="Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer and vae configs; Wan2.2's ti2v_5B config (sample_shift 5)",
)

WAN22_T2V_A14B_PIPELINE = WAN_FAMILY.pipeline(
    "wan2.2-t2v-a14b", WAN22_T2V_A14B_EXPERT, WAN21_VAE,
    {**WAN21_SCHEDULER, "flow_shift": 12.0},  # the release's sample_shift
    transformer_2=WAN22_T2V_A14B_EXPERT,
    pipeline_config={"boundary_ratio": 0.875},
    source="Wan2.2's t2v_A14B config (two Wan2.1-14B-shaped experts, boundary 0.875, sample_shift 12) on "
           "Wan2.1's VAE",
)

#: `Wan-AI/Wan2.2-I2V-A14B-Diffusers`: `WanImageToVideoPipeline` over two experts of Wan2.1-I2V-14B's 36 input
#: channels without its CLIP branch (no image encoder), `transformer` for t >= 900; Wan2.1's VAE
WAN22_I2V_A14B_PIPELINE = WAN_FAMILY.pipeline(
    "wan2.2-i2v-a14b", WAN22_I2V_A14B_EXPERT, WAN21_VAE,
    {**WAN21_SCHEDULER, "flow_shift": 5.0},  # the release's sample_shift
    transformer_2=WAN22_I2V_A14B_EXPERT,
    pipeline_class_path="diffusers.WanImageToVideoPipeline",
    pipeline_config={"boundary_ratio": 0.9},
    source="Wan2.2's i2v_A14B config (two experts of 36 input channels, no CLIP, boundary 0.900, sample_shift 5) "
           "on Wan2.1's VAE",
)

__all__ = ["WAN_FAMILY", "WAN21_T2V_1_3B_PIPELINE", "WAN21_VAE", "UMT5_XXL", "WAN21_SCHEDULER", "WAN22_VAE",
           "WAN22_TI2V_5B_PIPELINE", "WAN22_T2V_A14B_PIPELINE", "WAN21_I2V_14B_PIPELINE", "WAN22_I2V_A14B_PIPELINE",
           "CLIP_VIT_H_14", "CLIP_IMAGE_PROCESSOR"]
