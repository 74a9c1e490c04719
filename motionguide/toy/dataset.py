"""Write toy clips in the on-disk layout users bring (videos + metadata), plus ground truth per clip.

    out_dir/
      videos/clip_00000.mp4
      gt/clip_00000.npz        masks (packed bits), tracks, visibility, point_owner, moving, centers, labels
      metadata.jsonl / metadata.csv   file_name, text, id, defect, shape, color, motion, speed, ...
      dataset.json             generation parameters; written last, so its presence means "complete"
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Collection, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from motionguide.files import atomic_write_bytes
from motionguide.toy.captions import object_clause
from motionguide.toy.render import ToyClip, render_clip
from motionguide.toy.sampling import Combination, all_combinations, sample_clip_spec
from motionguide.toy.spec import ObjectSpec
from motionguide.toy.vocab import COLORS, DEFECTS, MOTIONS, SHAPES, check_name
from motionguide.video import write_video

__all__ = [
    "METADATA_FIELDS", "make_dataset", "load_ground_truth", "save_ground_truth",
    "heldout_combinations", "prompts_for_combinations",
]

METADATA_FIELDS = ("file_name", "text", "id", "defect", "shape", "color", "motion", "speed",
                   "num_objects", "background", "gt_file")
_FORMATS = ("jsonl", "csv")
_OUTPUTS = ("videos", "gt", "metadata.jsonl", "metadata.csv", "dataset.json")


def heldout_combinations(seed: int, fraction: float) -> list[Combination]:
    """A seeded subset of (color, shape, motion) triples to keep out of training, chosen so that every
    single colour, shape and motion still occurs in the remaining (training) triples."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    combos = all_combinations()
    target = int(round(fraction * len(combos)))
    order = np.random.default_rng(seed).permutation(len(combos))
    kept = {axis: {value: 0 for value in values} for axis, values in enumerate((COLORS, SHAPES, MOTIONS))}
    for combo in combos:
        for axis, value in enumerate(combo):
            kept[axis][value] += 1
    held = []
    for index in order:
        if len(held) == target:
            break
        combo = combos[index]
        if all(kept[axis][value] > 1 for axis, value in enumerate(combo)):
            held.append(combo)
            for axis, value in enumerate(combo):
                kept[axis][value] -= 1
    return sorted(held)


def prompts_for_combinations(combinations: Iterable[Sequence[str]], speed: str = "normal") -> list[str]:
    """One caption per (color, shape, motion) triple, e.g. for sampling held-out prompts."""
    return [object_clause(ObjectSpec(shape, color, motion, speed), num_frames=17)
            for color, shape, motion in combinations]


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    from ..output_paths import check_output_folder

    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    check_output_folder(out_dir, "out_dir")  # a file further up the path, or a folder that refuses writes
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty; pass --overwrite (overwrite=True) to replace the "
                                  "toy dataset in it, or choose another folder")
        for name in _OUTPUTS:  # only what make_dataset writes; anything else in the folder is left alone
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    (out_dir / "gt").mkdir(parents=True, exist_ok=True)


