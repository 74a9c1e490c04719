"""Data as users bring it: the PyAV reader gives decord's frames (and takes over when decord is missing),
metadata columns by name (DiffSynth-Studio's `video,prompt` CSV), resampling to a target fps, and the config
fields that reach the dataset."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from motionguide.data import VideoDataset, dataset_options, open_video, parse_buckets, resolve_reader
from motionguide.data.readers import decord_available
from motionguide.training import TrainConfig
from motionguide.data.timing import source_indices, timeline_length
from motionguide.errors import ConfigError
from motionguide.toy import make_dataset
from motionguide.video import read_video, write_video


#: the comparisons with decord run where decord installs (x86-64); elsewhere PyAV is the only reader
needs_decord = pytest.mark.skipif(not decord_available(), reason="decord is not installed (no wheel here)")


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("readers") / "toy", num_clips=3, seed=11, progress=False)


@pytest.fixture
def no_decord(monkeypatch):
    """decord as on aarch64 / Apple silicon: `import decord` fails."""
    monkeypatch.setitem(sys.modules, "decord", None)


def _lossy_video(path: Path, codec: str = "libx264", pix_fmt: str = "yuv420p", options=None, num_frames: int = 30,
                 height: int = 48, width: int = 64, fps: int = 12) -> Path:
    """Colour ramps plus noise (hard chroma edges), encoded by PyAV with a lossy codec (B-frames included)."""
    import av

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.stack([np.stack([(xx * 4 + i * 7) % 256, (yy * 5 + i * 3) % 256, ((xx + yy) * 3 + i * 11) % 256], -1)
                       for i in range(num_frames)])
    frames = np.clip(frames + rng.integers(-20, 20, frames.shape), 0, 255).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options or {"crf": "28"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _all_frames(path: Path, reader: str) -> np.ndarray:
    source = open_video(path, reader)
    return source.frames(range(source.num_frames))


# ---------------------------------------------------------------------------------------------- readers
@needs_decord
def test_pyav_gives_decords_frames_on_toy_world_clips(toy_root):
    for path in sorted((toy_root / "videos").glob("*.mp4")):
        decord_frames, pyav_frames = _all_frames(path, "decord"), _all_frames(path, "pyav")
        assert decord_frames.shape == (17, 64, 64, 3)
        np.testing.assert_array_equal(pyav_frames, decord_frames)
    for stride in (1, 2):
        by_decord = VideoDataset(toy_root, num_frames=9, frame_stride=stride, video_reader="decord")
        by_pyav = VideoDataset(toy_root, num_frames=9, frame_stride=stride, video_reader="pyav")
        assert by_pyav.video_reader == "pyav" and by_decord.video_reader == "decord"
        assert [e.probe for e in by_pyav.entries] == [e.probe for e in by_decord.entries]
        for i in range(len(by_decord)):
            assert torch.equal(by_pyav[i]["pixels"], by_decord[i]["pixels"])


@needs_decord
@pytest.mark.parametrize("codec,pix_fmt,options,suffix", [
    ("libx264", "yuv420p", {"crf": "28"}, ".mp4"),  # chroma subsampled, B-frames
    ("libx264", "yuv444p", {"crf": "35"}, ".mp4"),
    ("mpeg4", "yuv420p", {"qscale": "8"}, ".mp4"),
    ("libvpx-vp9", "yuv420p", {"crf": "40", "b": "0"}, ".webm"),
])
def test_pyav_gives_decords_frames_on_lossy_codecs(tmp_path, codec, pix_fmt, options, suffix):
    path = _lossy_video(tmp_path / f"clip{suffix}", codec, pix_fmt, options)
    decord_source, pyav_source = open_video(path, "decord"), open_video(path, "pyav")
    assert pyav_source.num_frames == decord_source.num_frames == 30
    assert pyav_source.fps == decord_source.fps == 12
    np.testing.assert_array_equal(pyav_source.frames(range(30)), decord_source.frames(range(30)))
    for indices in ([0, 3, 6, 9, 12], [17, 2, 29, 2]):  # strided, and out of order with a repeat (seeking)
        np.testing.assert_array_equal(open_video(path, "pyav").frames(indices),
                                      open_video(path, "decord").frames(indices))


@needs_decord
def test_ten_bit_sources_agree_on_flat_colour(tmp_path):
    """High-bit-depth sources take libswscale's generic path, whose chroma interpolation differs between
    decord's FFmpeg 4.1 and PyAV's (see motionguide.data.readers); colour matrix and rounding still agree."""
    import av

    colours = [(40, 60, 200), (255, 255, 255), (0, 0, 0), (128, 128, 128), (220, 40, 40), (10, 200, 90)]
    path = tmp_path / "ten_bit.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(12))
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p10le"
        stream.options = {"qp": "0"}
        for colour in colours:
            frame = np.full((32, 32, 3), colour, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    assert open_video(path, "pyav").bit_depth == 10
    np.testing.assert_array_equal(_all_frames(path, "pyav"), _all_frames(path, "decord"))


def test_decord_missing_falls_back_to_pyav_with_the_same_pixels(toy_root, no_decord):
    assert resolve_reader("auto") == "pyav"
    with pytest.raises(ConfigError, match="video_reader='pyav'"):
        resolve_reader("decord")
    with pytest.raises(ConfigError, match="auto, decord, pyav"):
        resolve_reader("torchcodec")
    dataset = VideoDataset(toy_root, num_frames=9, frame_stride=2)
    assert dataset.video_reader == "pyav"
    frames = _all_frames(dataset.entries[0].path, "pyav")[0:17:2]
    torch.testing.assert_close(dataset[0]["pixels"], torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1)


def test_decord_missing_bad_files_are_skipped_with_the_same_categories(toy_root, tmp_path, no_decord):
    root = tmp_path / "messy"
    shutil.copytree(toy_root / "videos", root / "videos")
    good = write_video(root / "videos" / "short.mp4", np.full((5, 32, 32, 3), 128, np.uint8))
    (root / "videos" / "zero.mp4").write_bytes(b"")
    (root / "videos" / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    # lossless mode writes the index (moov atom) after the frames, so cutting the file in half loses it
    whole = write_video(root / "videos" / "whole.mp4", np.random.default_rng(1).integers(0, 256, (17, 64, 64, 3),
                                                                                         np.uint8), lossless=True)
    (root / "videos" / "truncated.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    rows = [{"file_name": f"videos/{name}.mp4", "text": "a red circle", "id": name}
            for name in ("short", "zero", "noise", "truncated")]
    rows += [{"file_name": p.relative_to(root).as_posix(), "text": "a clip", "id": p.stem}
             for p in sorted((root / "videos").glob("clip_*.mp4"))]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = VideoDataset(root)
    category = {s.clip_id: s.category for s in dataset.skipped}
    assert {k: category.get(k) for k in ("short", "zero", "noise")} == {"short": "too_short", "zero": "empty",
                                                                        "noise": "corrupt"}
    assert "pyav cannot read" in next(s.reason for s in dataset.skipped if s.clip_id == "noise")
    assert category["truncated"] == "corrupt"  # its index (moov atom) was at the end, cut away
    assert good.is_file() and len(dataset) == 3


# ---------------------------------------------------------------------------------------------- columns
def _diffsynth_root(toy_root: Path, root: Path) -> Path:
    """DiffSynth-Studio's layout: metadata.csv with `video,prompt` columns."""
    shutil.copytree(toy_root / "videos", root / "videos")
    rows = [json.loads(line) for line in (toy_root / "metadata.jsonl").read_text().splitlines()]
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "prompt"])
        writer.writerows([r["file_name"], r["text"]] for r in rows)
    return root


