"""sample/generate.py: mp4s, a frame grid and a listing; LoRA loading; clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from motionguide.sampling import SamplingSettings, generate_videos, load_pipeline
from motionguide.sampling.cli import main
from motionguide.testing import tiny_wan_pipeline
from motionguide.training.lora import add_lora, save_lora
from motionguide.video import read_video

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    pipe = tiny_wan_pipeline()
    pipe.save_pretrained(root / "model")
    add_lora(pipe.transformer, rank=4, alpha=8, target_modules=["to_q", "to_v"])
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a LoRA that visibly changes the output
    save_lora(type(pipe), pipe.transformer, root / "lora")
    return root


ARGS = ["--num_frames", "9", "--height", "32", "--width", "32", "--steps", "2", "--max_sequence_length", "16"]


def test_generate_writes_videos_grid_and_listing(model_dir, tmp_path, capsys):
    out = tmp_path / "samples"
    code = main(["--model", str(model_dir / "model"), "--prompt", "a red circle moves left", "--prompt",
                 "a blue square", "--seed", "0", "--seed", "1", "--out", str(out), *ARGS])
    assert code == 0
    listing = json.loads((out / "samples.json").read_text())
    assert len(listing) == 4 and (out / "grid.png").is_file()
    assert read_video(out / listing[0]["file"]).shape == (9, 32, 32, 3)
    assert str(out.resolve()) in capsys.readouterr().out


def test_lora_changes_the_samples(model_dir):
    settings = SamplingSettings(num_frames=9, height=32, width=32, steps=2, max_sequence_length=16)
    base = generate_videos(load_pipeline(str(model_dir / "model")), ["a red circle"], [0], settings, progress=False)
    lora = generate_videos(load_pipeline(str(model_dir / "model"), lora=str(model_dir / "lora")), ["a red circle"],
                           [0], settings, progress=False)
    again = generate_videos(load_pipeline(str(model_dir / "model")), ["a red circle"], [0], settings, progress=False)
    assert np.array_equal(base[0]["frames"], again[0]["frames"])  # fixed seeds are reproducible
    assert not np.array_equal(base[0]["frames"], lora[0]["frames"])


def test_errors_are_clear(model_dir, tmp_path, capsys):
    assert main(["--model", str(model_dir / "model"), "--out", str(tmp_path), *ARGS]) == 2
    assert "--prompt" in capsys.readouterr().err
    assert main(["--model", str(model_dir / "model"), "--prompt", "a", "--guidance", "corespondence",
                 "--out", str(tmp_path), *ARGS]) == 2
    assert "no such guidance" in capsys.readouterr().err


def test_script_entry_point_runs(model_dir, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "sample" / "generate.py"), "--model", str(model_dir / "model"),
                           "--prompt", "a red circle", "--out", str(tmp_path / "s"), *ARGS],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "s" / "grid.png").is_file()


@pytest.fixture
def captured_call(monkeypatch):
    """The settings and guidance options the CLI hands to the sampler, without loading or running a model."""
    from motionguide.sampling import generate

    seen = {}

    def fake_load(model, **kwargs):
        seen["load"] = (model, kwargs)
        return object()

    def fake_generate(pipe, prompts, seeds, settings, guidance="none", guidance_options=None, **kwargs):
        seen.update(prompts=prompts, seeds=seeds, settings=settings, guidance=guidance, options=guidance_options)
        return []

    monkeypatch.setattr(generate, "load_pipeline", fake_load)
    monkeypatch.setattr(generate, "generate_videos", fake_generate)
    def fake_save(results, out, fps, lossless=False):
        seen["fps"], seen["lossless"] = fps, lossless
        return {"videos": [], "grid": None}

    monkeypatch.setattr(generate, "save_videos", fake_save)
    return seen


def test_a_model_without_flags_samples_at_its_familys_defaults(model_dir, tmp_path, captured_call):
    """A Wan folder with no sampling_defaults.json: Wan's 81x480x832, 50 steps, CFG 5, 512 tokens, 16 fps (not
    the toy's 17x64x64 at 8 fps, which made Wan videos play at half speed)."""
    assert main(["--model", str(model_dir / "model"), "--prompt", "a", "--out", str(tmp_path)]) == 0
    settings = captured_call["settings"]
    assert (settings.num_frames, settings.height, settings.width) == (81, 480, 832)
    assert (settings.steps, settings.cfg, settings.max_sequence_length, settings.fps) == (50, 5.0, 512, 16)
    assert captured_call["fps"] == 16
    assert main(["--model", str(model_dir / "model"), "--prompt", "a", "--fps", "24", "--num_frames", "33",
                 "--out", str(tmp_path)]) == 0
    assert captured_call["fps"] == 24 and captured_call["settings"].num_frames == 33
    assert captured_call["lossless"] is False
    assert main(["--model", str(model_dir / "model"), "--prompt", "a", "--lossless", "--out", str(tmp_path)]) == 0
    assert captured_call["lossless"] is True


def test_written_samples_play_in_browsers(model_dir, tmp_path):
    """The CLI's mp4s: H.264 yuv420p at the model's fps (PyAV reads the stream independently of decord)."""
    import av

    out = tmp_path / "samples"
    assert main(["--model", str(model_dir / "model"), "--prompt", "a red circle", "--out", str(out), *ARGS]) == 0
    (listed,) = json.loads((out / "samples.json").read_text())
    with av.open(str(out / listed["file"])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 16 and sum(1 for _ in container.decode(video=0)) == 9


@pytest.mark.parametrize("cfg_flag", ["--guidance_scale", "--guidance-scale", "--cfg"])
@pytest.mark.parametrize("steps_flag", ["--num_inference_steps", "--num-inference-steps", "--steps"])
def test_guidance_scale_is_classifier_free_guidance_as_in_diffusers(model_dir, tmp_path, captured_call, cfg_flag,
                                                                    steps_flag):
    assert main(["--model", str(model_dir / "model"), "--prompt", "a", cfg_flag, "3.5", steps_flag, "7",
                 "--out", str(tmp_path)]) == 0
    settings = captured_call["settings"]
    assert settings.cfg == 3.5 and settings.steps == 7 and captured_call["options"] == {}


@pytest.mark.parametrize("flag", ["--correspondence_scale", "--correspondence-scale"])
def test_correspondence_scale_is_the_guidance_term(model_dir, tmp_path, captured_call, flag):
    from motionguide.backbones import load_profile

    profile = tmp_path / "p.yaml"
    load_profile("wan2.1-t2v-1.3b").save(profile)
    assert main(["--model", str(model_dir / "model"), "--prompt", "a", "--guidance", "correspondence", flag, "1.5",
                 "--profile", str(profile), "--out", str(tmp_path)]) == 0
    assert captured_call["guidance"] == "correspondence"
    assert captured_call["options"] == {"scale": 1.5, "profile": str(profile)}
    default_cfg = SamplingSettings.for_model(str(model_dir / "model")).cfg
    assert captured_call["settings"].cfg == default_cfg  # the CFG scale is untouched by the correspondence scale


def test_unknown_guidance_is_refused_before_the_model_loads(model_dir, tmp_path, captured_call, capsys):
    assert main(["--model", str(model_dir / "model"), "--prompt", "a", "--guidance", "corespondence",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --guidance 'corespondence': no such guidance") and "\n" not in err
    assert "load" not in captured_call
