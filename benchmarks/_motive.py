"""Shared pieces of the Motive evidence benchmarks: toy pool and query sets, pass configs, labels.

The pool and the queries are written in the same on-disk layout a user brings (videos + metadata.jsonl), so
the benchmarks exercise the real data path. Every generator is seeded; a `--work` folder that already holds
a finished set with the same parameters is reused, so motive_finetune can start from motive_defects' pass.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from motionguide.toy import DEFECTS, make_dataset

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = str(ROOT / "assets" / "toy-model")
INFO_FILE = "benchmark_set.json"  # written last: its presence with equal parameters means "reuse me"


def single_thread() -> None:
    """The benchmarks share a 2-core machine with training jobs; one thread also makes timings steadier."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


def work_folder(path: str | None, prefix: str) -> tuple[Path, bool]:
    """(folder, is_temporary): the given --work folder, or a fresh temporary one to delete afterwards."""
    if path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        return folder, False
    return Path(tempfile.mkdtemp(prefix=prefix)), True


def heldout_of(model_dir: str | os.PathLike) -> list[tuple[str, str, str]]:
    """The (colour, shape, motion) triples the model never saw in training (empty for a model without a report)."""
    report = Path(model_dir) / "training_report.json"
    if not report.is_file():
        return []
    return [tuple(c) for c in json.loads(report.read_text()).get("heldout_combinations", [])]


def _reusable(folder: Path, params: dict[str, Any]) -> bool:
    info = folder / INFO_FILE
    return info.is_file() and json.loads(info.read_text()) == json.loads(json.dumps(params))


def _mark_done(folder: Path, params: dict[str, Any]) -> None:
    (folder / INFO_FILE).write_text(json.dumps(params, indent=2))


def make_pool(folder: Path, num_clips: int, seed: int, defect_rate: float,
              holdout: Sequence[Sequence[str]] = ()) -> Path:
    """A training pool with planted defects of every kind (spread evenly); held-out triples never appear."""
    params = {"kind": "pool", "num_clips": num_clips, "seed": seed, "defect_rate": defect_rate,
              "defects": list(DEFECTS), "holdout": [list(c) for c in holdout]}
    if not _reusable(folder, params):
        make_dataset(folder, num_clips=num_clips, seed=seed, defect_rate=defect_rate, defects=DEFECTS,
                     holdout=[tuple(c) for c in holdout], fmt=("jsonl",), overwrite=True, progress=False)
        _mark_done(folder, params)
    return folder


def make_queries(folder: Path, num_clips: int, seed: int, motions: str | Sequence[str],
                 holdout: Sequence[Sequence[str]] = ()) -> Path:
    """Clean single-object clips of the given motion(s), motion over the whole clip (the paper's query clips);
    ids are query_* for one motion, query_every_* for several (never clip_*: the passes cache the pool and
    every query set under one key)."""
    motions = [motions] if isinstance(motions, str) else list(motions)
    params = {"kind": "queries", "num_clips": num_clips, "seed": seed,
              "motion": motions[0] if len(motions) == 1 else motions, "holdout": [list(c) for c in holdout]}
    if _reusable(folder, params):
        return folder
    make_dataset(folder, num_clips=num_clips, seed=seed, motions=motions, partial_motion_rate=0.0,
                 id_prefix="query" if len(motions) == 1 else "query_every", holdout=[tuple(c) for c in holdout],
                 fmt=("jsonl",), overwrite=True,
                 progress=False)
    _mark_done(folder, params)
    return folder


def pool_and_queries(args, work: Path, pool_size: int) -> tuple[Path, Path]:
    """The benchmark's training pool (held-out triples left out) and its clean query set, from the shared
    arguments (seed, defect_rate, model, queries, query_seed, motion); reused when already in `work`."""
    pool = make_pool(work / "pool", pool_size, args.seed, args.defect_rate, heldout_of(args.model))
    return pool, make_queries(work / "queries", args.queries, args.query_seed, args.motion)


def read_metadata(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """id -> metadata row of a toy dataset folder."""
    lines = (Path(folder) / "metadata.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return {row["id"]: row for row in rows}


def is_target(row: dict[str, Any], motion: str) -> bool:
    """A clip that really shows the target motion: captioned with it and free of planted defects."""
    return row["defect"] == "none" and row["motion"] == motion


def pass_features(out: str | os.PathLike, split: str) -> tuple[list[str], np.ndarray, list[dict]]:
    """(ids, float64 features [N, dim], records) stored by a finished Motive pass whose --out is `out`."""
    from motionguide.motive import FeatureStore

    selection = json.loads(Path(out, "selection.json").read_text())
    info = json.loads((Path(selection["feature_store"]) / "config.json").read_text())  # the store it scored
    ids, features, records = FeatureStore(Path(out, "features"), info["config"], dim=info["dim"], split=split).load()
    return ids, features.double().numpy(), records


def load_pipeline(model: str):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    return pipe
