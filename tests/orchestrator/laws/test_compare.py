"""Backtests: each form is fitted on smaller compute and scored on the largest held out."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.laws import Chinchilla, FitError, compare_forms
from orchestrator.laws.compare import backtest
from orchestrator.laws.splits import rolling_origin_splits, split_by_compute


def test_chinchilla_extrapolates_best_on_runs_from_a_law_with_irreducible_loss(simulated_runs):
    comparison = compare_forms(*simulated_runs(seed=0), forms=("kaplan", "chinchilla"))
    assert comparison.best == "chinchilla"
    by_form = {s.form: s for s in comparison.scores}
    # 1 % noise: a right form predicts held-out runs to about the noise level.
    assert by_form["chinchilla"].rmse_log_loss < 0.02
    assert by_form["kaplan"].rmse_log_loss > 2 * by_form["chinchilla"].rmse_log_loss
    assert by_form["chinchilla"].test_min_flops > by_form["chinchilla"].train_max_flops


def test_kaplan_extrapolates_best_on_runs_from_kaplans_law():
    n = np.repeat(np.geomspace(1e6, 1e10, 7), 6)
    d = np.tile(np.geomspace(1e8, 1e12, 6), 7)
    rng = np.random.default_rng(0)
    loss = ((8.8e13 / n) ** 0.8 + 5.4e13 / d) ** 0.095 * np.exp(0.002 * rng.standard_normal(42))
    assert compare_forms(n, d, loss).best == "kaplan"


def test_split_holds_out_the_top_isoflop_level(hoffmann):
    n, d = hoffmann.design()  # 7 levels of 7 runs
    (split,) = split_by_compute(6 * n * d, holdout_fraction=0.1)
    assert split.test.sum() == 7
    assert (6 * n * d)[split.test].min() > (6 * n * d)[split.train].max()


def test_split_holds_out_at_least_the_fraction_for_scattered_compute():
    flops = np.geomspace(1e18, 1e22, 100)
    (split,) = split_by_compute(flops, holdout_fraction=0.2, level_tol_dex=0.01)
    assert split.test.sum() == 20


def test_backtest_takes_any_law_factory(simulated_runs):
    n, d, loss = simulated_runs(seed=1)
    splits = split_by_compute(6 * n * d)
    (score,) = backtest(lambda: Chinchilla(n_refine=4), n, d, loss, splits=splits)
    assert score.form == "chinchilla" and score.n_test + score.n_train == n.size


def test_unknown_form_is_rejected(simulated_runs):
    with pytest.raises(FitError, match="unknown form"):
        compare_forms(*simulated_runs(seed=0), forms=("chinchilla", "gpt"))


def test_rolling_origins_hold_out_ever_less_compute_above_each_cut_off():
    flops = np.repeat([1e18, 3e18, 1e19, 3e19, 1e20], 4)
    splits = rolling_origin_splits(flops)
    # Cut-offs at 1e19 (50%, 60%) and 3e19 (70%, 80%); at 90% nothing lies above.
    assert [int(s.train.sum()) for s in splits] == [12, 16]
    for split in splits:
        assert flops[split.train].max() < flops[split.test].min()
        assert not (split.train & split.test).any() and (split.train | split.test).all()


def test_rolling_origins_need_runs_above_the_cut_off():
    with pytest.raises(FitError, match="nothing larger"):
        rolling_origin_splits(np.full(5, 1e19))
