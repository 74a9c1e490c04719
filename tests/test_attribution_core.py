"""Projectors, feature store and selection of Motive, checked against references written in this file."""

from __future__ import annotations

import json
import math
import random
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from motionguide.motive import (
    FeatureStore,
    StoreMismatchError,
    majority_vote_selection,
    make_projector,
    prune_negative,
    read_merged,
    reweight,
    roc_auc,
    score_matrix,
    selection_report,
    spearman,
)
from motionguide.motive.projectors import BlockwiseFastfood, feistel_permute, fwht
from motionguide.errors import ConfigError

DIM = 512
# Mixed parameter sizes: tiny ones (dense path), partial blocks, several blocks per parameter.
JL_SIZES = [1, 3, 16, 100, 511, 512, 513, 2048, 4097, 30000, 70000]
JL_SIZES.append(200_000 - sum(JL_SIZES))
SMALL_SIZES = [3, 700, 1, 5000, 64]
STREAMING = ("fastfood_blockwise", "sparse_jl", "dense_gaussian")
ALL_VARIANTS = {
    "fastfood_blockwise": ("fastfood_blockwise", {"block_size": 2**15}),
    "fastfood_blockwise/feistel": ("fastfood_blockwise", {"block_size": 2**15, "permutation": "feistel"}),
    "fastfood": ("fastfood", {}),
    "fastfood/feistel": ("fastfood", {"permutation": "feistel"}),
    "sparse_jl": ("sparse_jl", {}),
    "dense_gaussian": ("dense_gaussian", {}),
}


