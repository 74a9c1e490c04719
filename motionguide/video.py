"""Read and write short RGB clips as mp4.

Writing uses PyAV/libx264 in one of two modes. The default is what browsers and the W&B player play: H.264
yuv420p (High profile), crf 18, even sides (an odd side is padded by one edge row / column), the index at the
front of the file. `lossless=True` is for the toy world, whose flat colours and exact object masks must survive
the round trip: H.264 4:4:4 at crf 0, exact in YUV (RGB comes back within a few levels), which most browsers
do not play. Reading goes through the data layer's reader (decord, or PyAV where decord has no wheel), the
same one the training data path uses, so tests exercise it.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from motionguide.errors import VideoReadError  # noqa: F401 (its home was here: callers import it from here)
from motionguide.files import atomic_write

__all__ = ["VideoReadError", "write_video", "read_video", "PLAYABLE_CRF", "pixels_to_uint8"]


def pixels_to_uint8(pixels) -> np.ndarray:
    """A clip's pixels [3, F, H, W] in [-1, 1] (a torch tensor, as datasets give them) -> uint8 [F, H, W, 3], the
    frames optical flow reads (Motive's masks and the fine-tune's `motion_loss_weight` read the same bytes)."""
    return ((pixels.permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [F, H, W, 3], got {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (0-255), got dtype {frames.dtype}; convert with "
                         "np.clip(x, 0, 255).astype(np.uint8)")
    if frames.shape[0] == 0:
        raise ValueError("frames is empty: a video needs at least one frame")
    return frames


def _pick_pixel_format(codec_name: str, height: int, width: int) -> str:
    """yuv444p keeps full colour resolution; yuv420p needs even sides and subsamples chroma."""
    import av

    codec = av.codec.Codec(codec_name, "w")
    formats = {f.name for f in (codec.video_formats or [])}
    if "yuv444p" in formats or not formats:
        return "yuv444p"
    if height % 2 or width % 2:
        raise ValueError(f"{codec_name} lacks yuv444p and yuv420p needs even sides; got {height}x{width}")
    return "yuv420p"


#: the default (browser) encoding's quality: visually lossless for natural video, a quarter of crf 0's size
PLAYABLE_CRF = 18


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p halves the chroma resolution, so both sides must be even: repeat the last row / column."""
    _, height, width, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8, crf: int | None = None, *,
                lossless: bool = False) -> Path:
    """Encode uint8 frames [F, H, W, 3] (RGB) as an H.264 mp4 playing at `fps`; atomic (temp file, then rename).

    Default: yuv420p at `crf` (default 18), playable in browsers and the W&B player; an odd height or width is
    padded to the next even number by repeating the last row / column (the file is then one pixel taller /
    wider). `lossless=True`: yuv444p at crf 0 with the exact size, for data whose pixels are compared later (the
    toy world's clips); `crf` must then be 0 or None."""
    import av

    frames = _check_frames(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if lossless:
        if crf not in (None, 0):
            raise ValueError(f"write_video(lossless=True) encodes at crf 0; got crf={crf}")
        _, height, width, _ = frames.shape
        pix_fmt = _pick_pixel_format("libx264", height, width)
        options = {"crf": "0", "preset": "medium"}
        muxer_options: dict[str, str] = {}
    else:
        frames = _pad_to_even(frames)
        _, height, width, _ = frames.shape
        pix_fmt = "yuv420p"
        options = {"crf": str(PLAYABLE_CRF if crf is None else crf), "preset": "medium", "profile": "high",
                   # the matrix swscale converts RGB with (BT.601), stated so players do not guess BT.709
                   "x264-params": "colormatrix=smpte170m:colorprim=smpte170m:transfer=smpte170m"}
        muxer_options = {"movflags": "+faststart"}  # the index first: a browser starts playing at once

    def encode(tmp_name: str) -> None:
        with av.open(tmp_name, mode="w", format="mp4", options=muxer_options) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            stream.options = options
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode(None))

    atomic_write(path, encode)
    return path


def read_video(path: str | os.PathLike, reader: str = "auto") -> np.ndarray:
    """Decode every frame of a video file to uint8 [F, H, W, 3] (RGB) with the data layer's reader (decord, or
    PyAV where decord has no wheel); a `VideoReadError` names the file and what to do."""
    from motionguide.data.readers import read_all_frames

    return read_all_frames(path, reader)
