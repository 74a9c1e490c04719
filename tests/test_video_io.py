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


def _decode_with_pyav(path, pixel_format="rgb24"):
    """Stream facts and every frame, read with PyAV (independent of the decord reader under test elsewhere)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                 "fps": stream.average_rate, "profile": stream.codec_context.profile,
                 "size": (stream.height, stream.width)}
        frames = np.stack([f.to_ndarray(format=pixel_format) for f in container.decode(video=0)])
    return facts, frames


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _smooth_clip(num_frames=12, height=64, width=96):
    """A natural-looking clip: colour gradients and a soft blob that moves two pixels a frame."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for t in range(num_frames):
        blob = np.exp(-(((x - 20 - 2 * t) / 9) ** 2 + ((y - height / 2) / 9) ** 2))
        rgb = np.stack([60 + 120 * x / width + 70 * blob, 40 + 150 * y / height, 170 - 90 * blob], -1)
        frames.append(np.clip(rgb, 0, 255).round().astype(np.uint8))
    return np.stack(frames)


def test_default_encoding_plays_in_browsers(tmp_path):
    """H.264 yuv420p (High profile) at the asked fps, every frame there and visually lossless."""
    frames = _smooth_clip()
    path = write_video(tmp_path / "clip.mp4", frames, fps=16)
    facts, decoded = _decode_with_pyav(path)
    assert facts["codec"] == "h264" and facts["pix_fmt"] == "yuv420p" and facts["profile"] == "High"
    assert facts["fps"] == 16 and decoded.shape == frames.shape
    assert _psnr(decoded, frames) > 36
    assert path.read_bytes()[4:8] == b"ftyp" and path.read_bytes().find(b"moov") < path.read_bytes().find(b"mdat")


def test_default_encoding_pads_odd_sides_to_even(tmp_path):
    frames = _smooth_clip(num_frames=3, height=33, width=45)
    facts, decoded = _decode_with_pyav(write_video(tmp_path / "odd.mp4", frames, fps=8))
    assert facts["pix_fmt"] == "yuv420p" and facts["size"] == (34, 46) and facts["fps"] == 8
    assert _psnr(decoded[:, :33, :45], frames) > 34
    assert _psnr(decoded[:, 33, :45], frames[:, 32]) > 30  # the added row repeats the last one
    assert _psnr(decoded[:, :33, 45], frames[:, :, 44]) > 30  # the added column repeats the last one


def test_lossless_encoding_is_exact_in_yuv(tmp_path):
    """`lossless=True` (the toy world's clips): 4:4:4 at crf 0, the decoded YUV planes equal the encoder's input,
    any size (odd sides kept); RGB comes back within the 8-bit colour conversion's rounding."""
    import av

    frames = np.random.default_rng(0).integers(0, 256, size=(5, 33, 47, 3), dtype=np.uint8)
    path = write_video(tmp_path / "exact.mp4", frames, fps=8, lossless=True)
    facts, planes = _decode_with_pyav(path, "yuv444p")
    assert facts["codec"] == "h264" and facts["pix_fmt"] == "yuv444p" and facts["fps"] == 8
    expected = np.stack([av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv444p").to_ndarray()
                         for f in frames])
    assert np.array_equal(planes, expected)
    _, decoded = _decode_with_pyav(path)
    assert decoded.shape == frames.shape and np.abs(decoded.astype(int) - frames.astype(int)).max() <= 4
    with pytest.raises(ValueError, match="crf 0"):
        write_video(tmp_path / "no.mp4", frames, lossless=True, crf=18)


def test_round_trip_keeps_colours(tmp_path):
    frames = _color_blocks()
    path = write_video(tmp_path / "clip.mp4", frames, fps=8, lossless=True)
    decoded = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames.astype(int)).max() <= 4


def test_round_trip_odd_size(tmp_path):
    frames = _color_blocks(num_frames=3, height=33, width=47)
    decoded = read_video(write_video(tmp_path / "odd.mp4", frames, lossless=True))
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).max() <= 4


def test_toy_clips_are_written_lossless(tmp_path):
    """The toy dataset's clips keep exact pixels (their masks and adherence checks compare pixels)."""
    from motionguide.toy import make_dataset

    make_dataset(tmp_path / "toy", num_clips=1, seed=0, progress=False)
    (video,) = sorted((tmp_path / "toy").rglob("*.mp4"))
    facts, _ = _decode_with_pyav(video)
    assert facts["pix_fmt"] == "yuv444p"


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
