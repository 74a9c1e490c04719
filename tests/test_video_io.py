import os

import numpy as np
import pytest

from motionguide.video import VideoReadError, read_video, write_video


def _color_blocks(num_frames=9, height=64, width=64):
    colors = [(220, 40, 40), (40, 200, 60), (50, 90, 230), (230, 210, 40), (255, 255, 255), (45, 45, 45)]
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    block = width // len(colors) + 1
    for i, color in enumerate(colors):
        frames[:, :, i * block:(i + 1) * block] = color
    frames[:, : height // 4] = 255  # a white band: the top of the 255 scale
    return frames


def test_round_trip_keeps_colours(tmp_path):
    frames = _color_blocks()
    path = write_video(tmp_path / "clip.mp4", frames, fps=8)
    decoded = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames.astype(int)).max() <= 4


def test_round_trip_odd_size(tmp_path):
    frames = _color_blocks(num_frames=3, height=33, width=47)
    decoded = read_video(write_video(tmp_path / "odd.mp4", frames))
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).max() <= 4


def test_write_is_atomic_and_readable(tmp_path):
    path = write_video(tmp_path / "sub" / "clip.mp4", _color_blocks(num_frames=2))
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.mp4"]
    assert os.stat(path).st_mode & 0o444 == 0o444


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8),
                                 np.zeros((0, 8, 8, 3), np.uint8)])
def test_write_rejects_bad_frames(tmp_path, bad):
    with pytest.raises(ValueError):
        write_video(tmp_path / "bad.mp4", bad)
    assert not any(tmp_path.iterdir())


def test_read_missing_empty_and_corrupt_files(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoReadError, match="missing.mp4.*does not exist"):
        read_video(missing)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty.mp4.*empty"):
        read_video(empty)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(VideoReadError, match="corrupt.mp4.*regenerate"):
        read_video(corrupt)
    assert issubclass(VideoReadError, ValueError)


def test_truncated_file_is_a_read_error(tmp_path):
    good = write_video(tmp_path / "good.mp4", _color_blocks())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(VideoReadError, match="truncated.mp4"):
        read_video(truncated)


def test_draw_tracks_puts_each_point_where_its_track_says():
    from motionguide.viz.tracks import draw_tracks

    frames = np.zeros((3, 16, 16, 3), np.uint8)
    tracks = np.array([[[2, 2], [8, 4], [12, 12]]], np.float32)
    drawn = draw_tracks(frames, tracks, min_side=64)  # 4x upscale
    assert drawn.shape == (3, 64, 64, 3)
    for f, (x, y) in enumerate(tracks[0]):
        centre = drawn[f, int((y + 0.5) * 4), int((x + 0.5) * 4)]
        assert centre.max() > 100  # the dot
    assert drawn[0, 60, 4].max() == 0  # far from any track: untouched
    hidden = draw_tracks(frames, tracks, visibility=np.array([[True, False, True]]), min_side=64)
    assert hidden[1, int(4.5 * 4), int(8.5 * 4)].max() == 0
    with pytest.raises(ValueError, match=r"tracks must be \[N, 3, 2\]"):
        draw_tracks(frames, tracks[:, :2])
