"""The Motive pass end to end on a tiny pipeline: selection, resume after SIGKILL, two ranks = one rank,
`--curation motive` in the loop, and bad clips recorded without stopping the pass."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from motionguide.attribution.run import AttributionConfig, run_attribution
from motionguide.testing import tiny_wan_pipeline
from motionguide.toy import make_dataset

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("motive")
    tiny_wan_pipeline().save_pretrained(root / "model")
    make_dataset(root / "data", num_clips=8, seed=2, defect_rate=0.25, progress=False)
    make_dataset(root / "queries", num_clips=2, seed=9, progress=False)
    (root / "data" / "videos" / "broken.mp4").write_bytes(b"not a video")
    with open(root / "data" / "metadata.jsonl", "a") as fh:
        fh.write(json.dumps({"file_name": "videos/broken.mp4", "text": "a red circle moves left", "id": "broken"}) + "\n")
    return root


def config(root: Path, out: str, **kw) -> AttributionConfig:
    return AttributionConfig(model=str(root / "model"), data=str(root / "data"), queries=str(root / "queries"),
                             out=str(root / out), cache_dir=str(root / "cache"), projector="dense_gaussian", dim=64,
                             fraction=0.25, **kw)


def features(out: Path):
    store = sorted((out / "features").glob("*/train"))
    assert store, "no train feature store"
    from motionguide.attribution.store import FeatureStore

    cfg = json.loads((store[0].parent / "config.json").read_text())
    return FeatureStore(out / "features", cfg, dim=64, split="train").load()


@pytest.fixture(scope="module")
def single(workspace):
    """The one-process reference run the other tests compare against."""
    return run_attribution(config(workspace, "single"), progress=False)


def test_pass_selects_and_records_bad_clips(workspace, single):
    result = single
    assert len(result["selected_ids"]) == 2 and len(result["train_ids"]) == 8  # 25% of the 8 readable clips
    ids, feats, records = features(workspace / "single")
    assert "broken" not in ids
    skipped = json.loads((workspace / "single" / "selection.json").read_text())
    assert skipped["counts"]["train"]["featurised"] == 8
    norms = feats.norm(dim=1)
    static = [r for r in records if "zero_gradient" in r.get("flags", [])]
    assert all(abs(float(n) - 1) < 1e-4 or float(n) == 0.0 for n in norms)
    assert len(static) == sum(float(n) == 0.0 for n in norms)


def test_report_holds_the_selection_covariates_and_thumbnails(workspace, single):
    out = workspace / "single"
    saved = json.loads((out / "selection.json").read_text())
    report = saved["report"]
    assert sum(report["vote_histogram"]) == 8 and report["k"] == 2
    coverage = [saved["clips"][i]["mask coverage"] for i in saved["train_ids"]]
    assert all(0.0 <= c <= 1.0 for c in coverage)
    rho = report["covariates"]["mask coverage"]["spearman_with_mean_score"]
    assert rho is None or -1.0 <= rho <= 1.0
    kept = [saved["clips"][i]["mask coverage"] for i in saved["selected_ids"]]
    assert report["covariates"]["mask coverage"]["kept_mean"] == pytest.approx(float(np.mean(kept)))
    text = (out / "report.md").read_text()
    assert "2 of 8 training clips kept" in text and "report_votes.png" in text
    for q, query in enumerate(saved["query_ids"]):
        assert f"Query `{query}`" in text
        assert (out / f"report_top_bottom_q{q}.png").is_file()
    top = int(np.argmax(np.load(out / "scores.npy")[0]))
    assert f"top `{saved['train_ids'][top]}`" in text


def test_curated_dataset_wraps_a_users_dataset(workspace, single):
    from motionguide.attribution import CuratedDataset
    from motionguide.errors import ConfigError

    saved = json.loads((workspace / "single" / "selection.json").read_text())
    ids = sorted(saved["train_ids"], reverse=True)  # the user's own order
    users = [f"item for {clip_id}" for clip_id in ids]
    curated = CuratedDataset(users, workspace / "single", ids=ids)
    assert len(curated) == 2 and sorted(curated[i] for i in range(2)) == sorted(
        f"item for {clip_id}" for clip_id in saved["selected_ids"])
    assert len(list(curated.sampler(num_samples=5))) == 5
    reweighted = CuratedDataset(users, {**saved, "selected_ids": saved["train_ids"],
                                        "weights": [1.0] + [0.0] * (len(ids) - 1)}, ids=ids)
    drawn = {reweighted[i] for i in reweighted.sampler(num_samples=20, generator=torch.Generator().manual_seed(0))}
    assert drawn == {f"item for {saved['train_ids'][0]}"}
    with pytest.raises(ConfigError, match="shares no clip id"):
        CuratedDataset(["x"], workspace / "single", ids=["unknown"])


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_features_without_duplicates(workspace, single):
    reference_ids, reference, _ = features(workspace / "single")
    out = workspace / "killed"
    cmd = [sys.executable, "-m", "motionguide.cli", "curate", "--model", str(workspace / "model"), "--data",
           str(workspace / "data"), "--queries", str(workspace / "queries"), "--out", str(out), "--cache_dir",
           str(workspace / "cache"), "--projector", "dense_gaussian", "--dim", "64", "--fraction", "0.25", "--flush_every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not list(out.glob("features/*/train/rank0/part-00002.json")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "selection.json").exists()
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    ids, feats, _ = features(out)
    assert ids == reference_ids and len(set(ids)) == len(ids)
    assert np.array_equal(feats.numpy(), reference.numpy())


@pytest.mark.slow
def test_two_ranks_give_the_same_features_and_selection(workspace, single):
    out = workspace / "two-ranks"
    job = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "motionguide.cli", "curate", "--model", str(workspace / "model"), "--data", str(workspace / "data"),
           "--queries", str(workspace / "queries"), "--out", str(out), "--cache_dir", str(workspace / "cache"),
           "--projector", "dense_gaussian", "--dim", "64", "--fraction", "0.25"]
    proc = subprocess.run(job, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ids, feats, _ = features(out)
    ref_ids, ref, _ = features(workspace / "single")
    assert ids == ref_ids and np.array_equal(feats.numpy(), ref.numpy())
    assert sorted((out / "features").glob("*/train/rank1/part-*.json")), "rank 1 wrote no shard"
    one = json.loads((workspace / "single" / "selection.json").read_text())
    two = json.loads((out / "selection.json").read_text())
    assert one["selected_ids"] == two["selected_ids"] and one["ranking"] == two["ranking"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_curation_motive_in_the_training_loop(workspace, single):
    from motionguide.training.config import TrainConfig
    from motionguide.training.loop import Trainer

    shutil.copytree(workspace / "single", workspace / "loop-out" / "motive", dirs_exist_ok=True)
    cfg = TrainConfig(pretrained_model_name_or_path=str(workspace / "model"), output_dir=str(workspace / "loop-out"),
                      data_root=str(workspace / "data"), cache_dir=str(workspace / "cache"), train_steps=2,
                      train_batch_size=2, checkpointing_steps=0, report_to="none", rank=4, max_sequence_length=16,
                      curation="motive", curation_fraction=0.25)
    summary = Trainer(cfg).run()  # reads the finished selection in <output_dir>/motive
    assert summary["clips"] == 2 and summary["curation"]["method"] == "motive"
    selected = json.loads((workspace / "single" / "selection.json").read_text())["selected_ids"]
    curated = json.loads((workspace / "loop-out" / "curation.json").read_text())
    assert len(curated["indices"]) == len(selected)
