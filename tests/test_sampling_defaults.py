"""Defaults a real model needs: sampling and validation settings from the model family (Wan, CogVideoX, the
toy's own file), wandb's mode left to the user, validation videos and the curation summary sent to the trackers."""

import io
import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from motionguide.backbones import (
    SamplingDefaults,
    VideoBackbone,
    WanBackbone,
    sampling_defaults_for,
    transformer_class_name,
)
from motionguide.sampling import SamplingSettings
from motionguide.training.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
TOY_MODEL = REPO / "assets" / "toy-model"

# the released checkpoints' own sampling settings (model cards and stock pipelines), written out independently
WAN = dict(num_frames=81, height=480, width=832, steps=50, cfg=5.0, fps=16, max_sequence_length=512)
COGVIDEOX = dict(num_frames=49, height=480, width=720, steps=50, cfg=6.0, fps=8, max_sequence_length=226)
TOY = dict(num_frames=17, height=64, width=64, steps=25, cfg=5.0, fps=8, max_sequence_length=16)


def _settings(settings: SamplingSettings) -> dict:
    return {k: v for k, v in asdict(settings).items() if k != "negative_prompt"}


def _weightless_folder(root: Path, pipeline: str, transformer: str) -> Path:
    """A pipeline folder holding only its `model_index.json`: the family must be told without any weights."""
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": pipeline, "_diffusers_version": "0.35.0", "transformer": ["diffusers", transformer],
        "vae": ["diffusers", "AutoencoderKLWan"]}))
    return root


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    from motionguide.testing import tiny_wan_pipeline

    root = tmp_path_factory.mktemp("wan") / "model"
    tiny_wan_pipeline().save_pretrained(root)
    return root


# ---------------------------------------------------------------------- the family's defaults
def test_each_family_owns_its_sampling_defaults():
    from motionguide.backbones import CogVideoXBackbone

    assert WanBackbone.sampling_defaults.as_dict() == WAN
    assert CogVideoXBackbone.sampling_defaults.as_dict() == COGVIDEOX
    base = VideoBackbone.sampling_defaults
    assert isinstance(base, SamplingDefaults)
    # the base (a family that declares none) is the class defaults of SamplingSettings
    assert {k: v for k, v in base.as_dict().items()} == _settings(SamplingSettings())


@pytest.mark.parametrize("pipeline,transformer,expected", [
    ("WanPipeline", "WanTransformer3DModel", WAN),
    ("CogVideoXPipeline", "CogVideoXTransformer3DModel", COGVIDEOX),
])
def test_family_defaults_from_model_index_without_weights(tmp_path, pipeline, transformer, expected):
    folder = _weightless_folder(tmp_path / "m", pipeline, transformer)
    assert transformer_class_name(folder) == transformer
    assert sampling_defaults_for(folder).as_dict() == expected
    assert sampling_defaults_for(str(folder)).as_dict() == expected
    assert _settings(SamplingSettings.for_model(folder)) == expected


def test_family_defaults_from_a_bare_transformer_folder_and_unknowns(tmp_path):
    bare = tmp_path / "transformer"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"_class_name": "CogVideoXTransformer3DModel"}))
    assert sampling_defaults_for(bare).as_dict() == COGVIDEOX
    unknown = _weightless_folder(tmp_path / "unet", "SomePipeline", "SomeOtherTransformer")
    assert sampling_defaults_for(unknown) is None
    assert sampling_defaults_for(tmp_path / "nothing-here") is None
    assert sampling_defaults_for("no-such-org/no-such-model") is None  # a hub id not in the cache: no download
    assert sampling_defaults_for(None) is None
    # nothing told: the class defaults, as before
    assert _settings(SamplingSettings.for_model(unknown)) == _settings(SamplingSettings())
    assert _settings(SamplingSettings.for_model(None)) == _settings(SamplingSettings())