def test_diffsynth_video_prompt_csv_reads_with_named_columns(toy_root, tmp_path):
    root = _diffsynth_root(toy_root, tmp_path / "diffsynth")
    with pytest.raises(ConfigError, match="DiffSynth-Studio's layout: set video_column: video and caption_column: "
                                          "prompt"):
        VideoDataset(root)  # today's defaults (file_name, text)
    dataset = VideoDataset(root, video_column="video", caption_column="prompt", num_frames=9)
    reference = VideoDataset(toy_root, num_frames=9)
    assert dataset.layout == "csv"
    assert [e.caption for e in dataset.entries] == [e.caption for e in reference.entries]
    assert [e.path.name for e in dataset.entries] == [e.path.name for e in reference.entries]
    assert torch.equal(dataset[1]["pixels"], reference[1]["pixels"])


def test_jsonl_with_custom_keys(toy_root, tmp_path):
    root = tmp_path / "custom"
    shutil.copytree(toy_root / "videos", root / "videos")
    rows = [json.loads(line) for line in (toy_root / "metadata.jsonl").read_text().splitlines()]
    (root / "metadata.jsonl").write_text("".join(
        json.dumps({"clip": r["file_name"], "description": r["text"], "id": r["id"]}) + "\n" for r in rows))
    dataset = VideoDataset(root, video_column="clip", caption_column="description", num_frames=9)
    assert dataset.layout == "jsonl" and dataset.ids == [r["id"] for r in rows]
    assert [e.caption for e in dataset.entries] == [r["text"] for r in rows]
    with pytest.raises(ConfigError, match="no caption column 'text'.*'description'"):
        VideoDataset(root, video_column="clip")


