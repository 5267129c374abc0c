"""bench/active_vs_grid.py's random designs (`--random-samples`): each spends the fraction
asked of the grid's compute on the study's own seed runs plus random picks, and the share
that reaches the grid's error leaves out studies whose grid has no estimate."""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path

import pytest

from workers.simulated import TrueLaw

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("active_vs_grid", BENCH / "active_vs_grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_designs_share_the_seed_runs_and_differ_after_them(bench, tmp_path):
    law, grid_flops = TrueLaw.drawn(0), 1.3e21
    made = [
        bench.random_design(
            str(tmp_path / f"{j}-{again}"), law, grid_flops, 0.1, j, 0, "chinchilla"
        )
        for j, again in ((0, 0), (1, 0), (0, 1))
    ]
    rounds = [[set(r.run_ids) for r in study.rounds] for study in made]
    assert all(len(r) == 2 for r in rounds)  # the seed runs, then one round of picks
    assert rounds[0][0] == rounds[1][0] == rounds[2][0]
    assert rounds[0][1] != rounds[1][1]  # another design
    assert rounds[0][1] == rounds[2][1]  # the same one again for the same j
    for study in made:
        assert 0.09 < study.ledger.spent_flops / grid_flops <= 0.1


def test_reach_leaves_out_studies_whose_grid_has_no_estimate(bench, capsys):
    def errs(*values):
        return [{"loss_opt": v, "n_opt": v} for v in values]

    samples = [errs(0.01, 0.05), errs(0.01, 0.01)]
    grid = {"loss_opt": [0.02, math.inf], "n_opt": [0.02, math.inf]}
    curve = [[(0.05, 0.03), (0.2, 0.01)], [(0.05, 0.04)]]
    curves = {("active", q): {q: curve} for q in ("loss_opt", "n_opt")}
    args = argparse.Namespace(sample_frac=0.1, random_samples=2)
    bench.print_reach(samples, grid, curves, args)
    out = capsys.readouterr().out
    # Of the first study's two designs, one is under its grid's 2%; the second study's
    # grid gave no estimate, so its designs count for nothing.
    assert "| those at or under their study's grid error | 50% (1 of 2) |" in out
    assert "| the best design of each study, in hindsight: median | 1.00% |" in out
    assert "| active aimed at the quantity, at 0.10 of G: median | 3.50% |" in out
