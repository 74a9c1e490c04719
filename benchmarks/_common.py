"""Shared helpers for benchmark scripts: timing by interleaved repetition and result files."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from motionguide.files import atomic_write_text

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent


def repo_relative(text: str) -> str:
    """`text` with this checkout's absolute path written relative to the repository (results are committed)."""
    return text.replace(f"{REPO}/", "").replace(str(REPO), ".")


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine()}


def interleaved_medians(variants: dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per variant, run round-robin so machine noise hits all variants alike."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def limit_threads(threads: int) -> None:
    """Cap torch and OpenCV threads so a benchmark can share the machine with a training run (0: leave as is)."""
    if threads > 0:
        import cv2

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


def write_results(name: str, data: dict, markdown: str, results_dir: str | Path | None = None) -> None:
    """benchmarks/results/<name>.json and <name>.md (atomic writes); `results_dir` redirects smoke runs."""
    folder = Path(results_dir) if results_dir else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(data, indent=2)), (".md", markdown.rstrip() + "\n")):
        atomic_write_text(folder / f"{name}{suffix}", repo_relative(text))
    print(markdown)
