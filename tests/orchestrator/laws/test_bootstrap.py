"""Bootstrap ensembles: the Epoch oracle, a real search per resample, coverage of a truth."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.laws import BootstrapFit, Chinchilla, FitError
from orchestrator.laws.intervals import percentile_bounds

# Besiroglu et al. (2024), 95% bootstrap intervals (4,000 resamples of the 240 runs).
EPOCH_INTERVALS = {"alpha": (0.317, 0.373), "beta": (0.331, 0.415), "E": (1.769, 1.871)}


@pytest.fixture(scope="module")
def epoch_bootstrap(epoch_runs) -> BootstrapFit:
    return Chinchilla().fit(*epoch_runs).bootstrap(1000, seed=0)


@pytest.mark.slow
def test_bootstrap_of_epoch_runs_matches_published_95pct_intervals(epoch_bootstrap):
    intervals = epoch_bootstrap.param_intervals(level=0.95)
    for name, (lo, hi) in EPOCH_INTERVALS.items():
        assert intervals[name].lo == pytest.approx(lo, abs=0.01), name
        assert intervals[name].hi == pytest.approx(hi, abs=0.01), name
    assert epoch_bootstrap.n_resamples_ == 1000 and epoch_bootstrap.n_failed_ == 0


@pytest.mark.slow
def test_each_resample_reaches_what_an_exhaustive_search_finds(epoch_runs, epoch_bootstrap):
    # The full 4,500-start grid, 64 refined starts and an L-BFGS-B polish on five
    # resamples: the bootstrap's cheaper per-resample search must do as well.
    n, d, loss = epoch_runs
    for i in range(5):
        weights = epoch_bootstrap.resample_weights_[i]
        exhaustive = Chinchilla(n_refine=64).fit(n, d, loss, weights=weights)
        assert epoch_bootstrap.objective_samples_[i] <= exhaustive.objective_ * (1 + 1e-7)


@pytest.mark.slow
def test_resamples_leave_the_full_data_optimum(epoch_bootstrap):
    # L-BFGS-B from the full-data optimum barely moves on a resample; a real search does.
    alpha = epoch_bootstrap.param_samples["alpha"]
    assert np.std(alpha) > 0.01
    assert np.mean(np.abs(alpha - epoch_bootstrap.params["alpha"]) < 1e-4) < 0.05


@pytest.mark.slow
def test_bootstrap_frontier_intervals_bracket_the_point_fit(epoch_bootstrap):
    frontier = epoch_bootstrap.frontier([1e21, 1e24], level=0.9)
    for pred in (frontier.n_opt, frontier.d_opt, frontier.loss_opt):
        assert np.all(pred.lo < pred.mean) and np.all(pred.mean < pred.hi)
    # Farther extrapolation, wider band.
    assert frontier.n_opt.hi[1] / frontier.n_opt.lo[1] > frontier.n_opt.hi[0] / frontier.n_opt.lo[0]
    loss = epoch_bootstrap.predict(1e10, 2e11, level=0.9)
    assert loss.lo < loss.mean < loss.hi


@pytest.mark.slow
def test_bootstrap_90pct_intervals_cover_a_simulated_truth_80_to_97pct(simulated_runs, hoffmann):
    # 100 datasets of 49 runs with 1 % lognormal noise, 200 resamples each. Coverage of
    # a nominal 90 % interval over 100 datasets has a binomial sd of 3 points, so
    # 80-97 % accepts a calibrated bootstrap and rejects collapsed or bloated intervals.
    repetitions, resamples = 100, 200
    covered = {name: 0 for name in ("E", "alpha", "beta", "n_opt")}
    c_target = 1e23
    true_n_opt = hoffmann.n_opt(c_target)
    for seed in range(repetitions):
        ensemble = Chinchilla().fit(*simulated_runs(seed=seed)).bootstrap(resamples, seed=seed)
        intervals = ensemble.param_intervals(level=0.9)
        for name in ("E", "alpha", "beta"):
            covered[name] += intervals[name].lo <= hoffmann.params[name] <= intervals[name].hi
        n_opt = ensemble.n_opt(c_target, level=0.9)
        covered["n_opt"] += n_opt.lo <= true_n_opt <= n_opt.hi
    rates = {name: hits / repetitions for name, hits in covered.items()}
    assert all(0.80 <= rate <= 0.97 for rate in rates.values()), rates


def test_bootstrap_is_reproducible_from_its_seed(simulated_runs):
    law = Chinchilla().fit(*simulated_runs(seed=1))
    first, again = law.bootstrap(20, seed=7), law.bootstrap(20, seed=7)
    other = law.bootstrap(20, seed=8)
    np.testing.assert_array_equal(first.theta_samples_, again.theta_samples_)
    assert not np.array_equal(first.theta_samples_, other.theta_samples_)
    generator = law.bootstrap(20, np.random.default_rng(7))
    np.testing.assert_array_equal(first.theta_samples_, generator.theta_samples_)


def test_bootstrap_reports_point_values_of_the_full_data_fit(simulated_runs):
    law = Chinchilla().fit(*simulated_runs(seed=2))
    ensemble = law.bootstrap(30, seed=0)
    assert ensemble.params == law.params
    assert ensemble.n_opt(1e22).mean == law.n_opt(1e22).mean


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bootstrap_rejects_a_resample_count_that_is_not_a_positive_integer(simulated_runs, n):
    law = Chinchilla().fit(*simulated_runs(seed=2))
    with pytest.raises(FitError, match="positive integer"):
        law.bootstrap(n, seed=0)


def test_percentile_bounds_count_infinite_frontier_draws_and_leave_out_unknown_ones():
    rng = np.random.default_rng(0)
    finite = rng.normal(size=(200, 3))
    lo, hi = percentile_bounds(finite, 0.9)
    np.testing.assert_allclose([lo, hi], np.quantile(finite, [0.05, 0.95], axis=0))
    # 10 of 100 refits with their optimum beyond the search's upper end: the 95th
    # percentile lies among them; the 5th is the finite draws' own.
    draws = np.concatenate([np.linspace(1.0, 2.0, 90), np.full(10, np.inf)])[:, None]
    lo, hi = percentile_bounds(draws, 0.9, infinite=True)
    assert hi[0] == np.inf and lo[0] == pytest.approx(np.quantile(draws[:90], 0.05 * 99 / 89))
    # Predictions leave them out (a refit whose loss overflows), as before.
    lo, hi = percentile_bounds(draws, 0.9)
    np.testing.assert_allclose([lo[0], hi[0]], np.quantile(draws[:90], [0.05, 0.95]))
    # Unknown draws (NaN) are left out either way; none known at all: NaN.
    lo, hi = percentile_bounds(np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, np.nan]]), 0.5)
    assert (lo[0], hi[0]) == (1.5, 2.5) and np.isnan([lo[1], hi[1]]).all()
    # One infinite draw below: the lower bound is -inf once the percentile reaches it.
    lo, _ = percentile_bounds(np.array([[-np.inf], [0.0], [1.0], [2.0]]), 0.9, infinite=True)
    assert lo[0] == -np.inf
