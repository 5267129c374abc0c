"""bench/real_sweeps.py's interval scale: how much narrower (or wider) the intervals
would have to be to hold 90% of the held-out runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # it imports its sibling fit_speed
    try:
        spec = importlib.util.spec_from_file_location("real_sweeps", BENCH / "real_sweeps.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_the_scale_is_the_90th_percentile_of_error_over_half_width(bench):
    # Errors at 0.1, 0.2, ..., 1.0 of their half-widths: every run is inside, and
    # intervals 0.9 as wide would still hold 9 of the 10.
    to_edge = np.linspace(0.1, 1.0, 10)
    assert bench.interval_scale(to_edge) == pytest.approx(0.9)
    # Two runs outside their intervals (at 2 and 3 half-widths): 90% needs twice as wide.
    assert bench.interval_scale(np.append(to_edge[:8], [2.0, 3.0])) == pytest.approx(2.0)


def test_a_run_with_an_unknown_interval_counts_as_not_held(bench):
    to_edge = np.append(np.full(8, 0.5), [np.nan, np.nan])
    assert bench.interval_scale(to_edge) == np.inf


@pytest.mark.parametrize("dataset", ["rw", "owt2"])
def test_porian_et_al_sweeps_are_88_runs_at_12_budgets_with_6nd_flops(bench, dataset):
    # As bench/data/README.md describes them: D = C / 6N at each of 12 FLOP budgets.
    n, d, loss = bench.load_porian(dataset)
    assert n.size == 88 and np.all(loss > 2) and np.all(loss < 7)
    budgets = np.unique(np.round(np.log2(6 * n * d / 1.25e16), 3))
    assert np.array_equal(budgets, np.arange(12.0))


@pytest.mark.parametrize(
    ("dataset", "runs", "ladder_runs"), [("comma", 92, 7), ("dclm", 85, 0), ("nemotron", 96, 8)]
)
def test_marin_sweeps_are_their_isoflop_runs_and_the_ladders_chosen_runs(
    bench, dataset, runs, ladder_runs
):
    # As bench/data/README.md describes them: N with embeddings (156.5M at width 512),
    # IsoFLOP budgets named at a third of 6 N D, and the ladder's one run per budget.
    n, d, loss = bench.load_marin(dataset)
    assert n.size == runs and np.all((loss > 2.7) & (loss < 4.2))
    assert n.min() == 156_508_160 and n.max() < 1.2e10
    c = 6 * n * d
    assert c.max() < 1e21 and c.min() > 1e18
    assert np.sum(c > 4.1e20) == (1 if dataset == "nemotron" else 0)  # the 1e21 run
    kinds = bench.load_sweep(bench.MARIN_DATA, where={"dataset": dataset, "kind": "isoflop"})
    assert kinds.n_params.size == runs - ladder_runs


def test_the_pooled_goal_weighs_predictions_and_the_average_weighs_sweeps(bench, capsys):
    # A large sweep on target and a small one far off: pooled, the large one dominates;
    # averaged, each counts once.
    rows = {
        "large": {"held_out": 300, "mean": 1.0, "predicted": 270},
        "small": {"held_out": 100, "mean": 3.0, "predicted": 60},
    }
    bench._pooled_goal(rows)
    out = capsys.readouterr().out
    assert "2 real sweeps' 400 held-out predictions" in out
    assert "error 1.50% (goal <= 1.5%: met)" in out and "cover 82% (goal 80-95%: met)" in out
    assert "each sweep once: 2.00% (NOT met) and 75% (NOT met)" in out