# ---------------------------------------------------------------------------------------------- target fps
def _indexed_clip(path: Path, num_frames: int = 24, fps: int = 24) -> np.ndarray:
    """Frame i is a flat grey of level 8 * i + 20: which source frame a sample came from is readable."""
    levels = 8 * np.arange(num_frames) + 20
    write_video(path, np.broadcast_to(levels[:, None, None, None], (num_frames, 32, 32, 3)).astype(np.uint8),
                fps=fps)
    return levels


def _source_frame_of_each_sample(pixels: torch.Tensor, levels: np.ndarray) -> list[int]:
    grey = ((pixels.mean(dim=(0, 2, 3)) + 1) * 127.5).numpy()
    return [int(np.argmin(np.abs(levels - g))) for g in grey]


@pytest.mark.parametrize("reader", [pytest.param("decord", marks=needs_decord), "pyav"])
def test_target_fps_resamples_before_stride_and_length(tmp_path, reader):
    levels = _indexed_clip(tmp_path / "count.mp4")
    (tmp_path / "count.txt").write_text("a counting clip")
    assert open_video(tmp_path / "count.mp4", reader).num_frames == 24

    def sampled(num_frames: int, **kw) -> list[int]:
        dataset = VideoDataset(tmp_path, num_frames=num_frames, height=32, width=32, video_reader=reader, **kw)
        assert dataset.entries[0].probe.fps == 24
        return _source_frame_of_each_sample(dataset[0]["pixels"], levels)

    assert sampled(5) == [0, 1, 2, 3, 4]  # unset: the video's own frames (today's behaviour)
    assert sampled(5, target_fps=12) == [0, 2, 4, 6, 8]
    assert sampled(5, target_fps=12, frame_stride=2) == [0, 4, 8, 12, 16]  # stride on the 12 fps timeline
    assert sampled(5, target_fps=16) == [0, 1, 3, 4, 6]  # 1.5 source frames per output frame
    assert sampled(5, target_fps=48) == [0, 0, 1, 1, 2]  # faster than the source: frames repeat
    assert sampled(5, target_fps=8) == [0, 3, 6, 9, 12]
    # the length check runs on the resampled timeline: 24 frames at 24 fps are 12 frames at 12 fps
    assert VideoDataset(tmp_path, num_frames=13, height=32, width=32, target_fps=24, video_reader=reader)
    with pytest.raises(Exception, match=r"too short: 12 frames at 12 fps, need 13"):
        VideoDataset(tmp_path, num_frames=13, height=32, width=32, target_fps=12, video_reader=reader)


def test_timeline_arithmetic_is_exact_for_ntsc_rates():
    ntsc = Fraction(30000, 1001)
    assert timeline_length(300, ntsc, 15) == 151  # ceil(300 / 1.998)
    assert source_indices(5, 1, ntsc, 15) == [0, 1, 3, 5, 7]  # floor(j * 1.998): the frame shown at j / 15 s
    assert source_indices(3, 2, 30, 30) == [0, 2, 4] == source_indices(3, 2)
    assert timeline_length(17) == 17
    with pytest.raises(ValueError, match="no frame rate"):
        source_indices(3, 1, None, 12)


def test_target_fps_joins_the_cache_key_only_when_set(toy_root):
    plain = VideoDataset(toy_root, num_frames=9)
    assert plain.sampling_config() == {"num_frames": 9, "height": 64, "width": 64, "buckets": None,
                                       "frame_stride": 1, "resize_mode": "center_crop"}  # unchanged keys
    assert VideoDataset(toy_root, num_frames=9, target_fps=4).sampling_config()["target_fps"] == 4.0
    with pytest.raises(ConfigError, match="target_fps must be > 0"):
        VideoDataset(toy_root, target_fps=0)


