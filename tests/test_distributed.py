"""A two-rank accelerate job on the CPU (gloo) with the attention controller active."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import torchrun_two_ranks

JOBS = Path(__file__).parent / "jobs"


def run_two_ranks(script: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = torchrun_two_ranks(script, *args)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_rank_ddp_with_capture_stays_in_sync(tmp_path):
    out = tmp_path / "result.json"
    proc = run_two_ranks(JOBS / "ddp_instrumented.py", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and "MULTI_CPU" in result["distributed_type"]
    assert result["max_weight_difference"] == 0.0
    assert result["captures_on_rank0"] == 3 and result["capture_shape"] == [1, 2, 48, 12]
