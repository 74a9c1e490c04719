"""sample/generate.py's placement flags (--device, --dtype, model offload, VAE tiling / slicing) and its checks of
every argument and the output folder before the model loads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from motionguide.loading import PipelinePlacement
from motionguide.sampling import SamplingSettings, generate_videos, load_pipeline
from motionguide.sampling.cli import main

TOY = "assets/toy-model"


@pytest.fixture
def loads(monkeypatch):
    """Records each model load the CLI starts (and stops there), so a test sees whether a check came first."""
    from motionguide.sampling import generate

    class Loads(list):
        class Loaded(Exception):
            pass

    seen = Loads()
    Loaded = Loads.Loaded

    def fake_load(model, **kwargs):
        seen.append(kwargs)
        raise Loaded

    monkeypatch.setattr(generate, "load_pipeline", fake_load)
    return seen


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("flags, named", [
    (["--num_inference_steps", "0"], "--num_inference_steps 0"),
    (["--steps", "-3"], "--num_inference_steps -3"),
    (["--num_frames", "0"], "--num_frames 0"),
    (["--num_frames", "6"], "--num_frames 6: this model's VAE takes 4k+1 frames; use 5 or 9"),
    (["--height", "0"], "--height 0"),
    (["--max_sequence_length", "0"], "--max_sequence_length 0"),
    (["--guidance_scale", "nan"], "--guidance_scale nan"),
    (["--cfg", "inf"], "--guidance_scale inf"),
    (["--correspondence_scale", "nan"], "--correspondence_scale nan"),
    (["--lora_scale=-inf"], "--lora_scale -inf"),
    (["--fps", "0"], "--fps 0"),
    (["--fps", "-8"], "--fps -8"),
    (["--lora", "./no/such/lora"], "--lora ./no/such/lora"),
    # diffusers' Wan pipeline checks 16 even where the toy's VAE x patch (8) would allow 40
    (["--height", "40"], "--height 40: not a multiple of 16 (the pixels per token of"),
    (["--width", "1"], "--width 1: not a multiple of 16"),
    ([f"--seed={2**70}"], "a seed must be an integer in -9223372036854775808..18446744073709551615"),
    (["--guidance", "correspondence", "--correspondence_blocks", "0,99"],
     "--correspondence_blocks 0,99: block 99 does not exist; the model has 6 blocks"),
    (["--model", "{tmp}"], "no model_index.json in this folder"),
    (["--prompts_file", "{blank}"], "every line is blank; write one prompt per line"),
])
def test_bad_values_are_one_line_errors_before_the_model_loads(loads, tmp_path, capsys, flags, named):
    (tmp_path / "blank.txt").write_text("\n  \n")
    flags = [f.replace("{tmp}", str(tmp_path)).replace("{blank}", str(tmp_path / "blank.txt")) for f in flags]
    code = main(["--model", TOY, "--prompt", "a", "--out", str(tmp_path / "s"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and named in err, err
    assert not loads and "\n" not in err


@pytest.mark.parametrize("flags, named", [
    (["--correspondence_scale", "1.0"], "--correspondence_scale only act with a guidance"),
    (["--correspondence_blocks", "0-1", "--profile", "p.yaml"], "--correspondence_blocks, --profile only act"),
])
def test_guidance_options_without_a_guidance_are_refused_rather_than_ignored(loads, tmp_path, capsys, flags, named):
    assert main(["--model", TOY, "--prompt", "a", "--out", str(tmp_path), *flags]) == 2
    assert named in capsys.readouterr().err and not loads


def test_a_missing_layer_profile_is_named_before_the_model_loads(loads, tmp_path, capsys):
    assert main(["--model", TOY, "--prompt", "a", "--guidance", "correspondence", "--profile",
                 str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "missing.yaml" in capsys.readouterr().err and not loads
    assert main(["--model", TOY, "--prompt", "a", "--guidance", "correspondence", "--profile", "wan2.1-t2v-13b",
                 "--out", str(tmp_path)]) == 2
    assert "no layer profile 'wan2.1-t2v-13b'" in capsys.readouterr().err and not loads


def test_vae_tiling_and_slicing_reach_the_loaded_pipeline(tmp_path, monkeypatch):
    from motionguide.sampling import generate

    seen = {}

    def fake_generate(pipe, *args, **kwargs):
        seen["pipe"] = pipe
        return []

    monkeypatch.setattr(generate, "generate_videos", fake_generate)
    monkeypatch.setattr(generate, "save_videos", lambda *a, **k: {"videos": [], "grid": None})
    assert main(["--model", TOY, "--prompt", "a", "--vae_tiling", "--vae_slicing", "--out", str(tmp_path)]) == 0
    assert seen["pipe"].vae.use_tiling and seen["pipe"].vae.use_slicing
    assert main(["--model", TOY, "--prompt", "a", "--out", str(tmp_path)]) == 0
    assert not seen["pipe"].vae.use_tiling and not seen["pipe"].vae.use_slicing


def test_a_missing_relative_lora_folder_is_not_taken_for_a_hub_id(loads, tmp_path, capsys, monkeypatch):
    model = str(Path(TOY).resolve())
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["--model", model, "--prompt", "a", "--lora", "out/lora", "--out", "samples"]) == 2
    assert "--lora out/lora: no such folder" in capsys.readouterr().err and not loads
    with pytest.raises(loads.Loaded):  # owner/name with no local "owner" folder: a hub id, left to the hub client
        main(["--model", model, "--prompt", "a", "--lora", "someone/motion-lora", "--out", "samples"])


def test_an_unknown_dtype_is_refused_by_the_parser(loads, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", TOY, "--prompt", "a", "--dtype", "fp8", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err
    assert not loads


def test_a_file_where_the_output_folder_goes_is_refused_before_the_model_loads(loads, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "samples"):
        assert main(["--model", TOY, "--prompt", "a", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{blocker} is a file, not a folder" in err and "\n" not in err
    assert not loads
    assert blocker.read_text() == "not a folder"


def test_model_offload_without_a_gpu_is_a_clean_error(loads, tmp_path, capsys, monkeypatch):
    _no_cuda(monkeypatch)
    assert main(["--model", TOY, "--prompt", "a", "--enable_model_cpu_offload", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--enable_model_cpu_offload" in err and "no GPU" in err and "\n" not in err
    assert main(["--model", TOY, "--prompt", "a", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not loads


def test_correspondence_guidance_and_model_offload_are_refused_together(loads, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["--model", TOY, "--prompt", "a", "--guidance", "correspondence", "--enable_model_cpu_offload",
                 "--out", str(tmp_path)]) == 2
    assert "--enable_model_cpu_offload" in capsys.readouterr().err
    assert not loads


def _placement(loads, tmp_path, *flags) -> PipelinePlacement:
    with pytest.raises(loads.Loaded):
        from motionguide.sampling.cli import _run, build_parser

        _run(build_parser().parse_args(["--model", TOY, "--prompt", "a", "--out", str(tmp_path), *flags]))
    return loads[-1]["placement"]


def test_auto_is_fp32_on_the_cpu_and_bf16_on_a_gpu(loads, tmp_path, monkeypatch):
    _no_cuda(monkeypatch)
    cpu = _placement(loads, tmp_path)
    assert (cpu.device, cpu.dtype, cpu.enable_model_cpu_offload) == ("cpu", torch.float32, False)
    assert _placement(loads, tmp_path, "--dtype", "bf16").dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = _placement(loads, tmp_path)
    assert (gpu.device, gpu.dtype) == ("cuda", torch.bfloat16)
    offload = _placement(loads, tmp_path, "--enable-model-cpu-offload", "--vae_tiling", "--vae-slicing",
                         "--dtype", "fp16")
    assert offload.enable_model_cpu_offload and offload.vae_tiling and offload.vae_slicing
    assert (offload.device, offload.dtype) == ("cuda", torch.float16)
    assert _placement(loads, tmp_path, "--device", "cpu").dtype == torch.float32


def test_the_default_placement_samples_the_toy_bit_identically_to_a_plain_load():
    """--device auto / --dtype auto on this CPU is fp32 on the CPU: the same samples as a load without dtype."""
    settings = SamplingSettings(num_frames=5, height=32, width=32, steps=2, max_sequence_length=16)
    plain = generate_videos(load_pipeline(TOY), ["a red circle moves left"], [0], settings, progress=False)
    placed = generate_videos(load_pipeline(TOY, placement=PipelinePlacement(dtype=torch.float32, device="cpu")),
                             ["a red circle moves left"], [0], settings, progress=False)
    assert np.array_equal(plain[0]["frames"], placed[0]["frames"])


@pytest.mark.slow
def test_a_bf16_real_architecture_pipeline_samples_with_correspondence_guidance(tmp_path, capsys):
    """The realarch command: a random Wan2.1-1.3B-architecture pipeline (2 blocks, 1 text layer) in bf16 on the
    CPU, guided; the mp4s are H.264 yuv420p at Wan's 16 fps, the guidance changes the video."""
    import av

    from motionguide.cli import main as motionguide_main

    model = tmp_path / "wan"
    assert motionguide_main(["random-pipeline", "--like", "wan2.1-t2v-1.3b", "--out", str(model), "--num_layers", "2",
                             "--text_layers", "1", "--dtype", "bfloat16"]) == 0
    common = ["--model", str(model), "--dtype", "bf16", "--device", "cpu", "--prompt", "a red circle moves left",
              "--num_frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--max_sequence_length", "16"]
    videos = {}
    for guidance in ("none", "correspondence"):
        out = tmp_path / guidance
        extra = ["--guidance", "correspondence", "--correspondence_blocks", "0-1"] if guidance != "none" else []
        assert main([*common, *extra, "--out", str(out)]) == 0, capsys.readouterr().err[-2000:]
        (listed,) = json.loads((out / "samples.json").read_text())
        with av.open(str(out / listed["file"])) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
            assert stream.average_rate == 16
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 5 and frames[0].shape == (32, 32, 3)
        videos[guidance] = np.stack(frames)
    assert not np.array_equal(videos["none"], videos["correspondence"])