# ---------------------------------------------------------------------------------------------- config
def test_train_config_fields_reach_the_dataset(toy_root, tmp_path):
    from motionguide.training.config import parse_overrides

    defaults = TrainConfig()
    assert (defaults.caption_column, defaults.video_column, defaults.video_reader, defaults.resize_mode,
            defaults.buckets, defaults.target_fps) == ("text", "file_name", "auto", "center_crop", None, None)
    assert dataset_options(defaults) == {"num_frames": 17, "height": 64, "width": 64, "frame_stride": 1,
                                         "resize_mode": "center_crop", "caption_column": "text",
                                         "video_column": "file_name", "buckets": None, "target_fps": None,
                                         "video_reader": "auto"}
    root = _diffsynth_root(toy_root, tmp_path / "diffsynth")
    cfg = TrainConfig.from_dict(parse_overrides(
        ["--data_root", str(root), "--video_column", "video", "--caption-column", "prompt", "--buckets",
         "9x64x64,9x32x64", "--resize_mode", "resize", "--video_reader", "pyav", "--target_fps", "8"]))
    dataset = VideoDataset(cfg.data_root, **dataset_options(cfg))
    assert dataset.layout == "csv" and len(dataset) == 3 and dataset.video_reader == "pyav"
    assert dataset.buckets == parse_buckets([[9, 64, 64], [9, 32, 64]]) and dataset.resize_mode == "resize"
    assert {e.bucket.as_tuple() for e in dataset.entries} == {(9, 64, 64)}  # square clips: the square bucket
    yaml_form = TrainConfig.from_dict({"buckets": [[9, 64, 64], "9x32x64"]})
    assert parse_buckets(yaml_form.buckets) == dataset.buckets
    for bad, message in ((["--buckets", "16x64x64"], "not 4k\\+1"), (["--buckets", "17x64"], "not a bucket"),
                         (["--resize_mode", "crop"], "resize_mode"), (["--video_reader", "opencv"], "video_reader"),
                         (["--target_fps", "0"], "target_fps")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict(parse_overrides(bad))


def test_fine_tuning_runs_on_a_diffsynth_csv_with_buckets(toy_root, tmp_path, no_decord):
    """The headline loop on DiffSynth-Studio's layout, read by PyAV, bucketed, at every other frame."""
    from safetensors.torch import load_file

    from motionguide.testing import tiny_wan_pipeline
    from motionguide.training.loop import Trainer

    tiny_wan_pipeline().save_pretrained(tmp_path / "model")
    root = _diffsynth_root(toy_root, tmp_path / "diffsynth")
    cfg = TrainConfig.from_dict(dict(
        pretrained_model_name_or_path=str(tmp_path / "model"), output_dir=str(tmp_path / "out"),
        data_root=str(root), latent_cache_dir=str(tmp_path / "cache"), train_steps=2, train_batch_size=2,
        checkpointing_steps=0, report_to="none", rank=4, max_sequence_length=16, lr_scheduler="constant",
        video_column="video", caption_column="prompt", buckets=["9x64x64", "9x32x64"], frame_stride=2))
    summary = Trainer(cfg).run()
    assert Path(summary["lora"]).is_file()
    stored = sorted((tmp_path / "cache").rglob("*.safetensors"))
    latents = [load_file(p)["latents"] for p in stored if "empty" not in p.name]
    assert len(latents) == 3 and all(x.shape[-3:] == (3, 8, 8) for x in latents)  # 9 frames -> 3 latent frames


@needs_decord
def test_read_all_frames_is_read_video_without_decord(toy_root, tmp_path, monkeypatch):
    from motionguide.data.readers import read_all_frames
    from motionguide.video import VideoReadError

    path = sorted((toy_root / "videos").glob("*.mp4"))[0]
    with_decord = read_video(path)
    monkeypatch.setitem(sys.modules, "decord", None)
    np.testing.assert_array_equal(read_all_frames(path), with_decord)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    for name, message in (("missing.mp4", "does not exist"), ("empty.mp4", "empty"), ("noise.mp4", "regenerate")):
        with pytest.raises(VideoReadError, match=f"{name}.*{message}"):
            read_all_frames(tmp_path / name)


@needs_decord
def test_checking_for_decord_leaves_pyavs_vp9_encoder_working(tmp_path):
    """Import order is process state: a fresh interpreter asks for decord first, then writes VP9 with PyAV."""
    import subprocess

    script = (
        "import sys, numpy as np\n"
        "from fractions import Fraction\n"
        "from motionguide.data.readers import decord_available\n"
        "assert decord_available()\n"
        "import av\n"
        "with av.open(sys.argv[1], 'w') as c:\n"
        "    s = c.add_stream('libvpx-vp9', rate=Fraction(12))\n"
        "    s.width, s.height, s.pix_fmt = 64, 48, 'yuv420p'\n"
        "    c.mux(s.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format='rgb24')))\n"
        "    c.mux(s.encode(None))\n"
    )
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "clip.webm")], cwd=repo, capture_output=True,
                          text=True, env={**__import__("os").environ, "PYTHONPATH": str(repo)}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
