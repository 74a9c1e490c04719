"""Image-to-video models (CogVideoX-5B-I2V at tiny size): the conditioning image reaches every transformer call.

The family matrix covers the instruments and methods; here: the latent cache stores each clip's first frame encoded
as the pipeline encodes its image, fine-tuning and the Motive pass read it from there, the `--image` flag is checked
before any model loads, and real-video tracking conditions on the video's own first frame by default.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MatrixProjector

from motionguide.backbones import backbone_for, image_pixels
from motionguide.testing import tiny_cogvideox_pipeline
from motionguide.toy import make_dataset


@pytest.fixture(scope="module")
def i2v_pipe():
    return tiny_cogvideox_pipeline(rotary=True, image_to_video=True)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("i2v") / "toy", num_clips=3, seed=5, progress=False)


def test_the_pipeline_input_is_noise_then_the_image_latents_at_frame_0_and_zeros(i2v_pipe):
    """`encode_condition` with the call's generator gives the image latents the stock pipeline builds, and
    `predict` lays them out as the pipeline does: [noise | image at frame 0, zeros after] on the channel axis."""
    from PIL import Image

    backbone = backbone_for(i2v_pipe)
    frame = torch.randint(0, 256, (16, 16, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    seen = []
    hook = i2v_pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: seen.append(k["hidden_states"].clone()), with_kwargs=True)
    try:
        i2v_pipe(image=Image.fromarray(frame.numpy()), prompt="a red circle", num_frames=9, height=16, width=16,
                 num_inference_steps=1, max_sequence_length=16, output_type="latent", guidance_scale=1.0,
                 generator=torch.Generator().manual_seed(3))
    finally:
        hook.remove()
    (hidden,) = seen  # [1, F, 2C, h, w], CFG off
    with torch.no_grad():
        condition = backbone.encode_condition(image_pixels(frame), 9, generator=torch.Generator().manual_seed(3))
    c = backbone.config.out_channels
    torch.testing.assert_close(hidden[:, :1, c:], condition["image_latents"].permute(0, 2, 1, 3, 4), atol=0, rtol=0)
    assert not hidden[:, 1:, c:].any()
    seen.clear()
    noisy = hidden[:, :, :c].permute(0, 2, 1, 3, 4)
    hook = backbone.transformer.register_forward_pre_hook(
        lambda m, a, k: seen.append(k["hidden_states"].clone()), with_kwargs=True)
    try:
        with torch.no_grad():
            backbone.predict(noisy, torch.tensor([999]), torch.zeros(1, 16, 32), condition=condition)
    finally:
        hook.remove()
    assert torch.equal(seen[0], hidden)


def test_a_call_without_the_condition_or_a_text_model_with_one_is_a_one_line_error(i2v_pipe):
    backbone = backbone_for(i2v_pipe)
    with pytest.raises(ValueError, match="needs its conditioning image") as exc:
        backbone.predict(torch.zeros(1, 4, 3, 2, 2), torch.tensor([500]), torch.zeros(1, 16, 32))
    assert "\n" not in str(exc.value)
    t2v = backbone_for(tiny_cogvideox_pipeline(rotary=True))
    assert not t2v.conditions_on_image and t2v.encode_condition(torch.zeros(1, 3, 16, 16), 9) == {}
    with pytest.raises(ValueError, match="takes no conditioning image"):
        t2v.predict(torch.zeros(1, 4, 3, 2, 2), torch.tensor([500]), torch.zeros(1, 16, 32),
                    condition={"image_latents": torch.zeros(1, 4, 1, 2, 2)})


def test_the_cache_stores_each_clips_first_frame_encoded_as_the_pipeline_encodes_its_image(i2v_pipe, toy_root,
                                                                                           tmp_path):
    from motionguide.data import CachedLatentDataset, LatentCache, VideoDataset
    from motionguide.training.loop import _stack_cached_clips

    backbone = backbone_for(i2v_pipe)
    dataset = VideoDataset(toy_root, num_frames=9, height=32, width=32)
    cache = LatentCache.for_dataset(tmp_path / "cache", dataset, backbone, max_sequence_length=16)
    assert cache.fields["condition"] == "first_frame"
    cache.build(dataset, backbone, max_sequence_length=16, progress=False)
    cached = CachedLatentDataset(cache)
    for index, clip_id in enumerate(dataset.ids):
        item = cached[cached.ids.index(clip_id)]
        first = dataset[index]["pixels"][:, 0]  # [3, H, W] in [-1, 1]
        with torch.no_grad():  # independent: the frame alone through the VAE, posterior mode, scaling factor
            expected = i2v_pipe.vae.encode(first[None, :, None]).latent_dist.mode()
        expected = expected * i2v_pipe.vae.config.scaling_factor
        assert set(item["condition"]) == {"image_latents"}
        torch.testing.assert_close(item["condition"]["image_latents"], expected[0], atol=1e-6, rtol=1e-6)
    batch = _stack_cached_clips([cached[0], cached[1]])
    assert batch["condition"]["image_latents"].shape == (2, 4, 1, 4, 4)
    # an interrupted build's clip files are adopted with their condition
    manifest = cache.dir / "manifest.json"
    manifest.unlink()
    reopened = LatentCache.for_dataset(tmp_path / "cache", dataset, backbone, max_sequence_length=16)
    report = reopened.build(dataset, backbone, max_sequence_length=16, progress=False)
    assert not report.encoded and sorted(report.reused) == sorted(dataset.ids)
    assert json.loads(manifest.read_text())["counts"]["ok"] == len(dataset.ids)


@pytest.mark.parametrize("model", ["cogvideox-5b-i2v", "wan2.1-i2v", "wan2.2-i2v-a14b"])
def test_fine_tuning_an_image_to_video_model_trains_on_its_first_frames_and_reloads_in_the_stock_pipeline(
        model, i2v_pipe, toy_root, tmp_path):
    """Two LoRA steps through the Trainer (the cache's condition in every batch, validation conditioned on the
    first training clip's first frame); the saved LoRA loads into the stock image-to-video pipeline (Wan2.2-I2V-A14B:
    a LoRA per expert, `transformer_2`'s from its own folder)."""
    from diffusers import DiffusionPipeline

    from motionguide.testing import tiny_wan22_i2v_a14b_pipeline, tiny_wan_i2v_pipeline
    from motionguide.training.config import TrainConfig
    from motionguide.training.loop import Trainer

    pipe, text_len = {"cogvideox-5b-i2v": (i2v_pipe, 16), "wan2.1-i2v": (tiny_wan_i2v_pipeline(), 512),
                      "wan2.2-i2v-a14b": (tiny_wan22_i2v_a14b_pipeline(), 16)}[model]
    pipe.save_pretrained(tmp_path / "model")
    config = TrainConfig(pretrained_model_name_or_path=str(tmp_path / "model"), output_dir=str(tmp_path / "out"),
                         data_root=str(toy_root), latent_cache_dir=str(tmp_path / "cache"), train_steps=2,
                         train_batch_size=2, checkpointing_steps=0, report_to="none", rank=2, lora_alpha=4,
                         max_sequence_length=text_len, learning_rate=1e-2, num_frames=9, height=32, width=32,
                         validation_prompts=["a red circle moves left"], validation_inference_steps=1,
                         validation_num_frames=9, validation_height=32, validation_width=32)
    summary = Trainer(config).run()
    assert Path(summary["lora"]).is_file()
    assert list((tmp_path / "out" / "validation").rglob("*.mp4"))
    stock = DiffusionPipeline.from_pretrained(tmp_path / "model")
    assert type(stock).__name__ == type(pipe).__name__
    stock.load_lora_weights(tmp_path / "out")
    assert any("lora" in name for name, _ in stock.transformer.named_parameters())
    if model == "wan2.2-i2v-a14b":
        stock.load_lora_weights(tmp_path / "out" / "transformer_2", load_into_transformer_2=True)
        assert any("lora" in name for name, _ in stock.transformer_2.named_parameters())


def test_the_motive_featurizer_reads_the_condition_from_the_cache(i2v_pipe, toy_root, tmp_path):
    """A clip's feature from its cached latents and condition equals the one computed from the same tensors by
    hand, and differs when the conditioning image is another (the condition is used, not ignored)."""
    from motionguide.data import LatentCache, VideoDataset
    from motionguide.data.cache import condition_of
    from motionguide.motive.featurizer import CommonRandomness, GradientFeaturizer

    backbone = backbone_for(i2v_pipe)
    dataset = VideoDataset(toy_root, num_frames=9, height=32, width=32)
    cache = LatentCache.for_dataset(tmp_path / "cache", dataset, backbone, max_sequence_length=16)
    cache.build(dataset, backbone, max_sequence_length=16, progress=False)
    tensors = cache.load(dataset.ids[0])
    condition = condition_of(tensors)
    featurizer = GradientFeaturizer(backbone, lambda sizes: MatrixProjector(sizes, dim=8, name="dense"), CommonRandomness(timestep=751.0, seed=1),
                                    scope="blocks", blocks=[0])
    a = featurizer.featurize(tensors["latents"], tensors["prompt_embeds"], None, condition=condition)
    b = featurizer.featurize(tensors["latents"], tensors["prompt_embeds"], None,
                             condition={"image_latents": condition["image_latents"].flip(-1)})
    again = featurizer.featurize(tensors["latents"], tensors["prompt_embeds"], None, condition=condition)
    assert torch.equal(a.feature, again.feature) and not torch.allclose(a.feature, b.feature)
    with pytest.raises(ValueError, match="conditioning image"):
        featurizer.featurize(tensors["latents"], tensors["prompt_embeds"], None)


def test_tracking_conditions_on_the_videos_first_frame_unless_given_another_image(i2v_pipe):
    from motionguide.correspondence import track_video

    frames = torch.randint(0, 256, (5, 32, 32, 3), generator=torch.Generator().manual_seed(3)).to(torch.uint8).numpy()
    queries = [[4.0, 4.0], [20.0, 12.0]]
    kwargs = dict(block=1, timestep=500.0, chunk_size=2, max_sequence_length=16, method="soft_argmax")
    default = track_video(i2v_pipe, frames, queries, **kwargs)
    explicit = track_video(i2v_pipe, frames, queries, image=frames[0], **kwargs)
    other = track_video(i2v_pipe, frames, queries, image=255 - frames[0], **kwargs)
    assert np.array_equal(default, explicit) and not np.array_equal(default, other)
    with pytest.raises(ValueError, match="takes no conditioning image"):
        track_video(tiny_cogvideox_pipeline(rotary=True), frames, queries, image=frames[0], **kwargs)


# ---------------------------------------------------------------------------------------------- --image flag
def _model_folder(root: Path, pipeline_class: str) -> Path:
    """A model folder as far as the pre-load checks read it: its model_index.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": pipeline_class, "transformer": ["diffusers", "CogVideoXTransformer3DModel"]}))
    return root


@pytest.mark.parametrize("command", ["generate", "track", "saliency"])
def test_the_image_flag_is_checked_before_any_model_loads(tmp_path, command, capsys, monkeypatch):
    from PIL import Image

    from motionguide.sampling import generate

    def no_load(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(generate, "load_pipeline", no_load)
    i2v = _model_folder(tmp_path / "i2v", "CogVideoXImageToVideoPipeline")
    t2v = _model_folder(tmp_path / "t2v", "CogVideoXPipeline")
    image = tmp_path / "first.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image)
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    video = tmp_path / "clip.mp4"
    from motionguide.video import write_video

    write_video(video, np.zeros((5, 32, 32, 3), dtype=np.uint8), fps=8, lossless=True)

    def run(model, *extra):
        if command == "generate":
            from motionguide.sampling.cli import main

            return main(["--model", str(model), "--prompt", "a red circle", "--out", str(tmp_path / "out"), *extra])
        from motionguide.cli import main

        if command == "saliency":  # generation mode: the image conditions the generated video
            return main(["saliency", "--model", str(model), "--prompt", "a red circle", "--out", str(tmp_path / "s"),
                         *extra])
        return main(["track", "--model", str(model), "--video", str(video), "--out", str(tmp_path / "t.npz"),
                     *extra])

    cases = [(i2v, [], "is an image-to-video model"),
             (t2v, ["--image", str(image)], "is a text-to-video model"),
             (i2v, ["--image", str(tmp_path / "missing.png")], "no such file"),
             (i2v, ["--image", str(tmp_path / "garbage.png")], "cannot be read as an image")]
    for model, extra, message in cases:
        assert run(model, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_the_wan_cache_holds_what_the_stock_pipeline_computes_from_the_first_frame(toy_root, tmp_path):
    """Wan2.1-I2V: the cached condition is the stock pipeline's own `prepare_latents` condition (its mask then the
    latents of [first frame, zeros]) and `encode_image` CLIP tokens, for each clip's first frame."""
    from PIL import Image

    from motionguide.data import CachedLatentDataset, LatentCache, VideoDataset
    from motionguide.testing import tiny_wan_i2v_pipeline

    pipe = tiny_wan_i2v_pipeline()
    backbone = backbone_for(pipe)
    dataset = VideoDataset(toy_root, num_frames=9, height=32, width=32)
    cache = LatentCache.for_dataset(tmp_path / "cache", dataset, backbone, max_sequence_length=512)
    cache.build(dataset, backbone, max_sequence_length=512, progress=False)
    cached = CachedLatentDataset(cache)
    item = cached[cached.ids.index(dataset.ids[1])]
    first = dataset[1]["pixels"][:, 0]
    image = Image.fromarray(((first.permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy())
    with torch.no_grad():
        # the clip's frame as the pipeline's preprocessed image tensor; CLIP reads it as uint8 (as a PIL image)
        _, condition = pipe.prepare_latents(first[None], 1, 16, 32, 32, 9, torch.float32, torch.device("cpu"), None)
        embeds = pipe.encode_image(image, torch.device("cpu"))
    assert condition.shape[1] == 20 and item["condition"]["condition_latents"].shape == (16, 3, 4, 4)
    torch.testing.assert_close(item["condition"]["condition_latents"], condition[0, 4:], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(item["condition"]["image_embeds"], embeds[0], atol=1e-6, rtol=1e-6)
    assert (condition[0, :4, 0] == 1).all() and not condition[0, :4, 1:].any()  # the mask predict() rebuilds


def test_released_wan_i2v_transformer_is_image_to_video_and_takes_the_14b_profile():
    from motionguide.backbones.reference_configs import build_on_meta

    backbone = backbone_for(build_on_meta("wan2.1-i2v-14b"))
    assert backbone.conditions_on_image and backbone.image_conditioning == "channels"
    assert backbone.default_profile().name == "wan2.1-t2v-14b"


def test_the_released_5b_i2v_transformer_is_image_to_video_and_takes_the_5b_profile():
    """Built on the meta device from its released config: 42 blocks x 48 heads, so the CogVideoX-5B profile (DiffTrack
    lists 5B-I2V with the 5B's layers); real token grids at 49 x 480 x 720."""
    from motionguide.backbones.reference_configs import build_on_meta

    backbone = backbone_for(build_on_meta("cogvideox-5b-i2v"))
    assert backbone.conditions_on_image and backbone.default_profile().name == "cogvideox-5b"
    assert backbone.token_grid_for_video(49, 480, 720).as_tuple() == (13, 30, 45)


@pytest.mark.slow
def test_a_random_cogvideox_5b_i2v_loads_as_an_image_to_video_pipeline_and_encodes_its_image(tmp_path):
    """`random-pipeline --like cogvideox-5b-i2v` at one block and one text layer (~1.5 GB, removed after): the
    stock image-to-video pipeline class, the released transformer layout, and the adapter sees an I2V model."""
    import shutil

    from diffusers import DiffusionPipeline

    from motionguide.cli import main

    out = tmp_path / "cogvideox-5b-i2v"
    try:
        assert main(["random-pipeline", "--like", "cogvideox-5b-i2v", "--out", str(out), "--num_layers", "1",
                     "--text_layers", "1", "--dtype", "bfloat16"]) == 0
        config = json.loads((out / "transformer" / "config.json").read_text())
        assert (config["in_channels"], config["out_channels"], config["num_attention_heads"]) == (32, 16, 48)
        assert config["use_learned_positional_embeddings"] and config["use_rotary_positional_embeddings"]
        pipe = DiffusionPipeline.from_pretrained(str(out), torch_dtype=torch.bfloat16)
        assert type(pipe).__name__ == "CogVideoXImageToVideoPipeline"
        backbone = backbone_for(pipe)
        backbone.check_components()
        assert backbone.conditions_on_image
        with torch.no_grad():
            condition = backbone.encode_condition(torch.zeros(1, 3, 32, 32), 49)
        assert condition["image_latents"].shape == (1, 16, 1, 4, 4)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_generate_and_saliency_commands_sample_an_image_to_video_model_from_the_given_image(i2v_pipe, tmp_path):
    """The tiny CogVideoX-I2V folder, end to end: `sample/generate.py --image` writes its video, `motionguide saliency
    --image` its maps while sampling; the first generated frame follows the image (two images, two first frames)."""
    from PIL import Image

    from motionguide.cli import main as cli_main
    from motionguide.sampling.cli import main
    from motionguide.video import read_video

    i2v_pipe.save_pretrained(tmp_path / "model")
    common = ["--num_frames", "9", "--height", "32", "--width", "32", "--num_inference_steps", "2",
              "--max_sequence_length", "16", "--device", "cpu", "--dtype", "float32"]
    firsts = []
    for name, value in (("dark", 20), ("light", 235)):
        Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(tmp_path / f"{name}.png")
        assert main(["--model", str(tmp_path / "model"), "--prompt", "a red circle", "--image",
                     str(tmp_path / f"{name}.png"), "--out", str(tmp_path / name), "--lossless", *common]) == 0
        (video,) = (tmp_path / name).glob("*.mp4")
        firsts.append(read_video(video)[0])
    assert not np.array_equal(firsts[0], firsts[1])
    assert cli_main(["saliency", "--model", str(tmp_path / "model"), "--prompt", "a red circle", "--words", "red",
                     "--image", str(tmp_path / "dark.png"), "--out", str(tmp_path / "maps"), *common]) == 0
    assert (tmp_path / "maps" / "maps.npz").is_file()


def test_layer_analysis_conditions_each_clip_on_its_own_first_frame(i2v_pipe, tmp_path):
    """`analyze_layers` on the tiny CogVideoX-I2V: every transformer call carries the image latents of the clip it
    scores (its first frame alone through the VAE, scaled), at latent frame 0."""
    from motionguide.correspondence import analyze_layers
    from motionguide.video import read_video

    data = make_dataset(tmp_path / "data", num_clips=1, seed=2, progress=False)
    seen = []
    hook = i2v_pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: seen.append(k["hidden_states"].clone()), with_kwargs=True)
    try:
        result = analyze_layers(i2v_pipe, data, steps=[1], num_inference_steps=2, max_sequence_length=16)
    finally:
        hook.remove()
    assert result.produced_by["clips"] == 1 and seen
    row = json.loads((data / "metadata.jsonl").read_text().splitlines()[0])
    first = torch.from_numpy(read_video(data / row["file_name"])[0].copy())
    with torch.no_grad():
        expected = i2v_pipe.vae.encode(image_pixels(first)[:, :, None]).latent_dist.mode()
    expected = (expected * i2v_pipe.vae.config.scaling_factor).permute(0, 2, 1, 3, 4)  # [1, 1, C, h, w]
    c = i2v_pipe.transformer.config.out_channels
    for hidden in seen:
        torch.testing.assert_close(hidden[:, :1, c:], expected, atol=1e-6, rtol=1e-6)
        assert not hidden[:, 1:, c:].any()


@pytest.mark.slow
def test_a_random_wan21_i2v_14b_runs_the_stock_pipeline_and_the_backbone_rebuilds_its_input(tmp_path):
    """`random-pipeline --like wan2.1-i2v-14b` at one block and two text / image-encoder layers (~1.5 GB, removed
    after): the stock `WanImageToVideoPipeline` loads and samples one step; `encode_condition` + `predict` give
    the transformer the input the pipeline gave it (36 channels, 257 CLIP tokens of 1280)."""
    import shutil

    from diffusers import DiffusionPipeline
    from PIL import Image

    from motionguide.cli import main

    out = tmp_path / "wan2.1-i2v-14b"
    try:
        assert main(["random-pipeline", "--like", "wan2.1-i2v-14b", "--out", str(out), "--num_layers", "1",
                     "--text_layers", "2", "--dtype", "bfloat16"]) == 0
        pipe = DiffusionPipeline.from_pretrained(str(out), torch_dtype=torch.bfloat16)
        assert type(pipe).__name__ == "WanImageToVideoPipeline"
        backbone = backbone_for(pipe)
        backbone.check_components()
        assert backbone.image_conditioning == "channels"
        frame = torch.randint(0, 256, (32, 32, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        seen = []
        hook = pipe.transformer.register_forward_pre_hook(
            lambda m, a, k: seen.append({n: v for n, v in k.items() if torch.is_tensor(v)}), with_kwargs=True)
        try:
            pipe.set_progress_bar_config(disable=True)
            pipe(image=Image.fromarray(frame.numpy()), prompt="a red ball moves left", num_frames=5, height=32,
                 width=32, num_inference_steps=1, guidance_scale=1.0, output_type="latent",
                 generator=torch.Generator().manual_seed(0))
            call = seen.pop()
            assert call["hidden_states"].shape[1] == 36 and call["encoder_hidden_states_image"].shape == (1, 257, 1280)
            with torch.no_grad():
                condition = backbone.encode_condition(image_pixels(frame), 5)
                backbone.predict(call["hidden_states"][:, :16], call["timestep"], call["encoder_hidden_states"],
                                 condition=condition)
        finally:
            hook.remove()
        rebuilt = seen.pop()
        assert torch.equal(rebuilt["hidden_states"], call["hidden_states"])
        assert torch.equal(rebuilt["encoder_hidden_states_image"], call["encoder_hidden_states_image"])
    finally:
        shutil.rmtree(out, ignore_errors=True)
