"""`VideoDataset`: clips + captions from a folder, as VAE-ready pixel tensors, with bad clips skipped.

Frames are decoded with decord, or PyAV where decord is missing or `video_reader="pyav"` (same frames for
8-bit videos: see :mod:`motionguide.data.readers`), optionally resampled in time to `target_fps`, and sampled
from the start of each clip every `frame_stride` frames (:mod:`motionguide.data.timing`). A user's
folder always holds some broken files; the constructor probes every entry (frame count and first frame, not
the whole video) and keeps a record of what it skipped and why, so one bad clip never ends a run.

Output sizes: `height` and `width` must be divisible by the VAE's spatial factor times the transformer's
patch size (16 on Wan2.1 and CogVideoX); that check belongs to the caller, who knows the backbone
(`backbone.pixels_per_token`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from motionguide.errors import ConfigError, MotionGuideError
from motionguide.data.buckets import Bucket, assign_bucket, frames_needed, parse_buckets
from motionguide.data.layouts import RawEntry, read_layout
from motionguide.data.readers import VideoSource, open_video, resolve_reader
from motionguide.data.timing import source_indices, timeline_length
from motionguide.video import VideoReadError

__all__ = [
    "SKIP_CATEGORIES", "RESIZE_MODES", "SkippedClip", "VideoProbe", "ClipEntry", "EmptyDatasetError",
    "VideoDataset", "check_num_frames", "probe_video", "frames_to_pixels", "dataset_options",
]

logger = logging.getLogger(__name__)

# bad_caption: a caption that is not valid UTF-8; bad_row: a metadata row with a wrong-typed value or a path
# outside the dataset folder (see motionguide.data.layouts)
SKIP_CATEGORIES = ("missing_file", "corrupt", "empty", "too_short", "missing_caption", "bad_caption", "bad_row")
RESIZE_MODES = ("center_crop", "resize")


class EmptyDatasetError(MotionGuideError, ValueError):
    """No usable clip is left after skipping the bad ones."""


class _BadClip(Exception):
    def __init__(self, category: str, reason: str):
        super().__init__(reason)
        self.category, self.reason = category, reason


@dataclass(frozen=True)
class SkippedClip:
    """A clip left out of the dataset: its path, a readable reason and the reason's category."""

    path: str
    reason: str
    category: str
    clip_id: str | None = None


@dataclass(frozen=True)
class VideoProbe:
    """Frame count, frame size and frame rate (None when the file states none) of a video, as `probe_video`
    reads them (no full decode)."""

    num_frames: int
    height: int
    width: int
    fps: float | None = None


@dataclass(frozen=True)
class ClipEntry:
    """A clip the dataset serves; `probe` is None when the dataset was built with validate=False."""

    clip_id: str
    path: Path
    caption: str
    bucket: Bucket
    probe: VideoProbe | None = None


