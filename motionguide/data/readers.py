"""Frame readers for the data path: decord (the default) or PyAV, chosen by name or by what is installed.

Why two: decord has no wheel for aarch64 (GH200-class nodes) or Apple silicon, while PyAV is a dependency
anyway (it writes the mp4s). `video_reader="auto"` uses decord when it imports and PyAV otherwise.

Both give the same uint8 RGB frames for 8-bit sources. Both decode with FFmpeg and convert YUV to RGB with
libswscale (bilinear; the colour matrix the stream is tagged with, BT.601 when untagged; full range for the
yuvj formats, limited otherwise), and for 8-bit input that conversion is the same in decord's bundled FFmpeg 4.1 (libswscale 5.3) and
PyAV 18's FFmpeg 8 (libswscale 9.5). Tested bit for bit (tests/test_video_readers.py and by hand): 8-bit
4:2:0 and 4:4:4 H.264, H.265, VP9 and MPEG-4; BT.601 / 709 / 2020 tags; limited and full range (yuvj420p);
odd sizes; 480x832 and 720x1280; strided, out-of-order and repeated indices.

The one known difference: high-bit-depth sources (e.g. 10-bit `yuv420p10le`, `yuv422p10le`). Their conversion
to 8-bit RGB takes another libswscale path, whose chroma interpolation changed between the two FFmpeg versions:
flat colours still agree exactly (same matrix and rounding), but pixels at chroma edges differ, by up to 5
levels on smooth gradients and up to ~100 on hard colour edges (measured on synthetic clips; no libswscale
flag of PyAV's reproduces FFmpeg 4.1's output). `VideoSource.bit_depth` (PyAV) says when a source is one.

Frame positions agree too: decord counts the stream's packets (its seek index) and returns frames in
presentation order; the PyAV reader counts packets the same way and decodes from the start in presentation
order (the dataset reads from the start of each clip, so decoding from the start costs nothing extra).
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from motionguide.errors import ConfigError, VideoReadError

__all__ = ["VIDEO_READERS", "VideoSource", "decord_available", "resolve_reader", "open_video", "read_all_frames"]

logger = logging.getLogger(__name__)

VIDEO_READERS = ("auto", "decord", "pyav")


def _import_decord():
    """decord, imported after PyAV. Both wheels bundle their own FFmpeg and libvpx under the same symbol names;
    whichever loads first serves the other's lookups, and decord's older libvpx makes PyAV's VP8 / VP9 encoders
    fail to open (EINVAL from avcodec_open2). With PyAV loaded first both work (decord's decoding included,
    tests/test_video_readers.py)."""
    import av  # noqa: F401
    import decord

    return decord


def decord_available() -> bool:
    """Whether decord imports here (no aarch64 / macOS-arm wheel exists; a broken build raises OSError)."""
    try:
        _import_decord()
    except (ImportError, OSError):
        return False
    return True


def resolve_reader(name: str = "auto") -> str:
    """The reader `name` stands for here: "decord" or "pyav" ("auto": decord when it imports, else PyAV)."""
    if name not in VIDEO_READERS:
        raise ConfigError(f"video_reader must be one of {', '.join(VIDEO_READERS)}; got {name!r}")
    if name == "pyav":
        return name
    if decord_available():
        return "decord"
    if name == "decord":
        raise ConfigError("video_reader='decord' but decord cannot be imported (it has no wheel for aarch64 or "
                          "Apple silicon); install it, or use video_reader='pyav' (or 'auto'), which gives the "
                          "same frames for 8-bit videos")
    logger.info("decord is not installed; reading videos with PyAV (same frames for 8-bit sources)")
    return "pyav"


def _as_fraction(fps: float | Fraction | None) -> Fraction | None:
    """A frame rate as an exact fraction (29.97... -> 30000/1001), None when the file states none."""
    if fps is None:
        return None
    value = Fraction(fps).limit_denominator(1001 * 1000)
    return value if value > 0 else None


class VideoSource:
    """One opened video: frame count, frame size, frame rate, and the frames at chosen indices (uint8 RGB)."""

    reader = ""

    num_frames: int
    fps: Fraction | None
    bit_depth: int

    def first_frame_shape(self) -> tuple[int, int] | None:
        """(height, width) of frame 0, decoding it (None when the video has no frame)."""
        raise NotImplementedError

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 [len(indices), H, W, 3] RGB frames at `indices` (each < num_frames)."""
        raise NotImplementedError


