"""The evidence benchmarks' interval over world seeds / pools (benchmarks/_toy_eval.t_interval): its tabled
Student t quantiles against a float64 integration of the t density, and its coverage on simulated seeds."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def toy_eval():
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("_toy_eval", BENCHMARKS / "_toy_eval.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def student_t_central_mass(q: float, df: int) -> float:
    """P(|T| <= q) for Student t with df degrees of freedom, by the trapezoid rule on its density (float64)."""
    x = np.linspace(0.0, q, 200001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    return float(2.0 * np.sum((density[1:] + density[:-1]) * np.diff(x) / 2.0))


def test_tabled_quantiles_hold_95_percent_of_the_t_distribution(toy_eval):
    for df, q in toy_eval.T975.items():
        assert student_t_central_mass(q, df) == pytest.approx(0.95, abs=5e-4), df


def test_interval_over_four_seeds_covers_the_true_mean_about_95_percent_of_the_time(toy_eval):
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(4000):
        stat = toy_eval.t_interval(rng.normal(0.3, 0.05, size=4))
        hits += stat["low"] <= 0.3 <= stat["high"]
    assert 0.935 <= hits / 4000 <= 0.965


def test_interval_between_tabled_degrees_of_freedom_is_never_narrower_than_exact(toy_eval):
    values = [0.1, 0.4, 0.2, 0.5, 0.3, 0.6, 0.2, 0.4, 0.1, 0.3, 0.5]  # 11 values: df 10 is tabled, 11 -> 10
    stat = toy_eval.t_interval(values + [0.2])
    half = (stat["high"] - stat["low"]) / 2
    sd = np.std(values + [0.2], ddof=1) / math.sqrt(12)
    assert student_t_central_mass(half / sd, 11) >= 0.95


def test_one_seed_gives_a_mean_without_an_interval_and_nans_are_dropped(toy_eval):
    one = toy_eval.t_interval([0.5, float("nan")])
    assert one["mean"] == 0.5 and one["n"] == 1 and math.isnan(one["low"]) and math.isnan(one["high"])
    assert toy_eval.fmt_interval(one) == "0.50"
    assert toy_eval.fmt_interval({"mean": 0.25, "low": 0.2, "high": 0.3}, percent=True) == "25% [20%, 30%]"
