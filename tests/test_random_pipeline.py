"""`motionguide random-pipeline`: a loadable pipeline folder with the released architecture and random weights.

Built here at one transformer block and one text-encoder layer (everything else at released size); the expected
values are the released checkpoints' configs, written out in this file.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from motionguide.cli import main

pytestmark = pytest.mark.slow

WAN_TRANSFORMER = {
    "patch_size": [1, 2, 2], "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024, "image_dim": None,
    "added_kv_proj_dim": None,
}
WAN_VAE = {
    "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
    "temperal_downsample": [False, True, True], "is_residual": False, "scale_factor_spatial": 8,
    "scale_factor_temporal": 4,
}
COG_TRANSFORMER = {
    "num_attention_heads": 30, "attention_head_dim": 64, "in_channels": 16, "out_channels": 16,
    "time_embed_dim": 512, "text_embed_dim": 4096, "sample_width": 90, "sample_height": 60, "sample_frames": 49,
    "patch_size": 2, "patch_size_t": None, "temporal_compression_ratio": 4, "max_text_seq_length": 226,
    "activation_fn": "gelu-approximate", "use_rotary_positional_embeddings": False,
    "use_learned_positional_embeddings": False, "attention_bias": True, "norm_eps": 1e-5,
}
COG_VAE = {
    "block_out_channels": [128, 256, 256, 512], "latent_channels": 16, "layers_per_block": 3, "norm_num_groups": 32,
    "temporal_compression_ratio": 4, "scaling_factor": 1.15258426, "use_quant_conv": False,
    "use_post_quant_conv": False,
}
XXL_ENCODER = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_heads": 64, "relative_attention_num_buckets": 32,
               "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu", "is_gated_act": True,
               "dense_act_fn": "gelu_new"}

FAMILIES = {
    "wan2.1-t2v-1.3b": {
        "pipeline": "WanPipeline", "transformer": ("WanTransformer3DModel", WAN_TRANSFORMER),
        "vae": ("AutoencoderKLWan", WAN_VAE), "text_encoder": ("UMT5EncoderModel", XXL_ENCODER),
        "scheduler": ("UniPCMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True,
                                                  "flow_shift": 3.0}),
        "text_length": 512, "released_params": 1_418_996_800,
    },
    "cogvideox-2b": {
        "pipeline": "CogVideoXPipeline", "transformer": ("CogVideoXTransformer3DModel", COG_TRANSFORMER),
        "vae": ("AutoencoderKLCogVideoX", COG_VAE), "text_encoder": ("T5EncoderModel", XXL_ENCODER),
        "scheduler": ("CogVideoXDDIMScheduler", {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                                                 "snr_shift_scale": 3.0, "timestep_spacing": "trailing",
                                                 "beta_schedule": "scaled_linear"}),
        "text_length": 226, "released_params": None,
    },
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def built(request, tmp_path_factory):
    """(name, folder) of a one-block, one-text-layer bf16 build of each family."""
    out = tmp_path_factory.mktemp("random") / request.param
    assert main(["random-pipeline", "--like", request.param, "--out", str(out), "--num_layers", "1",
                 "--text_layers", "1", "--dtype", "bfloat16", "--seed", "0"]) == 0
    yield request.param, out
    shutil.rmtree(out, ignore_errors=True)  # up to 3 GB each


def _config(folder: Path, component: str) -> dict:
    name = "scheduler/scheduler_config.json" if component == "scheduler" else f"{component}/config.json"
    return json.loads((folder / name).read_text())


def test_saved_architecture_is_the_released_one_but_the_overridden_depths(built):
    name, folder = built
    expected = FAMILIES[name]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == expected["pipeline"]
    for component in ("transformer", "vae", "text_encoder", "scheduler"):
        class_name, fields = expected[component]
        assert index[component][1] == class_name
        config = _config(folder, component)
        if component != "text_encoder":
            assert config["_class_name"] == class_name
        assert {k: config[k] for k in fields} == fields, component
    assert _config(folder, "transformer")["num_layers"] == 1
    assert _config(folder, "text_encoder")["num_layers"] == 1
    tokenizer = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
    assert tokenizer["model_max_length"] == expected["text_length"]
    provenance = json.loads((folder / "random_pipeline.json").read_text())
    assert provenance["random_weights"] and provenance["like"] == name and provenance["real_num_layers"] == 30

    if expected["released_params"]:  # the released depth on the meta device has the released parameter count
        import diffusers
        from accelerate import init_empty_weights

        config = {k: v for k, v in _config(folder, "transformer").items() if not k.startswith("_")}
        with init_empty_weights():
            full = getattr(diffusers, expected["transformer"][0]).from_config({**config, "num_layers": 30})
        assert sum(p.numel() for p in full.parameters()) == expected["released_params"]


def _saved_dtypes(folder: Path, component: str) -> dict[str, torch.dtype]:
    dtypes = {}
    for file in sorted((folder / component).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                dtypes[key] = f.get_slice(key).get_dtype()
    assert dtypes, f"no weights saved for {component}"
    return {k: {"BF16": torch.bfloat16, "F32": torch.float32}.get(v, v) for k, v in dtypes.items()}


def test_saved_weights_are_bf16_except_what_diffusers_keeps_in_fp32(built):
    import diffusers

    name, folder = built
    keep = getattr(diffusers, FAMILIES[name]["transformer"][0])._keep_in_fp32_modules or []
    dtypes = _saved_dtypes(folder, "transformer")
    fp32 = {k for k, v in dtypes.items() if v == torch.float32}
    assert fp32 == {k for k in dtypes if any(part in keep for part in k.split("."))}
    assert set(dtypes.values()) <= {torch.bfloat16, torch.float32}
    if name.startswith("wan"):
        assert "scale_shift_table" in fp32 and "blocks.0.norm2.weight" in fp32  # Wan keeps these in fp32
        assert dtypes["blocks.0.attn1.to_q.weight"] == torch.bfloat16
    else:
        assert not fp32  # CogVideoX keeps nothing in fp32
    for component in ("vae", "text_encoder"):  # transformers keeps T5's `wo` in fp32 for fp16 only
        assert set(_saved_dtypes(folder, component).values()) == {torch.bfloat16}, component


def test_loads_offline_and_runs_a_bf16_forward_through_its_backbone(built):
    from diffusers import DiffusionPipeline

    from motionguide.backbones import backbone_for

    name, folder = built
    pipe = DiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.bfloat16)
    assert type(pipe).__name__ == FAMILIES[name]["pipeline"]
    saved = _saved_dtypes(folder, "transformer")
    loaded = dict(pipe.transformer.named_parameters())
    assert {k: loaded[k].dtype for k in saved} == saved  # loading with torch_dtype converts nothing

    backbone = backbone_for(pipe)
    assert backbone.num_blocks == 1 and backbone.num_heads == (12 if name.startswith("wan") else 30)
    text_length = 226 if name == "cogvideox-2b" else 32  # CogVideoX's positions need its full text length
    embeds = backbone.encode_prompt(["a red ball moves left"], max_sequence_length=text_length)
    assert embeds.shape == (1, text_length, 4096) and embeds.dtype == torch.bfloat16
    latents = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    with torch.no_grad():
        out = backbone.predict(latents, torch.tensor([500]), embeds)
        frames = pipe.vae.decode(backbone.denormalize_latents(latents)).sample
    assert out.shape == latents.shape and out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert frames.shape[:2] == (1, 3) and frames.shape[-2:] == (32, 32) and torch.isfinite(frames.float()).all()

    pipe.set_progress_bar_config(disable=True)  # the stock pipeline samples with the released scheduler
    video = pipe("a red ball moves left", num_frames=9, height=32, width=32, num_inference_steps=2,
                 max_sequence_length=text_length, output_type="pt", generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 9, 3, 32, 32) and torch.isfinite(video.float()).all()


def test_refuses_a_non_empty_folder_and_a_bad_depth_before_building(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert main(["random-pipeline", "--like", "wan2.1-t2v-1.3b", "--out", str(taken)]) == 2
    assert "not empty" in capsys.readouterr().err and (taken / "keep.txt").read_text() == "mine"
    assert main(["random-pipeline", "--like", "cogvideox-2b", "--out", str(tmp_path / "x"), "--num_layers", "0"]) == 2
    assert "--num_layers" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_fp32_kept_modules_follow_each_librarys_loading_rule():
    from motionguide.backbones.random_weights import fp32_kept_modules, is_fp32_kept
    from motionguide.testing import tiny_t5, tiny_wan_transformer

    wan, t5 = tiny_wan_transformer(), tiny_t5(vocab_size=20)
    for dtype in (torch.bfloat16, torch.float16):  # diffusers keeps its list at any reduced dtype
        assert set(fp32_kept_modules(wan, dtype)) == {"rope", "time_embedder", "scale_shift_table", "norm1", "norm2",
                                                      "norm3"}
    assert fp32_kept_modules(t5, torch.bfloat16) == () and fp32_kept_modules(t5, torch.float16) == ("wo",)
    assert fp32_kept_modules(wan, torch.float32) == ()
    assert is_fp32_kept("blocks.3.norm2.weight", ["norm2"]) and not is_fp32_kept("blocks.3.attn1.norm_q.weight",
                                                                                   ["norm2", "norm1"])


def test_the_cogvideox_5b_recipe_is_the_released_5b_text_to_video_layout():
    """`--like cogvideox-5b`: 48 heads x 42 blocks with 3D RoPE and no stored position table (any frame size), the
    5B VAE's scaling factor 0.7 and its scheduler's SNR shift 1.0 (the 2B's are 1.15 and 3.0), text-to-video."""
    from motionguide.backbones.random_pipeline import reference_pipeline

    recipe = reference_pipeline("cogvideox-5b")
    transformer = {**COG_TRANSFORMER, "num_attention_heads": 48, "num_layers": 42,
                   "use_rotary_positional_embeddings": True}
    assert recipe.pipeline_class_path == "diffusers.CogVideoXPipeline"
    assert all(recipe.transformer.config[k] == v for k, v in transformer.items() if k != "patch_size_t")
    assert recipe.vae.config["scaling_factor"] == 0.7 and recipe.scheduler_config["snr_shift_scale"] == 1.0
    assert recipe.max_sequence_length == 226
