"""The Motive turn-curation diagnosis (benchmarks/teach_turn_motive_diagnose.py) reads planted effects back: on
synthetic (query, clip) scores built from a known colour effect and a known turn effect, its least-squares
effects recover both, precision / recall recount the planted selection, and a score that only follows colour
ranks turns at chance among the query's look-alikes."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def diag():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("teach_turn_motive_diagnose",
                                                      BENCHMARKS / "teach_turn_motive_diagnose.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def synthetic(n: int = 400, q: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    colours, shapes = np.array(["red", "blue"]), np.array(["circle", "square"])
    turn = rng.random(n) < 0.2
    clips = {"colour": colours[rng.integers(0, 2, n)], "shape": shapes[rng.integers(0, 2, n)],
             "turn": turn, "clean_turn": turn & (rng.random(n) < 0.8),
             "pair": np.where(turn, "right then up", ""), "caption_turn": turn.copy(),
             "quick": rng.random(n) < 0.5, "defect": np.where(rng.random(n) < 0.1, "static", "none")}
    queries = {"colour": np.array(["red", "red", "blue", "red"]), "shape": np.array(["circle"] * 4),
               "pair": np.array(["left then down"] * 4)}
    return rng, clips, queries


def test_the_fit_recovers_a_planted_colour_and_turn_effect(diag):
    rng, clips, queries = synthetic()
    same_colour = queries["colour"][:, None] == clips["colour"][None]
    scores = 0.2 * same_colour + 0.05 * clips["turn"][None] + rng.normal(0, 0.01, same_colour.shape)
    out = diag.diagnose(scores, clips, queries)
    assert out["coefficients"]["same colour as the query"] == pytest.approx(0.2, abs=0.005)
    assert out["coefficients"]["shows a turn"] + out["coefficients"]["caption says turn"] == pytest.approx(
        0.05, abs=0.005)  # the two indicators are equal here, so only their sum is identified
    assert out["coefficients"]["same shape as the query"] == pytest.approx(0.0, abs=0.005)
    assert out["r2"] > 0.9


def test_a_colour_only_score_ranks_turns_at_chance_among_look_alikes(diag):
    rng, clips, queries = synthetic(n=2000)
    same_colour = queries["colour"][:, None] == clips["colour"][None]
    scores = 0.2 * same_colour + rng.normal(0, 0.01, same_colour.shape)
    out = diag.diagnose(scores, clips, queries)
    assert out["auc_turn_within_look_alikes"] == pytest.approx(0.5, abs=0.06)
    metrics = diag.selection_metrics(scores, clips, 0.1, "mean", "red")
    assert metrics["top_query_colour_share"] == 1.0  # three of four queries are red: the top 10% is red


def test_precision_and_recall_recount_the_kept_clips(diag):
    _, clips, _ = synthetic()
    scores = np.tile(clips["clean_turn"].astype(float), (3, 1)) + np.linspace(0, 1e-3, clips["turn"].size)[None]
    k = int(round(0.1 * clips["turn"].size))
    kept = np.argsort(-scores.mean(axis=0), kind="stable")[:k]
    for rule in ("votes", "mean"):
        m = diag.selection_metrics(scores, clips, 0.1, rule, "red")
        assert m["selected"] == k
        assert m["clean_turns"] == int(clips["clean_turn"][kept].sum())
        assert m["recall"] == pytest.approx(m["clean_turns"] / clips["clean_turn"].sum())
        assert m["auc_clean_turn"] == pytest.approx(1.0)
