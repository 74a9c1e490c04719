"""The Motive pass reads the frames fine-tuning trains on: `--curation motive` copies the training config's
frame sampling (stride, target fps, resize mode, buckets, columns, reader) into the pass."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from motionguide.data import VideoDataset, dataset_options
from motionguide.identity import cache_fields
from motionguide.motive import Motive, MotionMasker
from motionguide.motive.curation import MotiveCuration
from motionguide.testing import tiny_wan_pipeline
from motionguide.toy import make_dataset
from motionguide.training import TrainConfig
from motionguide.data.readers import read_all_frames


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("motive_sampling")
    make_dataset(root / "data", num_clips=3, seed=4, progress=False)
    make_dataset(root / "queries", num_clips=1, seed=8, progress=False)
    return root


def test_the_pass_with_frame_stride_two_sees_the_training_pixels(workspace, tmp_path):
    train_config = TrainConfig(data_root=str(workspace / "data"), num_frames=9, frame_stride=2,
                               latent_cache_dir=str(tmp_path / "cache"))
    curation = MotiveCuration(queries=str(workspace / "queries"), projector="dense_gaussian", dim=16)
    motive_config = curation.config_for(SimpleNamespace(config=train_config, output_dir=tmp_path / "run"))
    assert (motive_config.num_frames, motive_config.frame_stride) == (9, 2)

    seen: list[np.ndarray] = []

    class RecordingMasker(MotionMasker):
        def __call__(self, frames, backbone):
            seen.append(np.array(frames))
            return super().__call__(frames, backbone)

    pipeline = tiny_wan_pipeline()
    motive = Motive(pipeline, motive_config, progress=False, masker=RecordingMasker(motive_config.flow))
    pass_data = motive.datasets()["train"]
    with motive:
        counts = motive.featurize("train", pass_data)
    assert counts["featurised"] == 3 and len(seen) == 3

    training_data = VideoDataset(train_config.data_root, **dataset_options(train_config))  # as Trainer builds it
    for i, entry in enumerate(training_data.entries):
        pixels = training_data[i]["pixels"]
        as_uint8 = ((pixels.permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
        np.testing.assert_array_equal(seen[i], as_uint8)
        np.testing.assert_array_equal(seen[i], read_all_frames(entry.path)[0:17:2])  # every other source frame
    # one latent cache key: a cache the pass built serves the fine-tuning run (and the other way round)
    from motionguide.backbones import backbone_for

    backbone = backbone_for(pipeline)
    assert cache_fields(pass_data, backbone, 16) == cache_fields(training_data, backbone, 16)


def test_curation_copies_every_sampling_setting_and_checks_it(workspace, tmp_path):
    train_config = TrainConfig(data_root=str(workspace / "data"), frame_stride=3, target_fps=4.0,
                               resize_mode="resize", buckets=["9x64x64"], caption_column="caption",
                               video_column="clip", video_reader="pyav")
    curation = MotiveCuration(queries=str(workspace / "queries"))
    motive_config = curation.config_for(SimpleNamespace(config=train_config, output_dir=tmp_path))
    assert dataset_options(motive_config) == dataset_options(train_config)
    from motionguide.motive.attributor import _sampling_identity

    assert _sampling_identity(motive_config) == {"sampling": {"frame_stride": 3, "target_fps": 4.0,
                                                              "resize_mode": "resize", "buckets": [[9, 64, 64]]}}
    plain = MotiveCuration(queries="q").config_for(SimpleNamespace(config=TrainConfig(), output_dir=tmp_path))
    assert _sampling_identity(plain) == {}  # default sampling: the feature-store key of earlier passes
    # an option given to the curation wins over the training config, and is checked before any model loads
    assert MotiveCuration(queries="q", frame_stride=1).config_for(
        SimpleNamespace(config=train_config, output_dir=tmp_path)).frame_stride == 1
    from motionguide.errors import ConfigError

    with pytest.raises(ConfigError, match="frame_stride must be >= 1"):
        MotiveCuration(queries="q", frame_stride=0)
    with pytest.raises(ConfigError, match="not a bucket"):
        MotiveCuration(queries="q", buckets="9x64")


def test_curate_command_takes_the_sampling_flags():
    import argparse

    from motionguide.motive.cli import add_curate_command, config_from_args

    parser = argparse.ArgumentParser()
    add_curate_command(parser.add_subparsers())
    args = parser.parse_args(["curate", "--model", "m", "--data", "d", "--queries", "q", "--out", "o",
                              "--frame_stride", "2", "--target-fps", "12", "--resize_mode", "resize",
                              "--buckets", "17x480x832,17x832x480", "--video_column", "video",
                              "--caption_column", "prompt", "--video_reader", "pyav"])
    config = config_from_args(args).check()
    assert (config.frame_stride, config.target_fps, config.resize_mode, config.video_column,
            config.caption_column, config.video_reader) == (2, 12.0, "resize", "video", "prompt", "pyav")
    assert [b.as_tuple() for b in dataset_options(config)["buckets"]] == [(17, 480, 832), (17, 832, 480)]
    plain = config_from_args(parser.parse_args(["curate", "--model", "m", "--data", "d", "--queries", "q",
                                                "--out", "o"]))
    assert dataset_options(plain) == dataset_options(TrainConfig())  # the same defaults as fine-tuning


def test_an_unusable_query_clip_stops_the_pass_before_any_model_loads(workspace, tmp_path):
    from motionguide.errors import ConfigError
    from motionguide.motive import MotiveConfig, run_attribution
    from motionguide.video import write_video

    queries = tmp_path / "queries"
    queries.mkdir()
    write_video(queries / "short.mp4", np.full((9, 64, 64, 3), 90, np.uint8))  # 9 frames: enough at stride 1
    (queries / "short.txt").write_text("a grey square, still")
    never_loaded = tmp_path / "no-such-model"
    config = MotiveConfig(model=str(never_loaded), data=str(workspace / "data"), queries=str(queries),
                          out=str(tmp_path / "out"), num_frames=9, frame_stride=2)
    with pytest.raises(ConfigError, match=r"no usable query clip; each query clip needs a caption and at least "
                                          r"17 frames \(9 samples every 2 frame\(s\), as in training\)"):
        run_attribution(config, progress=False)
    write_video(queries / "long.mp4", np.full((17, 64, 64, 3), 90, np.uint8))
    (queries / "long.txt").write_text("a grey square, still")
    with pytest.raises(ConfigError, match=r"1 of 2 query clips are unusable \(short: too short: 9 frames, need 17"):
        run_attribution(config, progress=False)
    assert not (tmp_path / "out").exists()
