"""HunyuanVideo as a recipe for a random-weight copy (`motionguide random-pipeline --like hunyuanvideo`).

The numbers are the released diffusers checkpoint's (`hunyuanvideo-community/HunyuanVideo`): the transformer
(20 dual-stream + 40 single-stream blocks, 24 heads x 128; shared with `motionguide shapes` through
`reference_configs`), the causal 3D VAE (16 latent channels, 8x spatial, 4x temporal, scaling factor 0.476986),
the Llama text encoder's width (4096, 32 heads, 8 key-value heads, FFN 14336; 32 layers and a 128,320-token
vocabulary in the release), CLIP ViT-L/14's text tower (768 wide, 12 heads; its pooled output conditions the
transformer), text length 256, and the flow-matching Euler scheduler with shift 7. `--num_layers N` keeps N
blocks of each kind; the Llama keeps at least 2 layers (the pipeline reads its third-last hidden state). The text encoders get few layers and word-level vocabularies; the Llama one reads the
pipeline's default prompt template as Llama-3's tokenizer does (:func:`llama_template_tokenizer`), so the stock
pipeline's crop of the template leaves the prompt's own tokens.
"""

from __future__ import annotations

from typing import Iterable

from ..random_weights import ModelRecipe, ReferencePipeline
from ..reference_configs import HUNYUANVIDEO

#: `AutoencoderKLHunyuanVideo` of HunyuanVideo
HUNYUANVIDEO_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "down_block_types": ["HunyuanVideoDownBlock3D"] * 4,
    "up_block_types": ["HunyuanVideoUpBlock3D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "scaling_factor": 0.476986,
    "spatial_compression_ratio": 8,
    "temporal_compression_ratio": 4,
    "mid_block_add_attention": True,
}

#: the Llama-3-8B text model HunyuanVideo encodes prompts with (`LlamaModel`, hidden states of its third-last layer)
HUNYUANVIDEO_LLAMA = {
    "vocab_size": 128320,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
}

#: CLIP ViT-L/14's text tower (`CLIPTextModel`; its pooled output is the transformer's `pooled_projections`)
CLIP_L_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

#: HunyuanVideo's released scheduler
HUNYUANVIDEO_SCHEDULER = {"num_train_timesteps": 1000, "shift": 7.0}


def llama_template_tokenizer(words: Iterable[str], model_max_length: int = 1024):
    """A word-level tokenizer that reads HunyuanVideo's default Llama prompt template as the released Llama-3
    tokenizer does for `crop_start`: the template's text before the prompt takes exactly `crop_start` (95)
    positions (one added token for the text, the rest fixed ones in front), so the stock pipeline's crop leaves the
    prompt's own tokens, and the prompt's words are ordinary word-level tokens."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from tokenizers.processors import TemplateProcessing

    from ...text import word_level_tokenizer

    tokenizer = word_level_tokenizer(words, model_max_length=max(model_max_length, 1024))
    prefix = DEFAULT_PROMPT_TEMPLATE["template"].split("{}")[0]
    tokenizer.add_special_tokens({"additional_special_tokens": [prefix, "<fill>"]})
    fill = DEFAULT_PROMPT_TEMPLATE["crop_start"] - 1
    eos = tokenizer.eos_token
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=" ".join(["<fill>"] * fill + ["$A", eos]),
        special_tokens=[("<fill>", tokenizer.convert_tokens_to_ids("<fill>")),
                        (eos, tokenizer.convert_tokens_to_ids(eos))])
    return tokenizer


HUNYUANVIDEO_PIPELINE = ReferencePipeline(
    name="hunyuanvideo",
    pipeline_class_path="diffusers.HunyuanVideoPipeline",
    transformer=ModelRecipe("diffusers.HunyuanVideoTransformer3DModel", HUNYUANVIDEO,
                           extra_depth_keys=("num_single_layers",)),
    vae=ModelRecipe("diffusers.AutoencoderKLHunyuanVideo", HUNYUANVIDEO_VAE),
    text_encoder=ModelRecipe("transformers.LlamaModel", HUNYUANVIDEO_LLAMA, config_class_path="transformers.LlamaConfig",
                             depth_key="num_hidden_layers", min_depth=2),
    text_encoder_2=ModelRecipe("transformers.CLIPTextModel", CLIP_L_TEXT,
                               config_class_path="transformers.CLIPTextConfig", depth_key="num_hidden_layers"),
    scheduler_class_path="diffusers.FlowMatchEulerDiscreteScheduler",
    scheduler_config=HUNYUANVIDEO_SCHEDULER,
    max_sequence_length=256,
    tokenizer_factory="motionguide.backbones.hunyuanvideo.reference.llama_template_tokenizer",
    source="hunyuanvideo-community/HunyuanVideo configs (transformer, vae, text encoder widths, scheduler)",
)

__all__ = ["HUNYUANVIDEO_PIPELINE", "HUNYUANVIDEO_VAE", "HUNYUANVIDEO_LLAMA", "CLIP_L_TEXT",
           "HUNYUANVIDEO_SCHEDULER", "llama_template_tokenizer"]
