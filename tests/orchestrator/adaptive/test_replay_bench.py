"""bench/replay_real.py's comparison of active with random: seeds that chose the same
runs are one observation, not one per seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from orchestrator.adaptive.replay import ReplayOutcome, TargetScore
from orchestrator.laws import Prediction

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports its neighbour fit_speed
    spec = importlib.util.spec_from_file_location("replay_real", BENCH / "replay_real.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outcome(run_ids: tuple[str, ...], predicted: float) -> ReplayOutcome:
    score = TargetScore(
        1e9, 2e10, 3.0, Prediction(predicted, predicted - 0.1, predicted + 0.1, 0.9)
    )
    return ReplayOutcome(
        strategy="s",
        run_ids=run_ids,
        adaptive_rounds=1,
        spent_flops=1.0,
        spent_frac=0.1,
        stop_reason="budget",
        fit="chinchilla",
        fit_note="",
        scores=(score,),
    )


def test_a_deterministic_strategy_counts_once_against_random(bench):
    # Five seeds of a strategy that draws nothing: the same runs, the same 5% error.
    herded = [_outcome(("a", "b", "c"), 3.15) for _ in range(5)]
    # Random's five seeds chose five samples, each with a smaller error.
    drawn = [_outcome((f"r{i}", "b"), 3.0 + 0.02 * (i + 1)) for i in range(5)]
    active, random = bench.distinct(herded), bench.distinct(drawn)
    assert active == [pytest.approx(5.0)] and len(random) == 5
    # One draw above five others: its rank among six, 1/6 (counted five times: 1/252).
    assert bench.worse_p(active, random) == pytest.approx(1 / 6)
    assert bench.worse_p(active * 5, random) == pytest.approx(1 / 252)


def test_seeds_that_chose_the_same_runs_in_another_order_are_one_observation(bench):
    outcomes = [_outcome(("a", "b"), 3.3), _outcome(("b", "a"), 3.3), _outcome(("a", "c"), 3.6)]
    assert sorted(bench.distinct(outcomes)) == [pytest.approx(10.0), pytest.approx(20.0)]


@pytest.mark.slow
def test_random_reach_counts_the_random_subsets_at_or_below_the_pools_error(bench, capsys):
    # Gadre et al.'s C4 sweep, its 3 largest runs the targets; two random subsets at 5%.
    sweep = bench.load("c4")
    args = type("Args", (), {"random_samples": 2, "jobs": 1})()
    bench.print_random_reach(sweep, sweep.largest(3), 50.0, args)
    everyone = capsys.readouterr().out
    assert "Of 2 random subsets at 5% of the pool (seeds 1000-1001), 2 (100%) reach" in everyone
    best = float(everyone.split("best ")[1].rstrip(".\n").rstrip("%"))
    # The same subsets again, the bar at the better one's error (printed to 0.01%, so
    # half of that above it): only that one reaches it.
    bench.print_random_reach(sweep, sweep.largest(3), best + 0.005, args)
    assert "1 (50%) reach" in capsys.readouterr().out


def test_its_help_prints(bench, capsys):
    # A bare % in a help string (the goal's "5%") made argparse fail on --help.
    with pytest.raises(SystemExit) as done:
        bench.main(["--help"])
    words = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert done.value.code == 0 and "random subsets at 5% of each pool" in words