def test_family_defaults_from_loaded_pipelines_and_transformers():
    from motionguide.testing import tiny_cogvideox_pipeline, tiny_wan_pipeline, tiny_wan_transformer

    wan, cog = tiny_wan_pipeline(), tiny_cogvideox_pipeline()
    assert sampling_defaults_for(wan).as_dict() == WAN
    assert sampling_defaults_for(cog).as_dict() == COGVIDEOX
    assert sampling_defaults_for(tiny_wan_transformer()).as_dict() == WAN
    # a hub id (no local folder) gets its family from the loaded pipeline
    assert _settings(SamplingSettings.for_model("Some-Org/some-cogvideox", pipeline=cog)) == COGVIDEOX
    assert sampling_defaults_for(torch.nn.Linear(2, 2)) is None


def test_a_registered_family_sets_its_own_defaults():
    class Wide(WanBackbone):
        sampling_defaults = SamplingDefaults(num_frames=121, height=704, width=1280, steps=40, cfg=4.0, fps=24)

    assert Wide.sampling_defaults.max_sequence_length is None  # the pipeline's own text length
    assert Wide.sampling_defaults.as_dict()["fps"] == 24


# ---------------------------------------------------------------------- what the settings resolve to
def test_toy_model_keeps_its_own_file_values():
    """The toy model is a Wan transformer, but its `sampling_defaults.json` wins: outputs stay identical."""
    saved = json.loads((TOY_MODEL / "sampling_defaults.json").read_text())
    assert saved == TOY
    assert _settings(SamplingSettings.for_model(TOY_MODEL)) == TOY
    assert _settings(SamplingSettings.for_model(str(TOY_MODEL))) == TOY


def test_model_file_beats_family_and_flags_beat_both(wan_dir, tmp_path):
    assert _settings(SamplingSettings.for_model(wan_dir)) == WAN
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model_index.json").write_text((wan_dir / "model_index.json").read_text())
    (partial / "sampling_defaults.json").write_text(json.dumps({"fps": 24, "num_frames": 33}))
    assert _settings(SamplingSettings.for_model(partial)) == {**WAN, "fps": 24, "num_frames": 33}
    flags = SamplingSettings.for_model(partial, num_frames=9, height=None, cfg=2.5, negative_prompt="blurry")
    assert _settings(flags) == {**WAN, "fps": 24, "num_frames": 9, "cfg": 2.5}
    assert flags.negative_prompt == "blurry"


# ---------------------------------------------------------------------- validation follows the same rule
def test_validation_settings_unchanged_for_the_toy_config():
    from motionguide.training.validation import validation_settings

    cfg = TrainConfig.load(REPO / "configs" / "toy.yaml", [])
    assert _settings(validation_settings(cfg)) == TOY
    cfg = TrainConfig()  # the defaults name the toy model too
    assert cfg.validation_inference_steps is None and cfg.validation_guidance_scale is None
    assert _settings(validation_settings(cfg)) == TOY


def test_validation_settings_follow_the_family_when_unset(wan_dir):
    from motionguide.training.validation import validation_settings

    cfg = TrainConfig(pretrained_model_name_or_path=str(wan_dir), num_frames=33, height=256, width=448,
                      max_sequence_length=128)
    # steps, CFG and fps are the family's; size and text length are what the LoRA trains at
    assert _settings(validation_settings(cfg)) == {**WAN, "num_frames": 33, "height": 256, "width": 448,
                                                   "max_sequence_length": 128}
    cfg = TrainConfig(pretrained_model_name_or_path=str(wan_dir), validation_inference_steps=7,
                      validation_guidance_scale=1.5, validation_num_frames=81, validation_height=480,
                      validation_width=832)
    # an unset text length is the family's (Wan 512), not a toy default
    assert _settings(validation_settings(cfg)) == {**WAN, "steps": 7, "cfg": 1.5}
    from motionguide.testing import tiny_cogvideox_pipeline

    hub = TrainConfig(pretrained_model_name_or_path="THUDM/CogVideoX-2b", num_frames=49, height=480, width=720,
                      max_sequence_length=226)
    assert _settings(validation_settings(hub, tiny_cogvideox_pipeline())) == COGVIDEOX
    for name in ("wan2.1-t2v-1.3b", "cogvideox-2b"):  # the shipped configs still say what they said
        shipped = TrainConfig.load(REPO / "configs" / f"{name}.yaml", [])
        assert shipped.validation_inference_steps == 50


