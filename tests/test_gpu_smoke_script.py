"""`benchmarks/gpu_smoke.py` runs every stage end to end (its CPU path, at a tiny size) and reports each one.

The GPU run itself needs a GPU; this checks that the one command a GPU user runs works through all stages and
writes the table and the JSON the README quotes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from motionguide.cli import main as motionguide_main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["cache", "forward", "imap", "sample_cfg", "sample_guided", "decode", "motive_gc", "train_step_gc"]


def test_gpu_smoke_script_runs_every_stage_on_the_cpu_and_reports_each(tmp_path):
    model = tmp_path / "model"
    assert motionguide_main(["random-pipeline", "--like", "wan2.1-t2v-1.3b", "--out", str(model),
                             "--num_layers", "2", "--text_layers", "1"]) == 0
    out = tmp_path / "smoke"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "benchmarks/gpu_smoke.py", "--out", str(out), "--small", "--device",
                           "cpu", "--num_layers", "2", "--model", str(model), "--size", "5x32x32", "--steps", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]

    report = json.loads((out / "gpu_smoke.json").read_text())
    assert [row["stage"] for row in report["rows"]] == STAGES
    # 5 frames -> 2 latent frames; 32 px -> 4 latent px -> 2 patches: 2 x 2 x 2 tokens
    assert report["tokens"] == 8 and report["num_layers"] == 2 and report["size"] == "5x32x32"
    for row in report["rows"]:
        assert row["error"] is None and row["seconds"] > 0 and row["peak_bytes"] > 0, row
    goals = {row["stage"]: row["goal"] for row in report["rows"] if "goal" in row}
    assert goals == {"train_step_gc": "training step <= 24 GB",
                     "motive_gc": "Motive featurization per clip <= 40 GB (checkpointing)",
                     "sample_cfg": "sampling <= 16 GB (text encoder offloaded)",
                     "sample_guided": "sampling <= 16 GB (text encoder offloaded)",
                     "decode": "sampling <= 16 GB (text encoder offloaded)"}
    assert all(row["goal_met"] is None for row in report["rows"] if "goal" in row)  # judged on CUDA only
    table = (out / "gpu_smoke.md").read_text()
    assert all(f"| {stage} |" in table for stage in STAGES) and "n/a on the CPU" in table
    # the projector's state made as the pass makes it (on the CPU here: the CPU stream), reproducible bitwise
    from motionguide.motive.projectors import CPU_RNG

    state = report["projector_state"]
    assert state["pass"]["rng"] == state["cpu"]["rng"] == CPU_RNG
    assert state["pass"]["deterministic"] and state["cpu"]["deterministic"]
    assert "two projectors built alike agree bitwise: yes" in table


def test_gpu_smoke_script_refuses_cuda_on_a_machine_without_it(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the refusal is what a CPU-only machine shows
    done = subprocess.run([sys.executable, "benchmarks/gpu_smoke.py", "--out", str(tmp_path)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 2 and "this machine has no CUDA device" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing built before the refusal
