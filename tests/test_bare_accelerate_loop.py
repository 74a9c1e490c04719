"""The methods as callbacks of a user's own accelerate loop (examples/bare_accelerate_loop.py), not the Trainer:
a Motive selection decides which clips are drawn, the IMAP monitor logs maps through accelerate's trackers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tensorboard_tags, training_workspace

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return training_workspace(tmp_path_factory, "bare-loop", num_clips=6, seed=1)



def test_bare_accelerate_lora_loop_draws_only_selected_clips_and_logs_imap_maps(workspace):
    from motionguide.data import VideoDataset

    ids = sorted(VideoDataset(workspace / "data", num_frames=17, height=64, width=64).ids)
    chosen = ids[1::2]  # a filter selection as `motionguide curate` writes it: the kept ids and the pool
    selection = {"mode": "filter", "fraction": 0.5, "selected_ids": chosen, "train_ids": ids, "weights": None}
    (workspace / "selection.json").write_text(json.dumps(selection))

    out = workspace / "run"
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "bare_accelerate_loop.py"),
         "--pretrained_model_name_or_path", str(workspace / "model"), "--data_root", str(workspace / "data"),
         "--selection", str(workspace / "selection.json"), "--output_dir", str(out), "--max_train_steps", "4",
         "--train_batch_size", "2", "--monitor_every", "2", "--learning_rate", "1e-3"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())

    drawn = [clip for batch in summary["drawn_ids"] for clip in batch]
    assert len(summary["losses"]) == 4 and len(drawn) == 8
    assert set(drawn) <= set(chosen) and summary["selected_ids"] == chosen

    assert summary["monitor"]["steps"] == [2, 4]
    logged = summary["monitor"]["history"]
    words = {key.split("/")[1] for key in logged[0] if key.endswith("/entropy")}
    assert words, logged  # each probe caption's subject and verb
    assert "saliency/head_stability" in logged[1]
    tags = tensorboard_tags(out / "logs")
    assert {f"saliency/{w}" for w in words} <= tags["images"]
    assert {f"saliency/{w}/entropy" for w in words} | {"train/loss", "saliency/head_stability"} <= tags["scalars"]
    assert (out / "pytorch_lora_weights.safetensors").is_file()