# ---------------------------------------------------------------------- wandb's mode is the user's
@pytest.mark.parametrize("mode,expected", [(None, {"mode": "offline"}), ("", {"mode": "offline"}),
                                           ("online", {}), ("offline", {}), ("disabled", {})])
def test_wandb_is_offline_only_when_the_user_set_no_mode(monkeypatch, mode, expected):
    from motionguide.training.trackers import wandb_init_kwargs

    if mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", mode)
    assert wandb_init_kwargs() == expected
    assert wandb_init_kwargs({"WANDB_MODE": "online"}) == {}


class _FakeWandbTracker:
    name = "wandb"

    def __init__(self):
        self.logged = []

    def log(self, values, step=None):
        for value in values.values():
            if type(value).__name__ == "Video":  # its mp4 must exist while the run copies it
                assert Path(value._path).is_file()
                self.mp4_facts = _mp4_facts(value._path)
        self.logged.append((step, values))


class _FakeAccelerator:
    """What `Trainer._start_trackers` and the loggers use of an accelerator, recording what they got."""

    is_main_process = True

    def __init__(self, trackers):
        self.trackers = trackers
        self.init = None
        self.scalars = []

    def init_trackers(self, name, config=None, init_kwargs=None):
        self.init = {"name": name, "init_kwargs": init_kwargs}

    def log(self, values, step=None):
        self.scalars.append((step, values))
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def wait_for_everyone(self):
        pass

    def unwrap_model(self, model):
        return model


def _mp4_facts(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "fps": stream.average_rate, "frames": sum(1 for _ in container.decode(video=0))}


@pytest.mark.parametrize("mode", [None, "online"])
def test_trainer_hands_wandb_the_users_mode_and_never_sets_the_environment(monkeypatch, tmp_path, mode):
    import os

    from motionguide.training.loop import Trainer, _RunState

    if mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", mode)
    trainer = Trainer(TrainConfig(report_to="wandb", output_dir=str(tmp_path)))
    accelerator = _FakeAccelerator([_FakeWandbTracker()])
    run = _RunState(accelerator=accelerator, output_dir=tmp_path)
    run.ctx = SimpleNamespace(extras={})
    trainer._start_trackers(run)
    assert accelerator.init["init_kwargs"] == {"wandb": {} if mode else {"mode": "offline"}}
    assert os.environ.get("WANDB_MODE") == mode
    real = Trainer(TrainConfig(report_to="wandb", output_dir=str(tmp_path)))._make_accelerator()
    assert os.environ.get("WANDB_MODE") == mode, "the Trainer must not write the user's environment"
    del real


# ---------------------------------------------------------------------- the trackers get videos and the summary
def test_curation_summary_reaches_the_trackers(tmp_path):
    from motionguide.training.loop import Trainer, _RunState

    tracker = _FakeWandbTracker()
    accelerator = _FakeAccelerator([tracker])
    run = _RunState(accelerator=accelerator, output_dir=tmp_path, saved={})
    run.ctx = SimpleNamespace(extras={})
    summary = {"method": "motive", "mode": "filter", "kept": 3, "of": 12, "queries": 4}
    run.selection = {"method": "motive", "indices": [0, 4, 7], "weights": None, "summary": summary}
    Trainer(TrainConfig(report_to="wandb", output_dir=str(tmp_path)))._start_trackers(run)
    (step, scalars), = accelerator.scalars
    assert step == 0 and scalars == {"curation/kept": 3.0, "curation/of": 12.0, "curation/queries": 4.0,
                                     "curation/kept_fraction": 0.25}
    (text_step, text), = [(s, v) for s, v in tracker.logged if "curation/summary" in v]
    html = text["curation/summary"]
    assert type(html).__name__ == "Html" and '"mode": "filter"' in html.html


