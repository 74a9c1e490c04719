"""Bad input under a launcher (issue 18): a clean error is one line however many ranks find it, and
`accelerate launch --quiet` shows only that line (accelerate's own failure report is its traceback otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BAD = ["--config", str(REPO / "configs" / "toy.yaml"), "--lr_scheduler", "nope"]


@pytest.mark.parametrize("rank,lines", [(None, 1), ("0", 1), ("1", 0), ("3", 0)])
def test_only_rank_0_prints_the_one_line_error_and_every_rank_exits_2(monkeypatch, capsys, rank, lines):
    from motionguide.training.cli import main

    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    if rank is not None:
        monkeypatch.setenv("RANK", rank)
    assert main(BAD) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == lines and "Traceback" not in err
    assert all("lr_scheduler='nope'" in line and "Valid:" in line for line in errors)


def test_accelerate_launch_quiet_shows_the_one_line_error_once_and_no_traceback():
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    done = subprocess.run([*accelerate, "--quiet", "--cpu", "--num_processes", "1", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "train" / "finetune.py"),
                           *BAD], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and len(errors) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "lr_scheduler='nope'" in errors[0]