def save_ground_truth(path: str | os.PathLike, clip: ToyClip) -> None:
    """Write a clip's ground truth as a compressed npz (masks bit-packed along the last axis)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        masks=np.packbits(clip.masks, axis=-1), masks_shape=np.asarray(clip.masks.shape, np.int64),
        tracks=clip.tracks, visibility=clip.visibility, point_owner=clip.point_owner, moving=clip.moving,
        centers=clip.centers, caption=np.asarray(clip.caption),
        labels=np.asarray(json.dumps(clip.labels)), spec=np.asarray(json.dumps(clip.spec.to_dict())),
    )
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_ground_truth(npz_path: str | os.PathLike) -> dict[str, Any]:
    """Read a ground-truth npz: masks bool [F, n_obj, H, W], tracks, visibility, point_owner, moving,
    centers, caption (str), labels and spec (dicts)."""
    path = Path(npz_path)
    if not path.is_file():
        raise FileNotFoundError(f"ground truth {path} does not exist; regenerate the toy dataset")
    with np.load(path, allow_pickle=False) as data:
        shape = tuple(int(v) for v in data["masks_shape"])
        return {
            "masks": np.unpackbits(data["masks"], axis=-1, count=shape[-1]).astype(bool).reshape(shape),
            "tracks": data["tracks"], "visibility": data["visibility"], "point_owner": data["point_owner"],
            "moving": data["moving"], "centers": data["centers"], "caption": str(data["caption"]),
            "labels": json.loads(str(data["labels"])), "spec": json.loads(str(data["spec"])),
        }


def _metadata_row(clip_id: str, clip: ToyClip) -> dict[str, Any]:
    labels = clip.labels
    return {
        "file_name": f"videos/{clip_id}.mp4", "text": clip.caption, "id": clip_id, "defect": labels["defect"],
        "shape": labels["shape"], "color": labels["color"], "motion": labels["motion"], "speed": labels["speed"],
        "num_objects": labels["num_objects"], "background": labels["background"], "gt_file": f"gt/{clip_id}.npz",
    }


def _write_metadata(out_dir: Path, rows: list[dict[str, Any]], fmt: Collection[str]) -> None:
    if "jsonl" in fmt:
        text = "".join(json.dumps(row) + "\n" for row in rows)
        atomic_write_bytes(out_dir / "metadata.jsonl", text.encode())
    if "csv" in fmt:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METADATA_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(out_dir / "metadata.csv", buffer.getvalue().encode())


def _defect_plan(rng: np.random.Generator, num_clips: int, rate: float, defects: Sequence[str]) -> list[str | None]:
    """Exactly round(rate·num_clips) defective clips at random positions, defect kinds spread evenly."""
    count = int(round(rate * num_clips))
    kinds = [defects[i % len(defects)] for i in range(count)]
    rng.shuffle(kinds)
    plan: list[str | None] = [None] * num_clips
    for position, kind in zip(rng.permutation(num_clips)[:count], kinds):
        plan[int(position)] = kind
    return plan


def make_dataset(
    out_dir: str | os.PathLike,
    num_clips: int,
    seed: int,
    defect_rate: float = 0.0,
    defects: Sequence[str] = DEFECTS,
    holdout: float | Collection[Sequence[str]] | None = None,
    num_objects: Sequence[int] = (1,),
    fmt: Sequence[str] = ("jsonl", "csv"),
    overwrite: bool = False,
    progress: bool = True,
    *,
    num_frames: int = 17,
    height: int = 64,
    width: int = 64,
    fps: int = 8,
    motions: Sequence[str] | None = None,
    partial_motion_rate: float = 0.2,
    id_prefix: str = "clip",
) -> Path:
    """Generate `num_clips` toy clips into `out_dir` and return it. `motions` restricts the motions drawn
    (e.g. ["right"] with `partial_motion_rate=0` and `id_prefix="query"` gives a Motive query set of clean
    clips of one target motion). `holdout` is a fraction of
    (color, shape, motion) triples (see heldout_combinations) or an explicit list of them; held-out
    triples never appear in the clips and are listed, with prompts, in dataset.json. Clip i depends only
    on (seed, i) and the defect plan, so the same arguments give the same dataset."""
    out_dir = Path(out_dir)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be in [0, 1], got {defect_rate}")
    if not 0.0 <= partial_motion_rate <= 1.0:  # NaN included: it would silently draw no partial motion
        raise ValueError(f"partial_motion_rate must be in [0, 1], got {partial_motion_rate}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    for name, value in (("height", height), ("width", width)):
        if value < 16:  # the renderer's objects and margins need room; below 16 px there is none
            raise ValueError(f"{name} must be >= 16 pixels, got {value}")
    if fps < 1:  # the mp4 encoder refuses 0 or negative rates, after the first clip is drawn
        raise ValueError(f"fps must be >= 1, got {fps}")
    defects = tuple(defects)
    for defect in defects:
        check_name("defect", defect, DEFECTS)
    if defect_rate > 0 and not defects:
        raise ValueError("defect_rate > 0 needs at least one defect kind")
    for fmt_name in fmt:
        check_name("metadata format", fmt_name, _FORMATS)
    num_objects = tuple(int(n) for n in num_objects)
    if not num_objects or min(num_objects) < 1 or max(num_objects) > len(COLORS):
        raise ValueError(f"num_objects must list counts between 1 and {len(COLORS)}, got {num_objects}")
    if isinstance(holdout, (int, float)):
        held = heldout_combinations(seed, float(holdout))
    else:
        held = sorted({tuple(c) for c in holdout or ()})
    combinations = None
    if motions is not None:
        for motion in motions:
            check_name("motion", motion, MOTIONS)
        combinations = [c for c in all_combinations() if c[2] in set(motions)]
    if not id_prefix.isidentifier():
        raise ValueError(f"id_prefix must be a plain name such as 'clip' or 'query', got {id_prefix!r}")
    _prepare_out_dir(out_dir, overwrite)

    plan = _defect_plan(np.random.default_rng([seed, 0]), num_clips, defect_rate, defects)
    rows = []
    for index in tqdm(range(num_clips), desc="toy clips", unit="clip", disable=not progress):
        rng = np.random.default_rng([seed, 1, index])
        count = num_objects[int(rng.integers(len(num_objects)))]
        spec = sample_clip_spec(rng, count, defect=plan[index], holdout=held, combinations=combinations,
                                num_frames=num_frames, height=height, width=width,
                                partial_motion_rate=partial_motion_rate)
        clip = render_clip(spec)
        clip_id = f"{id_prefix}_{index:05d}"
        write_video(out_dir / "videos" / f"{clip_id}.mp4", clip.frames, fps=fps, lossless=True)  # exact masks
        save_ground_truth(out_dir / "gt" / f"{clip_id}.npz", clip)
        rows.append(_metadata_row(clip_id, clip))
    _write_metadata(out_dir, rows, fmt)

    info = {
        "generator": "motionguide.toy", "version": 1, "num_clips": num_clips, "seed": seed,
        "defect_rate": defect_rate, "defects": list(defects), "num_objects": list(num_objects),
        "formats": list(fmt), "num_frames": num_frames, "height": height, "width": width, "fps": fps,
        "motions": list(motions) if motions is not None else None, "partial_motion_rate": partial_motion_rate,
        "holdout": [list(c) for c in held], "holdout_prompts": prompts_for_combinations(held),
        "defect_counts": {kind: sum(d == kind for d in plan) for kind in defects},
    }
    atomic_write_bytes(out_dir / "dataset.json", (json.dumps(info, indent=2) + "\n").encode())
    return out_dir