def _tensorboard_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (path,) = list(log_dir.rglob("events.out.tfevents.*"))
    events = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_tensorboard_gets_an_animation_and_text(tmp_path):
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    from motionguide.training.trackers import log_curation_summary, log_video

    tracker = SimpleNamespace(name="tensorboard", writer=SummaryWriter(str(tmp_path / "logs")))
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 24, 40, 3), dtype=np.uint8)
    log_video(tracker, "validation/video_000", frames, step=3, fps=16)
    accelerator = _FakeAccelerator([tracker])
    tracker.log = lambda values, step=None: [tracker.writer.add_scalar(k, v, step) for k, v in values.items()]
    log_curation_summary(accelerator, {"method": "motive", "kept": 2, "of": 8}, step=0)
    tracker.writer.close()
    events = _tensorboard_events(tmp_path / "logs")
    assert "validation/video_000" in events.Tags()["images"]
    (image,) = events.Images("validation/video_000")
    assert image.step == 3 and (image.height, image.width) == (24, 40)
    gif = Image.open(io.BytesIO(image.encoded_image_string))
    # GIF frame delays are whole centiseconds: 62.5 ms a frame is stored as 60 ms
    assert gif.format == "GIF" and gif.n_frames == 5 and abs(gif.info["duration"] - 1000 / 16) <= 5
    assert {"curation/kept", "curation/of", "curation/kept_fraction"} <= set(events.Tags()["scalars"])
    assert "curation/summary/text_summary" in events.Tags()["tensors"]


def test_wandb_gets_a_playable_mp4(tmp_path):
    from motionguide.training.trackers import log_video

    tracker = _FakeWandbTracker()
    frames = np.random.default_rng(1).integers(0, 256, size=(9, 32, 48, 3), dtype=np.uint8)
    log_video(tracker, "validation/video_000", frames, step=2, fps=16, caption="a dog")
    (step, values), = tracker.logged
    video = values["validation/video_000"]
    assert step == 2 and type(video).__name__ == "Video" and video._caption == "a dog"
    assert tracker.mp4_facts == {"codec": "h264", "pix_fmt": "yuv420p", "fps": 16, "frames": 9}


def test_validation_logs_each_video_at_the_models_fps(tmp_path, monkeypatch):
    """The validation callback hands every sample to the trackers as a video, with its mp4 (H.264 yuv420p at
    the settings' fps) written under output_dir/validation/step-N/."""
    from motionguide.training import validation
    from motionguide.training.callbacks import TrainContext
    from motionguide.training.validation import ValidationSampler

    frames = np.random.default_rng(2).integers(0, 256, size=(9, 32, 32, 3), dtype=np.uint8)

    def fake_generate(pipe, prompts, seeds, settings, **kwargs):
        return [{"prompt": p, "seed": s, "frames": frames} for p in prompts for s in seeds]

    monkeypatch.setattr(validation, "generate_videos", fake_generate)
    videos = []
    ctx = TrainContext(config=TrainConfig(), accelerator=_FakeAccelerator([]),
                       backbone=SimpleNamespace(pixels_per_token=8), model=torch.nn.Linear(1, 1),
                       output_dir=tmp_path, step=5, extras={"pipeline": None},
                       log_videos=lambda tag, clip, step, fps, **kw: videos.append((tag, clip.shape, step, fps, kw)))
    settings = SamplingSettings(**{**WAN, "num_frames": 9, "height": 32, "width": 32})
    ValidationSampler(["a dog runs", "a ball"], [0], settings).run(ctx)
    assert [(tag, shape, step, fps) for tag, shape, step, fps, _ in videos] == [
        ("validation/video_000", (9, 32, 32, 3), 5, 16), ("validation/video_001", (9, 32, 32, 3), 5, 16)]
    assert [kw["caption"] for *_, kw in videos] == ["a dog runs (seed 0)", "a ball (seed 0)"]
    for *_, kw in videos:
        assert kw["mp4"].parent == tmp_path / "validation" / "step-5"
        assert _mp4_facts(kw["mp4"]) == {"codec": "h264", "pix_fmt": "yuv420p", "fps": 16, "frames": 9}
