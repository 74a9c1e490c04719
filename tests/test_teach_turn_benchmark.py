"""The turn arms benchmark (benchmarks/teach_turn.py) runs end to end on a tiny setting and its curation-quality
numbers match a recount from what each clip really shows (its metadata labels and ground-truth caption), not
from the truth table the benchmark reads. Structure only: --quick trains 2 steps, so outcomes mean nothing.
Its pieces on top (guidance, the IMAP monitor's probes, the jerk at the turn) are checked against hand-made
tracks and truth tables."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from motionguide.toy import load_ground_truth

REPO = Path(__file__).resolve().parent.parent
ARMS = ["base", "motive", "random", "keyword", "oracle"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    work, results = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("results")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    subprocess.run([sys.executable, "teach_turn.py", "--quick", "--pool", "40", "--queries", "2",
                    "--arms", ",".join(ARMS), "--guidance_monitor", "--imap_every", "1", "--threads", "1",
                    "--world_seed", "3", "--work", str(work),
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


def test_guidance_and_monitor_on_top_of_the_motive_arm_are_reported(quick_run):
    data, md, work = quick_run
    guided = data["rows"]["motive_guided"]["turn"]
    unguided = data["rows"]["motive"]["turn"]
    assert [(r["prompt"], r["seed"]) for r in guided] == [(r["prompt"], r["seed"]) for r in unguided]
    for key in ("success", "jerk_at_turn", "colour_drift", "shape_consistency"):
        summary = data["guidance"][key]
        values = [float(r[key]) for r in guided]
        if all(math.isfinite(v) for v in values):
            assert summary["guided"] == pytest.approx(sum(values) / len(values))
    assert "Correspondence guidance on the motive LoRA" in md
    monitor = data["imap_monitor"]
    rows = {r["id"]: r for r in map(json.loads, (work / data["pool_folder"] / "metadata.jsonl").read_text()
                                    .splitlines())}
    said_turn = [i for i in data["selections"]["motive"] if re.search(r"\bthen (up|down|left|right)", rows[i]["text"])]
    if "skipped" in monitor:  # the tiny selection may hold no clip captioned with a turn
        assert not said_turn
    else:
        assert monitor["options"]["words"][0] == "then" and len(monitor["history"]) == 2  # every step of 2
        assert set(monitor["options"]["probe_ids"]) <= set(data["selections"]["motive"])


def test_jerk_at_the_turn_reads_the_kink_of_a_right_angle_turn():
    from motionguide.metrics.turns import jerk_at_turn

    speed, apex = 2.0, 7  # right until frame 7, then up; turn_frame (first frame of the second leg) = 8
    frames = np.arange(17, dtype=np.float64)
    x = np.where(frames <= apex, 10 + speed * frames, 10 + speed * apex)
    y = np.where(frames <= apex, 30.0, 30.0 - speed * (frames - apex))
    track = np.stack([x, y], axis=1)
    # one kink of |(-v, -v)| = v * sqrt(2) at the apex, zero on the other 4 frames of the +-2 window
    assert jerk_at_turn(track, apex + 1) == pytest.approx(speed * math.sqrt(2) / 5)
    straight = np.stack([10 + speed * frames, np.full(17, 30.0)], axis=1)
    assert jerk_at_turn(straight, 9) == pytest.approx(0.0)
    assert math.isnan(jerk_at_turn(track, None))
    missing = track.copy()
    missing[4:11] = np.nan  # the object is lost around the turn: nothing to read
    assert math.isnan(jerk_at_turn(missing, apex + 1))


def test_monitor_probes_are_turn_captions_with_one_second_direction_clean_first():
    from motionguide.toy.turns import turn_monitor_probes

    rows = [
        {"id": "a", "caption": "a red circle moves right then down", "clean_turn": False},  # mislabeled
        {"id": "b", "caption": "a blue square moves up then down", "clean_turn": True},
        {"id": "c", "caption": "a red circle moves down then left", "clean_turn": True},
        {"id": "d", "caption": "a green circle moves right then down quickly", "clean_turn": True},
        {"id": "e", "caption": "a red circle moves right then stops", "clean_turn": False},  # not a turn
        {"id": "f", "caption": "a red circle moves right then down", "clean_turn": True},
    ]
    assert turn_monitor_probes(rows, num_probes=3) == (["b", "d", "f"], ["then", "down"])
    assert turn_monitor_probes(rows, num_probes=4) == (["b", "d", "f", "a"], ["then", "down"])
    assert turn_monitor_probes(rows, ids=["a", "c", "e"]) == (["c"], ["then", "left"])
    assert turn_monitor_probes(rows, ids=["a", "e"]) == (["a"], ["then", "down"])  # no clean turn: any turn caption
    assert turn_monitor_probes(rows, ids=["e"]) == ([], [])
