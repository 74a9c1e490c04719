"""The per-run Motive report: what was kept, what each query pulled up and pushed down, and whether the
scores are more than a motion-magnitude filter (their correlation with clip length and mask coverage).

`selection.json` carries the numbers (`clips`, `queries`, `report`); this module renders them next to it as
`report.md` with thumbnail strips (`report_top_bottom_q*.png`) and a vote histogram (`report_votes.png`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..files import atomic_write_text
from ..viz import frame_grid, save_png
from .selection import load_selection

#: Per-clip numbers kept in selection.json for the report, from the feature store's records.
COVARIATES = {
    "clip length (frames)": lambda r: r.get("num_frames"),
    "mask coverage": lambda r: (r.get("mask") or {}).get("coverage"),
    "motion magnitude (mean flow, px)": lambda r: (r.get("mask") or {}).get("raw_mean"),
    "gradient norm": lambda r: r.get("grad_norm"),
    # low = motion spread evenly over the frame (camera-only motion), high = motion concentrated on objects
    "camera diagnostic (spatial CoV of the mask)": lambda r: (r.get("mask") or {}).get("camera_cov"),
}


def clip_summaries(ids: Sequence[str], records: Sequence[Mapping[str, Any]]) -> dict[str, dict]:
    """id -> path, caption and the covariates of one clip (what the report needs, not the whole record)."""
    out = {}
    for clip_id, record in zip(ids, records):
        entry = {"path": record.get("path"), "caption": record.get("caption")}
        entry.update({name: _number(get(record)) for name, get in COVARIATES.items()})
        out[clip_id] = entry
    return out


def covariate_arrays(ids: Sequence[str], clips: Mapping[str, Mapping[str, Any]]) -> dict[str, list[float]]:
    """Covariates with a value for every clip (a covariate missing anywhere, e.g. no mask, is left out)."""
    arrays = {}
    for name in COVARIATES:
        values = [clips[i].get(name) for i in ids]
        if all(v is not None for v in values):
            arrays[name] = [float(v) for v in values]
    return arrays


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _thumbnail(path: str | None) -> np.ndarray | None:
    from ..video import VideoReadError, read_video

    if not path or not Path(path).is_file():
        return None
    try:
        video = read_video(path)
    except (VideoReadError, OSError, ValueError):
        return None
    return video if video.ndim == 4 and len(video) else None


def _vote_histogram_png(histogram: Sequence[int], cut_votes: int, path: Path) -> Path:
    """Bars per vote count; bars at or above the cut (the kept side) in a darker colour."""
    width, height, pad = 32 * len(histogram) + 40, 180, 20
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    top = max(max(histogram), 1)
    for votes, count in enumerate(histogram):
        x0 = pad + votes * 32
        bar = int((height - 2 * pad) * count / top)
        colour = (40, 90, 170) if votes >= cut_votes else (170, 190, 220)
        draw.rectangle([x0, height - pad - bar, x0 + 24, height - pad], fill=colour)
        draw.text((x0 + 6, height - pad + 4), str(votes), fill=(0, 0, 0))
        draw.text((x0 + 2, height - pad - bar - 12), str(count), fill=(0, 0, 0))
    return save_png(image, path)


def write_curation_report(out_dir: str | os.PathLike, top: int = 4, max_queries: int = 4,
                          thumbnails: bool = True) -> Path:
    """Render `report.md` (+ PNGs) for the selection in `out_dir`; returns the markdown path."""
    out = Path(out_dir)
    selection = load_selection(out)
    report = selection.get("report") or {}
    clips = selection.get("clips") or {}
    queries = selection.get("queries") or {}
    train_ids, query_ids = selection["train_ids"], selection["query_ids"]
    scores = np.load(out / "scores.npy") if (out / "scores.npy").is_file() else None
    kept = len(selection["selected_ids"])
    lines = [
        "# Motive curation report",
        "",
        f"{kept} of {len(train_ids)} training clips kept (mode `{selection['mode']}`, fraction "
        f"{selection['fraction']:.0%}, per-query percentile {selection['percentile']:g}, majority vote over "
        f"{len(query_ids)} queries; ties broken by `{selection['tie_rule']}`).",
    ]
    counts = selection.get("counts") or {}
    if counts:
        lines.append("Pass counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    flagged = selection.get("flags") or {}
    if flagged:
        lines.append(f"{len(flagged)} clips carry flags (e.g. static, all-zero motion mask): "
                     + ", ".join(f"`{k}` ({', '.join(v)})" for k, v in list(flagged.items())[:8]) + ".")
    histogram = report.get("vote_histogram")
    if histogram:
        cut = report.get("cut", {}).get("votes", 0)
        _vote_histogram_png(histogram, cut, out / "report_votes.png")
        lines += ["", "## Votes", "",
                  "Clips per number of queries that placed them above their percentile threshold (dark: at or "
                  f"above the cut of {cut} votes).", "", "![votes](report_votes.png)", "",
                  "| votes | " + " | ".join(str(v) for v in range(len(histogram))) + " |",
                  "|---|" + "---|" * len(histogram),
                  "| clips | " + " | ".join(str(c) for c in histogram) + " |"]
    covariates = report.get("covariates") or {}
    if covariates:
        lines += ["", "## Is it only a motion-magnitude filter?", "",
                  "Spearman correlation of each clip's mean score with simple clip statistics, and their means in "
                  "the kept set vs the rest. Strong correlation with coverage or magnitude would mean the scores "
                  "mostly rank by how much moves.", "",
                  "| statistic | Spearman with score | kept mean | rest mean |", "|---|---|---|---|"]
        for name, c in covariates.items():
            rho = c.get("spearman_with_mean_score")
            rest = c.get("rest_mean")
            lines.append(f"| {name} | {'n/a' if rho is None else f'{rho:+.2f}'} | {c['kept_mean']:.3g} | "
                         f"{'n/a' if rest is None else f'{rest:.3g}'} |")
    if scores is not None and scores.size:
        lines += ["", "## Top and bottom clips per query", ""]
        for q in range(min(max_queries, scores.shape[0])):
            order = np.argsort(-scores[q], kind="stable")
            picks = [("top", i) for i in order[:top]] + [("bottom", i) for i in order[::-1][:top]]
            query = queries.get(query_ids[q], {})
            lines.append(f"**Query `{query_ids[q]}`** — {query.get('caption') or ''}")
            lines.append("")
            lines += [f"- {side} `{train_ids[i]}` score {scores[q, i]:+.3f}: {clips.get(train_ids[i], {}).get('caption') or ''}"
                      for side, i in picks]
            if thumbnails:
                strips, labels = [], []
                for side, i in picks:
                    video = _thumbnail(clips.get(train_ids[i], {}).get("path"))
                    if video is not None:
                        strips.append(video)
                        labels.append(f"{side} {scores[q, i]:+.3f} {clips[train_ids[i]].get('caption') or ''}"[:60])
                if strips and len({s.shape[1:] for s in strips}) == 1:
                    name = f"report_top_bottom_q{q}.png"
                    save_png(frame_grid(strips, labels, frames_per_row=5), out / name)
                    lines += ["", f"![query {q}]({name})"]
            lines.append("")
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