def check_num_frames(num_frames: int, temporal_factor: int = 4, name: str = "num_frames") -> int:
    """Causal video VAEs keep frame 0 and compress the rest `temporal_factor`x, so clips have 4k+1 frames."""
    r = int(temporal_factor)
    if num_frames >= 1 and (num_frames - 1) % r == 0:
        return int(num_frames)
    lower = ((num_frames - 1) // r) * r + 1 if num_frames > 1 else None
    upper = (lower + r) if lower is not None else 1 + r
    options = f"{lower} or {upper}" if lower is not None else f"1 or {upper}"
    raise ConfigError(f"{name}={num_frames} is not {r}k+1: the causal video VAE keeps the first frame and "
                      f"compresses the rest {r}x in time. Use {options}.")


def _read_error(message: str, category: str) -> VideoReadError:
    """A `VideoReadError` tagged with one of SKIP_CATEGORIES, so callers can count failures by kind."""
    error = VideoReadError(message)
    error.category = category
    return error


def _open_reader(path: Path, reader: str = "auto") -> VideoSource:
    return open_video(path, reader)


def _check_file(path: Path) -> None:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise _BadClip("missing_file", f"missing file: {path} {what}")
    if path.stat().st_size == 0:
        raise _BadClip("empty", f"empty file: {path} has 0 bytes")


def probe_video(path: str | os.PathLike, reader: str = "auto") -> VideoProbe:
    """Frame count, size and rate of a video from its index and first frame (cheap: no full decode).

    `reader`: "auto" (decord if installed, else PyAV), "decord" or "pyav". Raises `VideoReadError` whose
    `.category` is one of SKIP_CATEGORIES.
    """
    path = Path(path)
    name = resolve_reader(reader)
    try:
        _check_file(path)
        try:
            source = _open_reader(path, name)
            count = source.num_frames
            first = source.first_frame_shape() if count else None
        except Exception as error:  # decord raises its own DECORDError (a RuntimeError), PyAV an av.FFmpegError
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise _BadClip("corrupt", f"corrupt: {name} cannot read {path}: {message}") from error
        if first is None:
            raise _BadClip("empty", f"empty: {path} has 0 frames")
    except _BadClip as bad:
        raise _read_error(bad.reason, bad.category) from bad.__cause__
    fps = float(source.fps) if source.fps is not None else None
    return VideoProbe(int(count), int(first[0]), int(first[1]), fps)


def _crop_to_aspect(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre crop [F, C, H, W] to the aspect ratio height:width, keeping as many pixels as possible."""
    src_h, src_w = frames.shape[-2:]
    if src_w * height > src_h * width:  # source wider than target
        crop_w = max(1, round(src_h * width / height))
        left = (src_w - crop_w) // 2
        return frames[..., :, left:left + crop_w]
    crop_h = max(1, round(src_w * height / width))
    top = (src_h - crop_h) // 2
    return frames[..., top:top + crop_h, :]


def frames_to_pixels(frames: np.ndarray | torch.Tensor, height: int, width: int,
                     resize_mode: str = "center_crop") -> torch.Tensor:
    """uint8 RGB frames [F, H, W, 3] -> float32 [3, F, height, width] in [-1, 1] (the VAE's input layout).

    `center_crop` crops to the target aspect ratio, then scales (nothing is distorted); `resize` stretches.
    """
    if resize_mode not in RESIZE_MODES:
        raise ConfigError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}; got {resize_mode!r}")
    x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2)  # [F, 3, H, W]
    if resize_mode == "center_crop":
        x = _crop_to_aspect(x, height, width)
    x = x.float()
    if tuple(x.shape[-2:]) != (height, width):
        shrinking = x.shape[-2] > height or x.shape[-1] > width
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)
    x = (x / 127.5 - 1.0).clamp_(-1.0, 1.0)
    return x.permute(1, 0, 2, 3).contiguous()


def dataset_options(config: Any) -> dict[str, Any]:
    """The `VideoDataset` arguments a config names (TrainConfig, MotiveConfig or any object with these
    attributes; a missing one keeps the dataset's default), so that fine-tuning and the Motive pass sample the
    same frames from the same clips."""
    options = {"num_frames": config.num_frames, "height": config.height, "width": config.width,
               "frame_stride": getattr(config, "frame_stride", 1),
               "resize_mode": getattr(config, "resize_mode", "center_crop"),
               "caption_column": getattr(config, "caption_column", "text"),
               "video_column": getattr(config, "video_column", "file_name"),
               "buckets": parse_buckets(getattr(config, "buckets", None)),
               "target_fps": getattr(config, "target_fps", None),
               "video_reader": getattr(config, "video_reader", "auto")}
    return options


class VideoDataset(torch.utils.data.Dataset):
    """Clips and captions from `root` as dicts {id, caption, path, pixels [3, F, H, W] in [-1, 1]}.

    Layouts (auto-detected): metadata.jsonl, metadata.csv, prompts.txt + videos.txt, or videos with same-name
    .txt captions; see :mod:`motionguide.data.layouts`.

    `num_frames` frames are taken from the start, every `frame_stride` frames; with `target_fps`, of the clip
    first resampled in time to that rate (needs `validate=True`: the rate comes from the probe). With
    `buckets`, each clip is instead sampled at the bucket :func:`assign_bucket` picks for it (needs
    `validate=True`), and `num_frames`, `height` and `width` are not used.

    `caption_column` / `video_column` / `id_column` name the metadata columns (jsonl keys) of a metadata.csv or
    metadata.jsonl (DiffSynth-Studio's CSV: `video_column="video", caption_column="prompt"`). `video_reader`:
    "auto" (decord if installed, else PyAV), "decord" or "pyav".

    With `validate=True` (default) every entry is probed now and bad ones are skipped: see `skipped`,
    `skip_counts`. A clip that still fails to decode in `__getitem__` raises `VideoReadError` naming the file
    and is recorded in `failed` (in the process that loaded it: DataLoader workers keep their own copy);
    `safe_indices(decode=True)` finds such clips up front.

    `height` and `width` must be divisible by the backbone's `pixels_per_token` (VAE x patch, 16 on Wan2.1 and
    CogVideoX); the dataset does not know the backbone, so the caller checks.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        num_frames: int = 17,
        height: int = 64,
        width: int = 64,
        frame_stride: int = 1,
        resize_mode: str = "center_crop",
        caption_column: str = "text",
        video_column: str = "file_name",
        id_column: str | None = "id",
        temporal_factor: int = 4,
        validate: bool = True,
        buckets: Sequence[Bucket] | None = None,
        target_fps: float | None = None,
        video_reader: str = "auto",
        _until_first_usable: bool = False,
    ):
        self.root = Path(root)
        self.video_reader = resolve_reader(video_reader)
        if target_fps is not None and not target_fps > 0:
            raise ConfigError(f"target_fps must be > 0 (or None to keep each video's own rate), got {target_fps}")
        if target_fps is not None and not validate:
            raise ConfigError("target_fps needs validate=True: each clip's frame rate comes from its probe")
        self.target_fps = float(target_fps) if target_fps is not None else None
        if resize_mode not in RESIZE_MODES:
            raise ConfigError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}; got {resize_mode!r}")
        if frame_stride < 1:
            raise ConfigError(f"frame_stride must be >= 1 (1 = consecutive frames), got {frame_stride}")
        self.buckets = tuple(buckets) if buckets else None
        if self.buckets is None:
            check_num_frames(num_frames, temporal_factor)
            if height < 1 or width < 1:
                raise ConfigError(f"height and width must be positive, got {height}x{width}")
        else:
            if not validate:
                raise ConfigError("buckets need validate=True: a clip's bucket depends on its probed length and size")
            for bucket in self.buckets:
                check_num_frames(bucket.num_frames, temporal_factor, name=f"bucket {bucket.as_tuple()} num_frames")
        self.num_frames, self.height, self.width = num_frames, height, width
        self.frame_stride = int(frame_stride)
        self.resize_mode = resize_mode
        self.temporal_factor = int(temporal_factor)
        self.validated = bool(validate)

        layout = read_layout(self.root, caption_column, video_column, id_column)
        self.layout, self.metadata_file = layout.kind, layout.file
        self.skipped: list[SkippedClip] = []
        self.entries: list[ClipEntry] = []
        for raw in layout.entries:
            if _until_first_usable and self.entries:
                break
            try:
                self.entries.append(self._admit(raw))
            except _BadClip as bad:
                path = str(raw.path) if raw.path is not None else f"(no video path in {raw.where})"
                self.skipped.append(SkippedClip(path, bad.reason, bad.category, raw.clip_id))
        self.skip_counts: Counter = Counter(s.category for s in self.skipped)
        self.failed: dict[int, SkippedClip] = {}
        if not (_until_first_usable and self.entries):  # a partial look says nothing about the other clips
            self._log_and_check(total=len(layout.entries))

    @classmethod
    def check_usable(cls, root: str | os.PathLike, **options: Any) -> None:
        """Raise (one line, the dataset's own `no usable clips` report) when no clip of `root` would be kept;
        probes clips only until the first usable one, so a trainer can say it before the model loads."""
        cls(root, **options, _until_first_usable=True)

    # ------------------------------------------------------------------ construction
    def _admit(self, raw: RawEntry) -> ClipEntry:
        if raw.problem is not None:
            raise _BadClip(*raw.problem)
        if raw.path is None:
            raise _BadClip("missing_file", f"missing file: {raw.where} names no video")
        if raw.caption is None:
            raise _BadClip("missing_caption", f"missing caption: {raw.where} has no (or an empty) caption")
        probe = None
        if self.validated:
            try:
                probe = probe_video(raw.path, self.video_reader)
            except VideoReadError as error:
                raise _BadClip(error.category, str(error)) from None
        return ClipEntry(raw.clip_id, raw.path, raw.caption, self._bucket_for(probe), probe)

    def _timeline_length(self, probe: VideoProbe) -> int:
        """The clip's frame count on the sampling timeline (after resampling to `target_fps`)."""
        try:
            return timeline_length(probe.num_frames, probe.fps, self.target_fps)
        except ValueError as error:
            raise _BadClip("corrupt", f"no frame rate: {error}") from None

    def _too_short(self, length: int, need: int, suffix: str = "") -> _BadClip:
        at = f" at {self.target_fps:g} fps" if self.target_fps is not None else ""
        return _BadClip("too_short", f"too short: {length} frames{at}, need {need}{suffix}")

    def _bucket_for(self, probe: VideoProbe | None) -> Bucket:
        if self.buckets is not None:
            length = self._timeline_length(probe)
            bucket = assign_bucket(length, probe.height, probe.width, self.buckets, self.frame_stride)
            if bucket is None:
                need = min(frames_needed(b.num_frames, self.frame_stride) for b in self.buckets)
                raise self._too_short(length, need, " for the shortest bucket")
            return bucket
        need = frames_needed(self.num_frames, self.frame_stride)
        if probe is not None:
            length = self._timeline_length(probe)
            if length < need:
                raise self._too_short(length, need)
        return Bucket(self.num_frames, self.height, self.width)

    def _log_and_check(self, total: int) -> None:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.skip_counts.items()))
        if self.skipped and self.entries:  # with none kept, the error below says it once
            logger.warning("VideoDataset %s: kept %d of %d clips, skipped %d (%s); see dataset.skipped",
                           self.root, len(self.entries), total, len(self.skipped), counts)
        if not self.entries:
            raise EmptyDatasetError(
                f"VideoDataset {self.root}: no usable clips ({total} listed, skipped: {counts or 'none'}). "
                f"First reason: {self.skipped[0].reason if self.skipped else '-'}. Fix or replace those files, "
                "or lower num_frames / frame_stride if clips are too short"
            )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        """Clip ids of the kept clips, in dataset order."""
        return [e.clip_id for e in self.entries]

    @property
    def bucket_of_index(self) -> list[Bucket]:
        """Each clip's output size, for :class:`BucketBatchSampler`."""
        return [e.bucket for e in self.entries]

    def sampling_config(self) -> dict[str, Any]:
        """What decides the pixels of every clip (part of the latent cache key)."""
        fixed = self.buckets is None
        return {
            "num_frames": self.num_frames if fixed else None,
            "height": self.height if fixed else None,
            "width": self.width if fixed else None,
            "buckets": None if fixed else [list(b.as_tuple()) for b in self.buckets],
            "frame_stride": self.frame_stride,
            "resize_mode": self.resize_mode,
            # only when set, so caches built before the option existed keep their key; the reader is no part
            # of the key: decord and PyAV give the same frames (see motionguide.data.readers)
            **({"target_fps": self.target_fps} if self.target_fps is not None else {}),
        }

    def frame_indices(self, index: int) -> list[int]:
        """The source frame indices clip `index` is sampled from (stride, length and `target_fps` applied)."""
        entry = self.entries[index]
        fps = entry.probe.fps if entry.probe is not None else None
        return source_indices(entry.bucket.num_frames, self.frame_stride, fps, self.target_fps)

    def _decode(self, entry: ClipEntry) -> np.ndarray:
        fps = entry.probe.fps if entry.probe is not None else None
        try:
            indices = source_indices(entry.bucket.num_frames, self.frame_stride, fps, self.target_fps)
            _check_file(entry.path)
            source = _open_reader(entry.path, self.video_reader)
            count = source.num_frames
            if count <= indices[-1]:
                raise _BadClip("too_short", f"too short: {count} frames, need {indices[-1] + 1}")
            return source.frames(indices)
        except _BadClip as bad:
            raise _read_error(f"cannot load clip {entry.clip_id!r} from {entry.path}: {bad.reason}",
                              bad.category) from None
        except Exception as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise _read_error(
                f"cannot decode clip {entry.clip_id!r} from {entry.path}: {message}; the file is probably corrupt "
                "or truncated. Re-export it or drop it; dataset.safe_indices(decode=True) lists the good clips",
                "corrupt",
            ) from error

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        try:
            frames = self._decode(entry)
        except VideoReadError as error:
            self.failed[index] = SkippedClip(str(entry.path), str(error), error.category, entry.clip_id)
            raise
        pixels = frames_to_pixels(frames, entry.bucket.height, entry.bucket.width, self.resize_mode)
        return {"id": entry.clip_id, "caption": entry.caption, "path": str(entry.path), "pixels": pixels}

    def safe_indices(self, decode: bool = False) -> list[int]:
        """Indices known to load: validated (probed now if the dataset was built with validate=False), not
        failed since; with `decode=True` each clip is also fully decoded once (slow; catches truncated files)."""
        good = []
        for index, entry in enumerate(self.entries):
            if index in self.failed:
                continue
            try:
                if entry.probe is None:
                    probe = probe_video(entry.path, self.video_reader)
                    need = frames_needed(entry.bucket.num_frames, self.frame_stride)
                    if probe.num_frames < need:
                        raise _read_error(f"too short: {probe.num_frames} frames, need {need}", "too_short")
                if decode:
                    self._decode(entry)
            except VideoReadError as error:
                self.failed[index] = SkippedClip(str(entry.path), str(error), error.category, entry.clip_id)
                continue
            good.append(index)
        return good
