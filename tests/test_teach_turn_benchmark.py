"""The turn arms benchmark (benchmarks/teach_turn.py) runs end to end on a tiny setting and its curation-quality
numbers match a recount from what each clip really shows (its metadata labels and ground-truth caption), not
from the truth table the benchmark reads. Structure only: --quick trains 2 steps, so outcomes mean nothing."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from motionguide.toy import load_ground_truth

REPO = Path(__file__).resolve().parent.parent
ARMS = ["base", "motive", "random", "keyword", "oracle"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    work, results = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("results")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    subprocess.run([sys.executable, "teach_turn.py", "--quick", "--pool", "40", "--queries", "2",
                    "--arms", ",".join(ARMS), "--threads", "1", "--world_seed", "3", "--work", str(work),
                    "--results_dir", str(results)], cwd=REPO / "benchmarks", env=env, check=True,
                   capture_output=True, text=True)
    return json.loads((results / "teach_turn.json").read_text()), (results / "teach_turn.md").read_text(), work


def clean_turns_recounted(pool: Path) -> set[str]:
    """Clips that show a turn, have no planted defect and whose caption is the one the renderer wrote."""
    clean = set()
    for line in (pool / "metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        shown = load_ground_truth(pool / row["gt_file"])["caption"]
        if " then " in row["motion"] and row["defect"] == "none" and row["text"] == shown:
            clean.add(row["id"])
    return clean


def test_every_arm_is_trained_sampled_and_reported(quick_run):
    data, md, _ = quick_run
    assert list(data["metrics"]) == ARMS
    assert set(data["training"]) == set(ARMS) - {"base"}
    assert all(data["training"][a]["steps"] == 2 for a in data["training"])
    for arm in ARMS:
        rows = data["rows"][arm]
        assert [(r["prompt"], r["seed"]) for r in rows["turn"]] == [(r["prompt"], r["seed"])
                                                                    for r in data["rows"]["base"]["turn"]]
        assert len(rows["turn"]) == 2 and len(rows["straight"]) == 2
        assert set(rows["turn"][0]) >= {"success", "presence", "smoothness", "outcome"}
        assert f"| {arm} |" in md or f"| **{arm}** |" in md
    assert "motive - random" in data["paired_differences"] and "oracle - base" in data["paired_differences"]
    assert data["metrics"]["base"]["forgetting_points"] == 0.0


def test_selection_precision_and_recall_match_a_recount_from_the_clips(quick_run):
    data, _, work = quick_run
    pool = work / data["pool_folder"]
    assert pool.name.startswith("pool_seed3_40")
    clean = clean_turns_recounted(pool)
    assert clean  # the tiny pool still holds clean turns
    rows = [json.loads(line) for line in (pool / "metadata.jsonl").read_text().splitlines()]
    assert set(data["selections"]["oracle"]) == clean
    # the keyword filter: "then" followed by a direction ("then stops" is a straight clip's ending)
    said_turn = {r["id"] for r in rows if re.search(r"\bthen (up|down|left|right)", r["text"])}
    assert set(data["selections"]["keyword"]) == said_turn
    assert len(data["selections"]["random"]) == len(data["selections"]["motive"]) == 4  # 10% of 40
    for arm, ids in data["selections"].items():
        quality = data["selection_quality"][arm]
        hits = len(set(ids) & clean)
        assert quality["selected"] == len(ids)
        assert quality["precision"] == pytest.approx(hits / len(ids))
        assert quality["recall"] == pytest.approx(hits / len(clean))
    # what a LoRA trained on: the arm's subset folder holds exactly its selection
    for arm in ("motive", "random", "keyword", "oracle"):
        lines = (work / "subsets" / arm / "metadata.jsonl").read_text().splitlines()
        subset = [json.loads(line)["id"] for line in lines]
        assert sorted(subset) == sorted(data["selections"][arm])
