"""What is particular to HunyuanVideo: one block list over two block kinds, the packed prompt, text rows of
different lengths under frame-local attention, its shipped layer profile, and the provisional-profile warning."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from motionguide.attention import AttentionController
from motionguide.backbones import (LayerProfile, ProvisionalProfileWarning, backbone_for, load_profile,
                                   warn_if_provisional)
from motionguide.backbones.hunyuanvideo.adapter import pack_prompt, unpack_prompt
from motionguide.backbones.profiles import GuidanceProfile, TrackingProfile
from motionguide.correspondence.settings import resolve_cag_settings
from motionguide.testing import tiny_hunyuan_video_transformer


def test_dual_then_single_stream_blocks_form_one_index_list():
    transformer = tiny_hunyuan_video_transformer(num_layers=2, num_single_layers=3)
    backbone = backbone_for(transformer)
    assert backbone.family == "hunyuanvideo" and backbone.num_blocks == 5 and backbone.num_dual_blocks == 2
    assert [backbone.block_parameter_prefix(i) for i in (0, 1, 2, 4)] == [
        "transformer_blocks.0.", "transformer_blocks.1.", "single_transformer_blocks.0.",
        "single_transformer_blocks.2."]
    assert backbone.video_self_attention(2) is transformer.single_transformer_blocks[0].attn
    assert backbone.attention_role("self") == backbone.attention_role("text") == "joint"
    assert backbone.token_grid((1, 4, 3, 8, 8)).as_tuple() == (3, 4, 4)
    # no call batches [uncond; cond]: "cond" passes are conditional, "uncond" (true CFG) passes are not
    assert backbone.conditional_rows("cond", 2, False) == slice(None)
    assert backbone.conditional_rows("uncond", 1, False) is None


@pytest.mark.parametrize("length,width,pooled", [(6, 16, 8), (3, 4, 8), (256, 4096, 768), (1, 2, 5)])
def test_a_packed_prompt_unpacks_to_the_same_three_tensors(length, width, pooled):
    g = torch.Generator().manual_seed(length)
    embeds = torch.randn(2, length, width, generator=g)
    mask = (torch.arange(length)[None] < torch.tensor([[length], [max(1, length // 2)]])).long()
    vector = torch.randn(2, pooled, generator=g)
    packed = pack_prompt(embeds, mask, vector)
    for dtype in (torch.float32, torch.bfloat16):  # caches may hold prompts in the training dtype
        e, m, p = unpack_prompt(packed.to(dtype), pooled)
        assert torch.equal(m, mask) and e.shape == embeds.shape and p.shape == vector.shape
    e, m, p = unpack_prompt(packed, pooled)
    assert torch.equal(e, embeds) and torch.equal(p, vector)


@torch.no_grad()
def test_frame_local_rows_with_different_text_lengths_match_a_per_row_reference():
    """Two batch rows whose prompts keep 2 and 5 of 6 text slots: each row equals that row computed alone."""
    transformer = tiny_hunyuan_video_transformer()
    g = torch.Generator().manual_seed(1)
    cfg = transformer.config
    inputs = dict(hidden_states=torch.randn(2, cfg.in_channels, 3, 8, 8, generator=g),
                  timestep=torch.tensor([400.0, 400.0]),
                  encoder_hidden_states=torch.randn(2, 6, cfg.text_embed_dim, generator=g),
                  encoder_attention_mask=torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]]),
                  pooled_projections=torch.randn(2, cfg.pooled_projection_dim, generator=g),
                  guidance=torch.tensor([6000.0, 6000.0]), return_dict=False)
    controller = AttentionController(transformer)
    with controller.frame_local(blocks=[0, 2], renormalize=False):
        both = transformer(**inputs)[0]
        alone = [transformer(**{k: (v[i:i + 1] if isinstance(v, torch.Tensor) else v)
                                for k, v in inputs.items()})[0] for i in range(2)]
    torch.testing.assert_close(both, torch.cat(alone), atol=1e-5, rtol=1e-5)


def test_the_shipped_profile_holds_the_papers_hunyuanvideo_layers():
    profile = load_profile("hunyuanvideo")
    assert (profile.family, profile.num_blocks, profile.num_heads) == ("hunyuanvideo", 60, 24)
    assert profile.tracking.block == 16 and profile.tracking.step == -1 and profile.tracking.num_inference_steps == 30
    assert not profile.tracking.provisional  # DiffTrack: dual-stream block 16, the last of 30 steps
    assert profile.imap.blocks == [1, 2, 4, 5, 6, 9, 10, 13, 15, 16, 17, 18, 19] and profile.imap.top_k == 5
    assert profile.imap.renoise_step == 20 and not profile.imap.provisional
    assert profile.guidance.provisional  # DiffTrack publishes no CAG layers for HunyuanVideo


def _tiny_profile(provisional: bool) -> LayerProfile:
    return LayerProfile(name="tiny-hunyuan", family="hunyuanvideo", num_blocks=3, num_heads=2, model="tiny/model",
                        tracking=TrackingProfile(block=1, provisional=provisional, source="a guess"),
                        guidance=GuidanceProfile(blocks=[1, 2], provisional=provisional, source="a guess"))


def test_a_provisional_section_warns_with_the_command_that_replaces_it():
    backbone = backbone_for(tiny_hunyuan_video_transformer())
    with pytest.warns(ProvisionalProfileWarning, match=r"guidance section .* provisional \(a guess\).*"
                      r"motionguide analyze-layers --model tiny/model"):
        settings = resolve_cag_settings(backbone, profile=_tiny_profile(True))
    assert settings.blocks == (1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_cag_settings(backbone, profile=_tiny_profile(True), blocks=[0])  # the user chose the blocks
        resolve_cag_settings(backbone, profile=_tiny_profile(False))
        warn_if_provisional(_tiny_profile(False), "tracking", "tracking")
    with pytest.warns(ProvisionalProfileWarning, match="tracking section driving tracking"):
        warn_if_provisional(_tiny_profile(True), "tracking", "tracking")


def test_components_of_another_width_are_refused_in_one_line():
    from motionguide.errors import ConfigError
    from motionguide.testing import tiny_hunyuan_video_pipeline

    pipe = tiny_hunyuan_video_pipeline()
    backbone = backbone_for(pipe)
    backbone.check_components()  # the matching tiny components pass
    pipe.text_encoder_2.config.hidden_size = 12
    with pytest.raises(ConfigError, match=r"text_encoder_2 hidden_size is 12 but transformer pooled_projection_dim "
                                          r"is 8") as error:
        backbone.check_components()
    assert "\n" not in str(error.value)
    pipe.text_encoder_2.config.hidden_size = 8
    pipe.vae.config.latent_channels = 16
    with pytest.raises(ConfigError, match="vae latent_channels is 16 but transformer in_channels is 4"):
        backbone.check_components()


def test_the_real_size_model_lists_its_token_grid_and_ships_its_profile():
    from motionguide.backbones.reference_configs import build_on_meta
    from motionguide.backbones.shapes import real_size_footprints

    row = {r.model: r for r in real_size_footprints()}["hunyuanvideo"]
    assert row.token_grid == (13, 30, 45) and row.video_tokens == 17_550
    assert row.sequence == 17_550 + 256 and (row.blocks, row.heads, row.head_dim) == (60, 24, 128)
    backbone = backbone_for(build_on_meta("hunyuanvideo"))
    assert backbone.num_dual_blocks == 20 and backbone.default_profile().name == "hunyuanvideo"


def test_a_template_that_crops_the_whole_prompt_is_refused_before_it_becomes_nan():
    from motionguide.testing import tiny_hunyuan_video_pipeline

    pipe = tiny_hunyuan_video_pipeline()
    pipe.prompt_template = {"template": "{}", "crop_start": 200}  # longer than anything this tokenizer makes
    with pytest.raises(ValueError, match="crop removed every prompt token"):
        backbone_for(pipe).encode_prompt(["a red circle"], max_sequence_length=8)


def test_profile_steps_land_where_the_pipeline_and_the_papers_put_them():
    """Step k of n on the backbone's schedule is the pipeline's own step k (sigmas linspace(1, 0, n + 1)[:-1],
    shift 7): IMAP's re-noise step 20 of 30 is sigma ~ 0.778, DiffTrack's last step of 30 is t ~ 194."""
    import copy

    import numpy as np
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import retrieve_timesteps

    from motionguide.correspondence import default_tracking_timestep
    from motionguide.saliency.compute import default_renoise_timestep
    from motionguide.testing import tiny_hunyuan_video_pipeline

    pipe = tiny_hunyuan_video_pipeline()
    backbone = backbone_for(pipe)
    expected, _ = retrieve_timesteps(copy.deepcopy(pipe.scheduler), 30, sigmas=np.linspace(1.0, 0.0, 31)[:-1])
    shipped = load_profile("hunyuanvideo")
    profile = LayerProfile(name="tiny", family="hunyuanvideo", num_blocks=3, num_heads=2,
                           tracking=TrackingProfile(block=1, step=-1, num_inference_steps=30), imap=shipped.imap)
    profile.imap.blocks = [0, 1]
    assert default_tracking_timestep(backbone, profile) == pytest.approx(float(expected[-1]))
    assert default_tracking_timestep(backbone, profile) == pytest.approx(194.44, abs=0.01)
    assert default_renoise_timestep(backbone, profile.imap) == pytest.approx(float(expected[20]))
    assert default_renoise_timestep(backbone, profile.imap) / 1000 == pytest.approx(0.778, abs=1e-3)
    assert backbone.scheduler.config.shift == pipe.scheduler.config.shift  # the rest is the pipeline's scheduler


def test_the_backbone_tokenizer_counts_prompt_tokens_in_embedding_slots():
    """Word i of the prompt sits at slot i of the cropped prompt embeddings, not at its index in tokenizer(prompt):
    the template and its crop come first (with Llama-3, a BOS too)."""
    from motionguide.saliency.words import word_token_positions
    from motionguide.testing import tiny_hunyuan_video_pipeline

    pipe = tiny_hunyuan_video_pipeline()
    backbone = backbone_for(pipe)
    prompt = "a red circle moves left"
    raw = pipe.tokenizer(prompt)["input_ids"]
    assert raw.index(pipe.tokenizer.convert_tokens_to_ids("red")) != 1  # the bare prompt's ids are offset
    slots = backbone.tokenizer(prompt)["input_ids"]
    ids = pipe.tokenizer(backbone.prompt_template()["template"].format(prompt))["input_ids"]
    assert slots == ids[95:]
    positions = word_token_positions(backbone.tokenizer, prompt, ["a", "red", "left"], max_slots=16)
    assert positions == {"a": [0], "red": [1], "left": [4]}
    assert [slots[p[0]] for p in positions.values()] == pipe.tokenizer.convert_tokens_to_ids(["a", "red", "left"])


def test_the_fine_tuning_loop_trains_a_lora_that_the_stock_pipeline_reloads_exactly(tmp_path):
    """`Trainer` end to end on a saved tiny HunyuanVideo pipeline (latent and prompt cache, packed prompts,
    caption dropout, flow-matching loss at embedded guidance 1); `HunyuanVideoPipeline.load_lora_weights` then
    gives exactly the trained transformer."""
    from diffusers import HunyuanVideoPipeline

    from motionguide.testing import tiny_hunyuan_video_pipeline
    from motionguide.toy import make_dataset
    from motionguide.training.callbacks import TrainerCallback
    from motionguide.training.config import TrainConfig
    from motionguide.training.loop import Trainer

    tiny_hunyuan_video_pipeline().save_pretrained(tmp_path / "model")
    make_dataset(tmp_path / "data", num_clips=4, seed=1, progress=False)
    captured = {}

    class Grab(TrainerCallback):
        def on_train_end(self, ctx):
            captured["model"] = ctx.transformer

    config = TrainConfig(pretrained_model_name_or_path=str(tmp_path / "model"), output_dir=str(tmp_path / "out"),
                         data_root=str(tmp_path / "data"), latent_cache_dir=str(tmp_path / "cache"), train_steps=2,
                         train_batch_size=2, checkpointing_steps=0, report_to="none", rank=4, lora_alpha=8,
                         max_sequence_length=16, learning_rate=1e-2, lr_scheduler="constant", caption_dropout=0.25)
    summary = Trainer(config, callbacks=[Grab()]).run()
    assert summary["steps"] == 2 and all(math.isfinite(v) for v in summary["losses"].values())
    stock = HunyuanVideoPipeline.from_pretrained(tmp_path / "model")
    base = HunyuanVideoPipeline.from_pretrained(tmp_path / "model")
    stock.load_lora_weights(tmp_path / "out")
    g = torch.Generator().manual_seed(0)
    cfg = stock.transformer.config
    inputs = dict(hidden_states=torch.randn(1, cfg.in_channels, 3, 4, 4, generator=g), timestep=torch.tensor([700.0]),
                  encoder_hidden_states=torch.randn(1, 5, cfg.text_embed_dim, generator=g),
                  encoder_attention_mask=torch.tensor([[1, 1, 1, 0, 0]]),
                  pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g),
                  guidance=torch.tensor([1000.0]), return_dict=False)
    with torch.no_grad():
        trained = captured["model"].eval()(**inputs)[0]
        reloaded = stock.transformer(**inputs)[0]
        untouched = base.transformer(**inputs)[0]
    assert torch.equal(trained, reloaded) and not torch.allclose(trained, untouched)


def test_the_curate_command_selects_clips_on_a_hunyuanvideo_pipeline(tmp_path, capsys):
    """`motionguide curate` end to end (latent and prompt caches, the Motive pass on two blocks of both kinds,
    scores, selection) on a saved tiny HunyuanVideo pipeline."""
    import json

    from motionguide.cli import main
    from motionguide.testing import tiny_hunyuan_video_pipeline
    from motionguide.toy import make_dataset

    tiny_hunyuan_video_pipeline().save_pretrained(tmp_path / "model")
    make_dataset(tmp_path / "data", num_clips=4, seed=1, progress=False)
    make_dataset(tmp_path / "queries", num_clips=2, seed=7, progress=False)
    code = main(["curate", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--queries",
                 str(tmp_path / "queries"), "--out", str(tmp_path / "curated"), "--projector", "dense_gaussian",
                 "--dim", "16", "--fraction", "0.5", "--params", "blocks", "--blocks", "0,2",
                 "--max_sequence_length", "16"])
    assert code == 0
    selection = json.loads((tmp_path / "curated" / "selection.json").read_text())
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["selected"] == 2 and summary["counts"]["train"] == {"featurised": 4, "skipped": 0, "flagged": 0}
    assert selection


def test_random_pipeline_writes_the_released_architecture_with_one_block_of_each_kind(tmp_path):
    """`motionguide random-pipeline --like hunyuanvideo`: the released configs (both block kinds cut to one), a
    Llama of at least two layers, CLIP, and a tokenizer whose template crop leaves the prompt at slot 0. (Loading
    the 2.9 GB folder and sampling from it in bf16 was run by hand; it is too large for this suite's memory.)"""
    import json

    from transformers import AutoTokenizer

    from motionguide.backbones.reference_configs import HUNYUANVIDEO
    from motionguide.cli import main

    out = tmp_path / "hunyuan"
    assert main(["random-pipeline", "--like", "hunyuanvideo", "--out", str(out), "--num_layers", "1",
                 "--text_layers", "1", "--dtype", "bfloat16"]) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "HunyuanVideoPipeline"
    models = {k: v[1] for k, v in index.items() if isinstance(v, list) and not k.startswith("tokenizer")}
    assert models == {"transformer": "HunyuanVideoTransformer3DModel", "vae": "AutoencoderKLHunyuanVideo",
                      "text_encoder": "LlamaModel", "text_encoder_2": "CLIPTextModel",
                      "scheduler": "FlowMatchEulerDiscreteScheduler"}
    assert index["tokenizer"][0] == index["tokenizer_2"][0] == "transformers"
    transformer = json.loads((out / "transformer" / "config.json").read_text())
    assert transformer["num_layers"] == transformer["num_single_layers"] == 1
    assert all(transformer[k] == (list(v) if isinstance(v, tuple) else v) for k, v in HUNYUANVIDEO.items()
               if k not in ("num_layers", "num_single_layers"))
    llama = json.loads((out / "text_encoder" / "config.json").read_text())
    assert llama["num_hidden_layers"] == 2 and llama["hidden_size"] == 4096
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["shift"] == 7.0
    assert json.loads((out / "vae" / "config.json").read_text())["scaling_factor"] == 0.476986
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    ids = tokenizer(DEFAULT_PROMPT_TEMPLATE["template"].format("a red circle"))["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[95:98]) == ["a", "red", "circle"]
