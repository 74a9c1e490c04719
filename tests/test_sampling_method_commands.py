"""`motionguide track`, `saliency` and `analyze-layers` take --device / --dtype as sample/generate.py does, and
check their output path before any model loads (a blocked path found after the work loses the work)."""

import json

import numpy as np
import pytest
import torch

from motionguide.cli import main
from motionguide.video import write_video

TOY = "assets/toy-model"


@pytest.fixture
def loads(monkeypatch):
    """Every model load the commands start, recorded and stopped (the commands import it from sampling.generate)."""
    from motionguide.sampling import generate

    class Loads(list):
        class Loaded(Exception):
            pass

    seen = Loads()

    def fake_load(model, **kwargs):
        seen.append(kwargs)
        raise Loads.Loaded

    monkeypatch.setattr(generate, "load_pipeline", fake_load)
    return seen


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8))
    return path


def _commands(tmp_path, clip, out):
    tracks = tmp_path / "tracks.npz"  # the analysis reads its clips and their reference tracks before the load
    if not tracks.exists():
        np.savez(tracks, tracks=np.zeros((4, 5, 2), np.float32), visibility=np.ones((4, 5), bool))
    return {
        "track": ["track", "--model", TOY, "--video", str(clip), "--block", "1", "--timestep", "50", "--out", out],
        "saliency": ["saliency", "--model", TOY, "--prompt", "a red circle moves left", "--out", out],
        "analyze-layers": ["analyze-layers", "--model", TOY, "--data", str(tmp_path), "--tracks", str(tracks),
                           "--out", out],
    }


def test_a_blocked_output_path_is_refused_before_the_model_loads(loads, tmp_path, clip, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    cases = {"track": [str(blocker / "tracks.npz"), str(folder)],
             "saliency": [str(blocker), str(blocker / "maps")],
             "analyze-layers": [str(blocker / "profile.yaml"), str(folder) + ".yaml/x.yaml"]}
    (tmp_path / "a_folder.yaml").write_text("a file")
    for command, outs in cases.items():
        for out in outs:
            assert main(_commands(tmp_path, clip, out)[command]) == 2, (command, out)
            err = capsys.readouterr().err.strip()
            assert err.startswith("error: --out") and "\n" not in err, err
            assert "is a file, not a folder" in err or "a folder, not a file" in err, err
    assert not loads and blocker.read_text() == "a file"


def test_a_blocked_track_visualisation_path_is_refused_before_the_model_loads(loads, tmp_path, clip, capsys):
    (tmp_path / "viz.mp4").mkdir()
    args = _commands(tmp_path, clip, str(tmp_path / "t.npz"))["track"] + ["--viz", str(tmp_path / "viz.mp4")]
    assert main(args) == 2
    assert "--viz" in capsys.readouterr().err and not loads


@pytest.mark.parametrize("command", ["track", "saliency", "analyze-layers"])
def test_device_and_dtype_resolve_as_in_the_sampler(loads, tmp_path, clip, capsys, monkeypatch, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out = str(tmp_path / ("p.yaml" if command == "analyze-layers" else "out.npz" if command == "track" else "out"))
    args = _commands(tmp_path, clip, out)[command]
    with pytest.raises(loads.Loaded):
        main(args)
    placement = loads[-1]["placement"]
    assert (placement.device, placement.dtype) == ("cpu", torch.float32)  # the toy stays fp32 on the CPU
    with pytest.raises(loads.Loaded):
        main([*args, "--dtype", "bf16"])
    assert loads[-1]["placement"].dtype == torch.bfloat16
    assert main([*args, "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(loads.Loaded):
        main(args)
    assert (loads[-1]["placement"].device, loads[-1]["placement"].dtype) == ("cuda", torch.bfloat16)


@pytest.mark.parametrize("command, flags, named", [
    ("saliency", ["--steps", "0"], "--num_inference_steps 0: must be at least 1"),
    ("saliency", ["--num_frames", "0"], "--num_frames 0"),
    ("saliency", ["--top_k", "0"], "--top_k 0"),
    ("saliency", ["--cfg", "nan"], "--guidance_scale nan: must be a finite number"),
    ("saliency", ["--timestep", "2000"], "--timestep 2000.0: give a noise level in 0..1000"),
    ("track", ["--chunk_size", "0"], "--chunk_size 0"),
    ("track", ["--timestep=-5"], "--timestep -5.0"),
])
def test_bad_values_stop_the_method_commands_before_the_model_loads(loads, tmp_path, clip, capsys, command, flags,
                                                                    named):
    out = str(tmp_path / ("t.npz" if command == "track" else "maps"))
    args = [a for a in _commands(tmp_path, clip, out)[command] if a != "--timestep" and a != "50"]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and "\n" not in err, err
    assert not loads


def test_saliency_refuses_a_missing_video_before_the_model_loads(loads, tmp_path, capsys):
    assert main(["saliency", "--model", TOY, "--prompt", "a red circle", "--video", str(tmp_path / "none.mp4"),
                 "--out", str(tmp_path / "maps")]) == 2
    assert "--video" in capsys.readouterr().err and not loads


@pytest.mark.slow
def test_track_and_saliency_run_on_a_bf16_pipeline(tmp_path, clip):
    """The tiny Wan saved and run with --dtype bf16: tracks and maps come out finite (the tracker feeds the
    transformer in its compute dtype, not that of the modules diffusers keeps in fp32)."""
    from motionguide.testing import tiny_wan_pipeline

    model = tmp_path / "wan"
    tiny_wan_pipeline().save_pretrained(model)
    assert main(["track", "--model", str(model), "--dtype", "bf16", "--device", "cpu", "--video", str(clip),
                 "--block", "1", "--timestep", "50", "--grid", "2", "--max_sequence_length", "16",
                 "--out", str(tmp_path / "t.json")]) == 0
    tracks = np.asarray(json.loads((tmp_path / "t.json").read_text())["tracks"])
    assert tracks.shape == (4, 5, 2) and np.isfinite(tracks).all()
    assert main(["saliency", "--model", str(model), "--dtype", "bf16", "--device", "cpu", "--prompt",
                 "a red circle moves left", "--blocks", "0-1", "--max_sequence_length", "16", "--num_frames", "5",
                 "--height", "32", "--width", "32", "--steps", "2", "--out", str(tmp_path / "maps")]) == 0
    with np.load(tmp_path / "maps" / "maps.npz") as saved:
        assert np.isfinite(saved["imap"].astype(np.float32)).all()