def hadamard(n: int) -> torch.Tensor:
    """Sylvester's construction, written out."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def ranks(a: np.ndarray) -> np.ndarray:
    """Ranks of distinct values (continuous data in these tests)."""
    out = np.empty(a.size)
    out[np.argsort(a)] = np.arange(a.size)
    return out


# ------------------------------------------------------------------------------------------ projectors


def test_fwht_matches_explicit_hadamard():
    for n in (1, 2, 4, 8, 16, 32, 64, 512):
        x = torch.randn(3, 2, n)
        before = x.clone()
        assert torch.allclose(fwht(x), x @ hadamard(n), atol=1e-4)
        assert torch.equal(x, before)
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(torch.randn(6))


@pytest.mark.parametrize("bits", [0, 1, 2, 5, 8, 11])
def test_feistel_is_a_bijection(bits):
    perm = feistel_permute(torch.arange(2**bits), bits, list(range(11, 19)))
    assert torch.equal(torch.sort(perm).values, torch.arange(2**bits))


@pytest.mark.parametrize("variant", list(ALL_VARIANTS))
def test_projector_is_seeded_and_identical_across_instances(variant):
    name, kw = ALL_VARIANTS[variant]
    x = torch.randn(2, sum(SMALL_SIZES))
    rank0 = make_projector(name, SMALL_SIZES, dim=64, seed=7, **kw)
    rank1 = make_projector(name, SMALL_SIZES, dim=64, seed=7, **kw)
    other = make_projector(name, SMALL_SIZES, dim=64, seed=8, **kw)
    torch.manual_seed(123)  # global RNG state must not matter
    a = rank0.project_full(x)
    torch.manual_seed(456)
    b = rank1.project_full(x)
    assert a.shape == (2, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, other.project_full(x))
    assert rank0.describe() == rank1.describe()
    assert rank0.describe() != other.describe()
    json.dumps(rank0.describe())
    # one row alone is a different matmul shape than the same row in a batch of two: the BLAS kernel (and its
    # rounding) may differ, so rows agree to float32 rounding, not bit for bit
    torch.testing.assert_close(rank0.project_full(x[0]), a[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_sum_equals_project_full_in_any_order(name):
    proj = make_projector(name, SMALL_SIZES, dim=64, seed=3, **({"block_size": 1024} if "fastfood" in name else {}))
    assert proj.streaming
    flat = torch.randn(sum(SMALL_SIZES))
    pieces = list(torch.split(flat, SMALL_SIZES))
    order = list(range(len(SMALL_SIZES)))
    random.Random(0).shuffle(order)
    before = flat.clone()
    total = sum(proj.project_parameter(i, pieces[i]) for i in order)
    assert torch.allclose(total, proj.project_full(flat), rtol=1e-5, atol=1e-5)
    assert torch.equal(flat, before)  # gradients are read, never modified
    with pytest.raises(ValueError, match="named_parameters"):
        proj.project_parameter(0, torch.randn(4))


@pytest.mark.parametrize("name", STREAMING)
def test_project_many_equals_the_sum_of_per_parameter_projections(name):
    sizes = [3, 700, 1024, 1024, 2500, 5, 1024]  # dense-branch sizes, repeated block lengths, a chunked tensor
    proj = make_projector(name, sizes, dim=64, seed=5, **({"block_size": 1024} if "fastfood" in name else {}))
    grads = [torch.randn(n) for n in sizes]
    order = [6, 2, 0, 4, 1, 5, 3]
    expected = sum(proj.project_parameter(i, grads[i]) for i in order)
    torch.testing.assert_close(proj.project_many([(i, grads[i]) for i in order]), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(proj.project_many([(i, grads[i]) for i in order]), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="elements"):
        proj.project_many([(1, torch.randn(3))])


def test_fastfood_global_needs_the_full_vector():
    proj = make_projector("fastfood", SMALL_SIZES, dim=64)
    assert not proj.streaming
    with pytest.raises(NotImplementedError, match="project_full"):
        proj.project_parameter(0, torch.randn(3))


def test_make_projector_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match="fastfood_blockwise.*sparse_jl.*dense_gaussian"):
        make_projector("fastfod_blockwise", [10])


def test_blockwise_fastfood_weights_chunk_sizes_alike():
    """E‖Px‖² = ‖x‖² whether x lives in a tiny parameter (dense path), a partial block or a full block."""
    sizes = [7, 600, 4096]  # next powers of two: 8 (< dim, dense), 1024 (padded), 4096 (one full block)
    proj = BlockwiseFastfood(sizes, dim=DIM, seed=1, block_size=4096)
    for index, n in enumerate(sizes):
        x = torch.randn(300, n)
        ratio = (proj.project_parameter(index, x).norm(dim=1) ** 2 / x.norm(dim=1) ** 2).mean()
        assert abs(float(ratio) - 1.0) < 0.08, (n, float(ratio))


@pytest.fixture(scope="module")
def jl_vectors():
    """200 unit vectors with a wide spread of exact cosines: mixtures of 8 directions plus noise."""
    g = torch.Generator().manual_seed(0)
    d = sum(JL_SIZES)
    x = torch.randn(200, 8, generator=g) @ torch.randn(8, d, generator=g) + torch.randn(200, d, generator=g)
    x = x / x.norm(dim=1, keepdim=True)
    xd = x.double()
    return x, (xd @ xd.T).numpy()


@pytest.mark.parametrize("variant", list(ALL_VARIANTS))
def test_projected_cosines_match_exact_cosines(variant, jl_vectors):
    x, exact = jl_vectors
    name, kw = ALL_VARIANTS[variant]
    y = make_projector(name, JL_SIZES, dim=DIM, seed=0, **kw).project_full(x).double()
    y = y / y.norm(dim=1, keepdim=True)
    projected = (y @ y.T).numpy()
    iu = np.triu_indices(len(x), 1)
    error = np.abs(projected[iu] - exact[iu]).mean()
    assert error < 2 / math.sqrt(DIM), error
    rho = np.corrcoef(ranks(projected[iu]), ranks(exact[iu]))[0, 1]
    assert rho >= 0.9, rho


# ---------------------------------------------------------------------------------------------- store

CONFIG = {"projector": {"class": "BlockwiseFastfood", "dim": 4, "seed": 0}, "loss": "motion", "eps_sha": "ab"}


def feature(i: int) -> torch.Tensor:
    return torch.tensor([i, i + 0.5, -i, 1.0])


def fill(store, ids):
    for c in ids:
        store.add(c, feature(int(c[1:])), {"grad_norm": float(c[1:]), "flags": []})


def test_store_round_trip_with_skips(tmp_path):
    with FeatureStore(tmp_path, CONFIG, dim=4, flush_every=3) as store:
        fill(store, ["c3", "c1", "c2"])
        store.add("c0", None, {"skip_reason": "static_mask"})
        store.add("c4", torch.tensor([float("nan"), 0, 0, 0]), {})
    assert store.dir.name == store.config_hash
    ids, feats, records = store.load()
    assert ids == ["c1", "c2", "c3"]
    assert torch.equal(feats, torch.stack([feature(1), feature(2), feature(3)]))
    assert [r["grad_norm"] for r in records] == [1.0, 2.0, 3.0]
    assert {r["config_hash"] for r in records + store.skipped()} == {store.config_hash}  # a manifest per clip
    assert [(r["clip_id"], r["skip_reason"]) for r in store.skipped()] == [
        ("c0", "static_mask"), ("c4", "non_finite_feature")]
    assert store.done_ids() == {"c0", "c1", "c2", "c3", "c4"}
    with pytest.raises(ValueError, match="skip_reason"):
        store.add("c9", None, {})
    with pytest.raises(ValueError, match="4-d"):
        store.add("c9", torch.zeros(5), {})


def test_store_resumes_after_a_crash(tmp_path):
    ids = [f"c{i}" for i in range(5)]
    store = FeatureStore(tmp_path / "a", CONFIG, dim=4, flush_every=2)
    fill(store, ids)  # parts 0 and 1 written; c4 still in the buffer
    del store  # killed: the buffer is lost
    store = FeatureStore(tmp_path / "a", CONFIG, dim=4, flush_every=2)
    assert store.done_ids() == set(ids[:4])
    assert store.pending(ids) == ["c4"]
    assert store.add("c1", feature(1), {}) is False  # already done: no duplicate
    with store:
        fill(store, store.pending(ids))
    with FeatureStore(tmp_path / "b", CONFIG, dim=4, flush_every=2) as clean:
        fill(clean, ids)
    got, expected = store.load(), clean.load()
    assert got[0] == expected[0] == ids
    assert torch.equal(got[1], expected[1])
    # A part written twice around a crash: the first occurrence wins, nothing is duplicated.
    rank_dir = store.rank_dir
    for suffix in (".safetensors", ".json"):
        shutil.copy(rank_dir / f"part-00000{suffix}", rank_dir / f"part-00007{suffix}")
    again = FeatureStore(tmp_path / "a", CONFIG, dim=4)
    assert again.load()[0] == ids and torch.equal(again.load()[1], expected[1])


def test_store_ignores_torn_parts(tmp_path):
    with FeatureStore(tmp_path, CONFIG, dim=4, flush_every=2) as store:
        fill(store, ["c0", "c1"])
    rank_dir = store.rank_dir
    save_file({"features": torch.zeros(2, 4)}, str(rank_dir / "part-00001.safetensors"))  # no JSON
    save_file({"features": torch.zeros(1, 4)}, str(rank_dir / "part-00002.safetensors"))
    text = (rank_dir / "part-00000.json").read_text().replace("c0", "c8").replace("c1", "c9")
    (rank_dir / "part-00002.json").write_text(text[: len(text) // 2])  # truncated JSON
    store = FeatureStore(tmp_path, CONFIG, dim=4, flush_every=2)
    assert store.done_ids() == {"c0", "c1"}
    with store:
        fill(store, ["c2"])
    assert (rank_dir / "part-00003.json").exists()  # torn parts are never overwritten
    assert store.load()[0] == ["c0", "c1", "c2"]


def test_store_refuses_a_mismatching_config(tmp_path):
    store = FeatureStore(tmp_path, CONFIG, dim=4)
    path = store.dir / "config.json"
    edited = json.loads(path.read_text())
    edited["config"]["loss"] = "plain"
    path.write_text(json.dumps(edited))
    with pytest.raises(StoreMismatchError, match="different config"):
        FeatureStore(tmp_path, CONFIG, dim=4)
    other = FeatureStore(tmp_path, {**CONFIG, "loss": "plain"}, dim=4)
    assert other.config_hash != store.config_hash
    with pytest.raises(StoreMismatchError, match="dim=8"):
        FeatureStore(tmp_path, {**CONFIG, "loss": "plain"}, dim=8)


def test_two_ranks_merge_in_id_order(tmp_path):
    ids = [f"c{i}" for i in (5, 2, 9, 0, 7, 3, 1)]
    shares = []
    for rank in (1, 0):
        with FeatureStore(tmp_path, CONFIG, rank=rank, world_size=2, dim=4, flush_every=2) as store:
            share = store.pending(ids)
            fill(store, share)
            shares.append(share)
    assert sorted(shares[0] + shares[1]) == sorted(ids) and not set(shares[0]) & set(shares[1])
    out = store.merge(tmp_path / "merged")
    merged_ids, feats, records, manifest = read_merged(out)
    assert merged_ids == sorted(ids) and manifest["count"] == len(ids)
    assert torch.equal(feats, torch.stack([feature(int(c[1:])) for c in sorted(ids)]))
    assert [r["clip_id"] for r in records] == merged_ids
    # The query split lives beside the train split under the same config.
    with FeatureStore(tmp_path, CONFIG, dim=4, split="query") as queries:
        fill(queries, ["c100"])
    assert queries.load()[0] == ["c100"] and queries.load("train")[0] == sorted(ids)


# ------------------------------------------------------------------------------------------ selection


def test_score_matrix_and_zero_rows():
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    t = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    t[2] = 0.0
    s = score_matrix(q, t)
    assert s.shape == (3, 5) and torch.isfinite(s).all()
    assert torch.equal(s[:, 2], torch.zeros(3))
    manual = torch.tensor([[float(q[i] @ t[j]) for j in range(5)] for i in range(3)])
    assert torch.allclose(s, manual, atol=1e-6)
    assert torch.allclose(score_matrix(q * 3, t * 2, normalize=True), s, atol=1e-6)


def test_majority_vote_known_answer_and_tie_breaks():
    scores = np.array([[5, 4, 3, 2, 1], [1, 5, 4, 3, 2], [4, 1, 5, 3, 2]], dtype=float)
    sel = majority_vote_selection(scores, fraction=0.4, percentile=50.0)
    assert sel.thresholds.tolist() == [3.0, 3.0, 3.0]
    assert sel.votes.tolist() == [2, 2, 2, 0, 0]
    # c2 has the best rank sum (12); c0 and c1 tie on rank sum (10) and mean score (10/3): index decides.
    assert sel.order.tolist() == [2, 0, 1, 3, 4]
    assert sel.indices.tolist() == [2, 0] and sel.k == 2 and sel.boundary_tie
    assert np.allclose(sel.mean_rank, (np.array([10, 10, 12, 8, 5]) / 3 - 1) / 4 * 100)
    # Raise c1's lowest score without changing any rank: now the mean score decides, c1 before c0.
    scores[2, 1] = 1.5
    assert majority_vote_selection(scores, fraction=0.4, percentile=50.0).indices.tolist() == [2, 1]
    # Tied scores inside one query share their average rank.
    tied = majority_vote_selection(np.array([[1.0, 2.0, 2.0, 0.0]]), fraction=0.25, percentile=50.0)
    assert tied.mean_rank[1] == tied.mean_rank[2] and tied.indices.tolist() == [1]


def test_single_query_is_top_k_by_score():
    s = np.random.default_rng(0).normal(size=(1, 50))
    sel = majority_vote_selection(s, fraction=0.1)
    assert sel.indices.tolist() == np.argsort(-s[0])[:5].tolist()
    assert majority_vote_selection(s, fraction=0.001).k == 1  # at least one clip


def test_reweight_floors_and_prune_negative():
    scores = np.array([[5, 4, 3, 2, 1], [1, 5, 4, 3, 2], [4, 1, 5, 3, 2]], dtype=float)
    sel = majority_vote_selection(scores, fraction=0.4, percentile=50.0)
    w = reweight(sel, mode="votes", floor=0.1)
    assert np.allclose(w, [1, 1, 1, 0.1, 0.1])
    z = reweight(scores, mode="zscore", floor=0.05)
    assert z.min() == pytest.approx(0.05) and z.max() == pytest.approx(1.0) and (z > 0).all()
    assert np.allclose(reweight(np.zeros((2, 4)), mode="zscore"), 1.0)
    with pytest.raises(ConfigError, match="floor"):
        reweight(sel, floor=0.0)
    assert prune_negative(np.array([[0.2, -0.5, 0.0], [-0.1, 0.1, 0.0]])).tolist() == [0, 2]


def test_roc_auc_known_cases():
    labels = [0, 0, 1, 1]
    assert roc_auc([0.1, 0.2, 0.8, 0.9], labels) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], labels) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], labels) == 0.5
    rng = np.random.default_rng(1)
    s, y = rng.integers(0, 5, 400).astype(float), rng.integers(0, 2, 400)
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert roc_auc(s, y) == pytest.approx(brute)
    assert abs(roc_auc(rng.normal(size=2000), rng.integers(0, 2, 2000)) - 0.5) < 0.05
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc([1.0, 2.0], [1, 1])


def test_spearman_and_selection_report():
    a = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    b = np.array([10.0, 20.0, 30.0, 30.0, 1.0])
    ra, rb = np.array([1, 2.5, 2.5, 4, 5]), np.array([2, 3, 4.5, 4.5, 1])
    assert spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    scores = np.random.default_rng(2).normal(size=(4, 30))
    sel = majority_vote_selection(scores, fraction=0.2)
    length = sel.mean_score * 2 + 1  # monotone in the mean score
    report = selection_report(sel, {"length": length, "coverage": np.ones(30)})
    assert sum(report["vote_histogram"]) == 30 and len(report["vote_histogram"]) == 5
    assert report["covariates"]["length"]["spearman_with_mean_score"] == pytest.approx(1.0)
    assert report["covariates"]["coverage"]["spearman_with_mean_score"] is None
    json.dumps(report, allow_nan=False)


# ------------------------------------------------------------------------------------- Selection (modes)

def _scores_for_modes() -> np.ndarray:
    # 2 queries x 5 clips; clip 3 scores below zero on average, clip 1 highest
    return np.array([[0.1, 0.9, 0.4, -0.6, 0.2],
                     [0.3, 0.7, 0.5, -0.2, -0.1]])


def test_selection_modes_keep_what_each_mode_promises():
    from motionguide.motive import Selection

    ids = ["a", "b", "c", "d", "e"]
    scores = _scores_for_modes()
    filtered, vote = Selection.from_scores(scores, ids, ["q0", "q1"], mode="filter", fraction=0.4, percentile=50.0)
    # by hand: per-query medians 0.2 and 0.3; votes a0 b2 c2 d0 e0; b beats c on mean rank -> keep b, c
    assert filtered.selected_ids == ["b", "c"] and filtered.weights is None
    assert vote.votes.tolist() == [0, 2, 2, 0, 0]
    pruned, _ = Selection.from_scores(scores, ids, mode="prune-negative", fraction=0.4, percentile=50.0)
    assert pruned.selected_ids == ["a", "b", "c", "e"]  # mean scores 0.2, 0.8, 0.45, -0.4, 0.05
    weighted, _ = Selection.from_scores(scores, ids, mode="reweight", fraction=0.4, percentile=50.0, floor=0.1)
    assert weighted.selected_ids == ids
    np.testing.assert_allclose(weighted.weights, [0.1, 1.0, 1.0, 0.1, 0.1], rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="unknown curation mode 'best'.*filter, reweight, prune-negative"):
        Selection.from_scores(scores, ids, mode="best")
    with pytest.raises(ConfigError, match="unknown reweight mode"):
        Selection.from_scores(scores, ids, mode="reweight", reweight_mode="softmax")


def test_selection_maps_onto_a_dataset_in_any_order():
    from motionguide.motive import Selection

    ids = ["a", "b", "c", "d", "e"]
    users = ["e", "x", "c", "b", "a"]  # the user's own order, with a clip the pass never saw and one missing
    filtered, _ = Selection.from_scores(_scores_for_modes(), ids, mode="filter", fraction=0.4, percentile=50.0)
    assert filtered.indices_for(users) == ([3, 2], None)  # b, c: the selection's order, the dataset's indices
    weighted, _ = Selection.from_scores(_scores_for_modes(), ids, mode="reweight", percentile=50.0, floor=0.1)
    indices, weights = weighted.indices_for(users)
    assert indices == [4, 3, 2, 0] and weighted.missing_from(users) == ["d"]
    np.testing.assert_allclose(weights, [0.1, 1.0, 1.0, 0.1], rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="shares no clip id"):
        filtered.indices_for(["x", "y"])


def test_selection_saves_and_loads_the_same_content(tmp_path):
    from motionguide.motive import CuratedDataset, Selection

    made, _ = Selection.from_scores(_scores_for_modes(), ["a", "b", "c", "d", "e"], ["q0", "q1"],
                                    mode="reweight", fraction=0.4, percentile=50.0)
    made.details = {"config": {"dim": 4}, "counts": {"train": {"featurised": 5}}, "ranking": ["b", "c"],
                    "votes": [0, 2, 2, 0, 0]}
    path = made.save(tmp_path)
    assert path == tmp_path / "selection.json" and not list(tmp_path.glob("*.tmp"))
    saved = json.loads(path.read_text())
    assert list(saved) == ["method", "mode", "fraction", "percentile", "tie_rule", "config", "counts", "train_ids",
                           "query_ids", "selected_ids", "weights", "ranking", "votes"]
    loaded = Selection.load(tmp_path)
    assert loaded == made and loaded.to_dict() == saved
    assert loaded.made_with("reweight", 0.9) and not loaded.made_with("filter", 0.4)  # reweight does not cut
    with pytest.raises(ConfigError, match="made with mode reweight.*--mode filter --fraction 0.4"):
        loaded.check_made_with("filter", 0.4, path)
    curated = CuratedDataset(["A", "B", "C", "D", "E"], path, ids=["a", "b", "c", "d", "e"])
    assert len(curated) == 5 and curated.weights == made.weights
    with pytest.raises(ConfigError, match="no Motive selection"):
        Selection.load(tmp_path / "elsewhere")


def test_the_curation_modes_are_named_in_one_module_only():
    """The selection module is the only one that compares against a mode name (issue 14: it was nine places)."""
    import re
    from pathlib import Path

    import motionguide.motive as motive

    package = Path(motive.__file__).parent
    comparison = re.compile(r"""(==|!=|\bin)\s*\(?[^#\n]*["'](filter|reweight|prune-negative)["']""")
    offenders = [f"{path.name}:{n}" for path in sorted(package.glob("*.py")) if path.name != "selection.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if comparison.search(line)]
    assert offenders == []
    assert comparison.search('    if mode == "reweight":')  # the pattern does find a mode check
