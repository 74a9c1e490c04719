"""Clips and reference tracks for the layer analysis (`motionguide analyze-layers`).

Reference tracks are what the model's tracks are scored against: the toy world's ground truth (listed in the
dataset metadata as `gt_file`), or tracks a user computed with an external tracker (CoTracker, TAPIR, ...) and
passes with `--tracks`. Accepted npz layouts, (x, y) in pixels of the clip's frames:

    tracks [N, F, 2] + visibility [N, F]                       this library's layout (the toy ground truth)
    pred_tracks [1, F, N, 2] + pred_visibility [1, F, N]       CoTracker's output saved as is
    (a 4-D `tracks` / 3-D `visibility` is read as CoTracker's layout too)
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

TRACKS_HELP = (
    "save one npz per clip with 'tracks' [N, F, 2] (x, y pixels) and 'visibility' [N, F] (or CoTracker's "
    "'pred_tracks' [1, F, N, 2] and 'pred_visibility' [1, F, N]) as DIR/<clip id>.npz, e.g. from CoTracker on a "
    "grid of frame-0 points, and pass --tracks DIR"
)


@dataclass
class AnalysisClip:
    """One clip with its reference tracks; frames are read from `video_path` only when the clip is analysed."""

    clip_id: str
    tracks: np.ndarray  # [N, F, 2] float32 (x, y) pixels
    visibility: np.ndarray  # [N, F] bool
    caption: str = ""
    frames: np.ndarray | None = None  # uint8 [F, H, W, 3]
    video_path: Path | None = None

    def read_frames(self) -> np.ndarray:
        """The clip's uint8 frames [F, H, W, 3]: the held ones, else read from `video_path`."""
        if self.frames is not None:
            return self.frames
        if self.video_path is None:
            raise ValueError(f"clip {self.clip_id!r} has neither frames nor a video path")
        from ..video import read_video

        return read_video(self.video_path)


def read_reference_tracks(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(tracks [N, F, 2] float32, visibility [N, F] bool) from an npz in one of the module's layouts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference tracks {path} do not exist; {TRACKS_HELP}")
    with np.load(path, allow_pickle=False) as data:
        names = set(data.files)
        track_key = "tracks" if "tracks" in names else "pred_tracks" if "pred_tracks" in names else None
        vis_key = "visibility" if "visibility" in names else "pred_visibility" if "pred_visibility" in names else None
        if track_key is None or vis_key is None:
            raise ConfigError(f"{path}: holds {sorted(names)}, not reference tracks; {TRACKS_HELP}")
        tracks, visibility = np.asarray(data[track_key], np.float32), np.asarray(data[vis_key])
    if tracks.ndim == 4 and tracks.shape[0] == 1:  # CoTracker: [1, F, N, 2]
        tracks = tracks[0].transpose(1, 0, 2)
    if visibility.ndim == 3 and visibility.shape[0] == 1:  # CoTracker: [1, F, N]
        visibility = visibility[0].T
    if tracks.ndim != 3 or tracks.shape[-1] != 2 or visibility.shape != tracks.shape[:2]:
        raise ConfigError(f"{path}: tracks {tracks.shape} and visibility {visibility.shape} do not fit the layout "
                          f"[N, F, 2] + [N, F]; {TRACKS_HELP}")
    return tracks, visibility.astype(bool)


def _metadata_gt_files(root: Path, metadata_file: Path | None) -> dict[Path, Path]:
    """video path -> reference-track file for metadata rows with a `gt_file` column (the toy world's)."""
    if metadata_file is None:
        return {}
    if metadata_file.suffix == ".jsonl":
        lines = metadata_file.read_text(encoding="utf-8-sig").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    else:
        with metadata_file.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    return {
        (root / str(row["file_name"]).strip()).resolve(): root / str(row["gt_file"]).strip()
        for row in rows
        if isinstance(row, dict) and row.get("gt_file") and row.get("file_name")
    }


def _user_tracks_file(tracks: Path, clip_id: str, video_path: Path | None, single_clip: bool) -> Path | None:
    if tracks.is_file():
        if not single_clip:
            raise ConfigError(f"--tracks {tracks} is one file but the dataset has several clips; {TRACKS_HELP}")
        return tracks
    candidates = [tracks / f"{clip_id}.npz"]
    if video_path is not None:
        candidates.append(tracks / f"{video_path.stem}.npz")
    return next((c for c in candidates if c.is_file()), None)


def load_analysis_clips(data_dir: str | os.PathLike, tracks: str | os.PathLike | None = None,
                        max_clips: int | None = None) -> tuple[list[AnalysisClip], list[dict[str, str]]]:
    """Clips of a dataset folder (any layout `VideoDataset` reads) with their reference tracks.

    Returns (clips, skipped) where skipped lists {"clip", "reason"} for clips without reference tracks.
    Raises when no clip has any, saying how to supply them.
    """
    from ..data.layouts import read_layout

    root = Path(data_dir)
    layout = read_layout(root)
    gt_files = _metadata_gt_files(root, layout.file) if tracks is None else {}
    user_tracks = Path(tracks) if tracks is not None else None
    if user_tracks is not None and not user_tracks.exists():
        raise FileNotFoundError(f"--tracks {user_tracks} does not exist; {TRACKS_HELP}")
    entries = layout.entries[:max_clips] if max_clips else layout.entries
    clips, skipped = [], []
    for entry in entries:
        if user_tracks is not None:
            source = _user_tracks_file(user_tracks, entry.clip_id, entry.path, len(entries) == 1)
        else:
            source = gt_files.get(entry.path.resolve()) if entry.path is not None else None
        if source is None or not source.is_file():
            skipped.append({"clip": entry.clip_id, "reason": "no reference tracks"})
            continue
        ref_tracks, visibility = read_reference_tracks(source)
        clips.append(AnalysisClip(entry.clip_id, ref_tracks, visibility, entry.caption or "", video_path=entry.path))
    if not clips:
        where = f"--tracks {user_tracks}" if user_tracks is not None else f"{root} (no `gt_file` column)"
        raise ConfigError(f"no clip of {root} has reference tracks in {where}; the layer analysis scores the "
                          f"model's tracks against them: {TRACKS_HELP}")
    return clips, skipped