class _DecordSource(VideoSource):
    reader = "decord"

    def __init__(self, path: Path):
        decord = _import_decord()
        self._video = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        self.num_frames = len(self._video)
        self.fps = _as_fraction(self._video.get_avg_fps())
        self.bit_depth = 8  # decord does not say; only PyAV reports it

    def first_frame_shape(self) -> tuple[int, int] | None:
        if not self.num_frames:
            return None
        shape = self._video[0].shape
        return int(shape[0]), int(shape[1])

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        return self._video.get_batch(list(indices)).asnumpy()


class _PyAVSource(VideoSource):
    reader = "pyav"

    def __init__(self, path: Path):
        import av

        self._path = path
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = _as_fraction(rate)
            # decord's frame count is its seek index: one entry per packet of the video stream
            self.num_frames = sum(1 for packet in container.demux(stream) if packet.size)
            fmt = stream.codec_context.format
            self.bit_depth = max((c.bits for c in fmt.components), default=8) if fmt is not None else 8

    def _decoded(self):
        import av

        with av.open(str(self._path)) as container:
            yield from container.decode(container.streams.video[0])

    def first_frame_shape(self) -> tuple[int, int] | None:
        for frame in self._decoded():
            return int(frame.height), int(frame.width)
        return None

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        indices = [int(i) for i in indices]
        wanted = set(indices)
        last = max(indices, default=-1)
        found: dict[int, np.ndarray] = {}
        if last >= 0:
            for position, frame in enumerate(self._decoded()):
                if position in wanted:
                    found[position] = frame.to_ndarray(format="rgb24")
                if position >= last:
                    break
        missing = sorted(wanted - set(found))
        if missing:
            raise ValueError(f"decoded {len(found)} of the frames asked for; frame {missing[0]} could not be "
                             "decoded (truncated file?)")
        return np.stack([found[i] for i in indices]) if indices else np.zeros((0, 0, 0, 3), np.uint8)


def open_video(path: str | os.PathLike, reader: str = "auto") -> VideoSource:
    """Open `path` with `reader` ("auto", "decord" or "pyav"); raises the reader's own error on a bad file."""
    name = resolve_reader(reader)
    return _DecordSource(Path(path)) if name == "decord" else _PyAVSource(Path(path))


def read_all_frames(path: str | os.PathLike, reader: str = "auto") -> np.ndarray:
    """Every frame of a video as uint8 [F, H, W, 3] RGB, with `motionguide.video.read_video`'s errors
    (`VideoReadError` naming the file and what to do), through `reader` (so it works without decord)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise VideoReadError(f"cannot read video {str(path)!r}: it {what}; check the path "
                             "(metadata file_name is relative to the dataset folder)")
    if path.stat().st_size == 0:
        raise VideoReadError(f"cannot read video {str(path)!r}: the file is empty (0 bytes); "
                             "re-export or regenerate it, or drop it from the metadata")
    name = resolve_reader(reader)
    try:
        try:
            source = open_video(path, name)
            frames = source.frames(range(source.num_frames)) if source.num_frames else None
        except Exception:
            if reader != "auto" or name == "pyav":
                raise
            # decord refuses some valid files (e.g. 48x34 frames: "Check failed: from_size == to_size");
            # with the reader left to auto, PyAV gets a second try before the file is called corrupt
            source = open_video(path, "pyav")
            frames = source.frames(range(source.num_frames)) if source.num_frames else None
    except Exception as error:  # decord raises its own DECORDError (a RuntimeError), PyAV an av.FFmpegError
        raise VideoReadError(f"cannot decode video {str(path)!r}: {type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''}; the file is probably "
                             "corrupt or truncated: re-export or regenerate it, or drop it from the "
                             "metadata") from error
    if frames is None or frames.shape[0] == 0:
        raise VideoReadError(f"video {str(path)!r} has 0 decodable frames; re-export or regenerate it, "
                             "or drop it from the metadata")
    return np.ascontiguousarray(frames, dtype=np.uint8)
