"""Prediction intervals for new runs: seed noise, parameters and the form's error."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.laws import Chinchilla, FitError
from orchestrator.laws.prediction import decades_beyond

GRID_N = np.repeat(np.geomspace(1e7, 1e9, 6), 5)
GRID_D = np.tile(np.geomspace(1e9, 1e11, 5), 6)
NEW_N = np.array([2e9, 4e9, 8e9])  # beyond the grid's compute, 40 tokens per parameter
NEW_D = 40 * NEW_N


def chinchilla_truth(n, d):
    return 1.8 + 400 * n**-0.34 + 400 * d**-0.28


def bent_truth(n, d):
    """Chinchilla's surface with an N exponent that grows with N: not Chinchilla's form."""
    return 1.8 + 400 * n ** -(0.34 + 0.04 * np.log10(n / 1e8)) + 400 * d**-0.28


def _coverage(truth, seeds: int, interval: str) -> float:
    hits = total = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        loss = truth(GRID_N, GRID_D) * np.exp(0.01 * rng.standard_normal(GRID_N.size))
        law = Chinchilla(n_refine=8).fit(GRID_N, GRID_D, loss)
        new = truth(NEW_N, NEW_D) * np.exp(0.01 * rng.standard_normal(NEW_N.size))
        pred = law.predict(NEW_N, NEW_D, level=0.9, interval=interval)
        hits += int(np.sum((pred.lo <= new) & (new <= pred.hi)))
        total += new.size
    return hits / total


@pytest.mark.slow
def test_90pct_prediction_intervals_cover_85_to_95pct_of_new_runs_when_the_form_is_right():
    # 100 seeded studies x 3 new runs at 2-8x the largest compute (measured: 0.89; the
    # confidence interval of the curve covers 0.74 of the same runs; with the former,
    # upward-biased noise scale, 0.92 and 0.78, see `covariance.residual_scale`).
    assert 0.85 <= _coverage(chinchilla_truth, 100, "prediction") <= 0.95


def test_under_a_wrong_form_prediction_intervals_are_wider_and_cover_more():
    # Measured over 20 seeded studies: 0.77 covered by the 90% prediction interval, 0.60
    # by the curve's confidence interval (the form's error is only partly calibrated).
    rng = np.random.default_rng(0)
    loss = bent_truth(GRID_N, GRID_D) * np.exp(0.01 * rng.standard_normal(GRID_N.size))
    law = Chinchilla().fit(GRID_N, GRID_D, loss)
    assert law.form_error_.calibrated and law.form_error_.n_origins == 5
    conf = law.predict(NEW_N, NEW_D, level=0.9)
    pred = law.predict(NEW_N, NEW_D, level=0.9, interval="prediction")
    assert np.all(pred.lo < conf.lo) and np.all(pred.hi > conf.hi)
    assert _coverage(bent_truth, 20, "prediction") > _coverage(bent_truth, 20, "confidence")


def test_inside_the_data_a_prediction_interval_is_the_curve_plus_seed_noise():
    rng = np.random.default_rng(1)
    loss = chinchilla_truth(GRID_N, GRID_D) * np.exp(0.01 * rng.standard_normal(GRID_N.size))
    law = Chinchilla().fit(GRID_N, GRID_D, loss)
    mean, se = law.log_mean_se(GRID_N[:3], GRID_D[:3])
    pred = law.predict(GRID_N[:3], GRID_D[:3], interval="prediction")
    conf = law.predict(GRID_N[:3], GRID_D[:3])
    # No extrapolation: the form's error adds nothing; the noise term is the residual scale.
    ratio = np.log(pred.hi / pred.mean) / np.log(conf.hi / conf.mean)
    np.testing.assert_allclose(ratio, np.sqrt(1 + law.noise_**2 / se**2), rtol=1e-6)
    assert 0.005 < law.noise_ < 0.02


def test_reach_is_the_decades_of_n_and_d_a_point_lacks_from_its_nearest_run():
    rng = np.random.default_rng(2)
    loss = chinchilla_truth(GRID_N, GRID_D) * np.exp(0.01 * rng.standard_normal(GRID_N.size))
    law = Chinchilla().fit(GRID_N, GRID_D, loss)
    # The largest run is (1e9, 1e11); (1e7, 1e11) is the grid's corner of small, long runs.
    n = np.array([1e10, 1e7, 1e8, 2e7])
    d = np.array([1e12, 1e12, 1e10, 1e9])
    # Above the largest run in both: its compute's decades. A small model trained 10x
    # longer than any: a decade of D, though its compute is below the largest run's.
    np.testing.assert_allclose(decades_beyond(law, n, d), [2.0, 1.0, 0.0, 0.0], atol=1e-12)
    inside = law.predict(n[2:3], d[2:3], interval="prediction")
    long = law.predict(n[1:2], d[1:2], interval="prediction")
    assert np.log(long.hi / long.lo) > np.log(inside.hi / inside.lo)


def test_reach_from_the_outermost_runs_is_the_reach_from_every_run():
    # Runs on a coarse lattice (ties in N, in D and in both) and points around them: the
    # nearest run found among the runs no other exceeds is the nearest of all.
    rng = np.random.default_rng(3)
    n = 1e7 * 10.0 ** rng.integers(0, 4, 60)
    d = 1e9 * 10.0 ** rng.integers(0, 4, 60)
    law = SimpleNamespace(flops_per_token=None, observations_=(n, d, np.ones(60), np.ones(60)))
    points_n = 1e7 * 10.0 ** rng.uniform(-1, 5, 200)
    points_d = 1e9 * 10.0 ** rng.uniform(-1, 5, 200)
    more_n = np.log10(points_n)[:, None] - np.log10(n)
    more_d = np.log10(points_d)[:, None] - np.log10(d)
    brute = (np.maximum(more_n, 0) + np.maximum(more_d, 0)).min(axis=1)
    np.testing.assert_allclose(decades_beyond(law, points_n, points_d), brute, atol=1e-12)


def test_too_few_runs_for_a_backtest_leave_the_form_error_uncalibrated():
    n, d = GRID_N[::5], GRID_D[::5]  # 6 runs: no rolling origin has 5 to fit
    law = Chinchilla().fit(n, d, chinchilla_truth(n, d))
    assert not law.form_error_.calibrated
    pred = law.predict(NEW_N, NEW_D, interval="prediction")
    assert np.all(np.isfinite(pred.lo) | np.isnan(pred.lo))


def test_an_unknown_interval_kind_is_a_fit_error():
    law = Chinchilla().fit(GRID_N, GRID_D, chinchilla_truth(GRID_N, GRID_D))
    with pytest.raises(FitError, match="interval"):
        law.predict(1e9, 1e11, interval="credible")


def test_bootstrap_prediction_intervals_are_wider_than_its_percentile_intervals():
    rng = np.random.default_rng(2)
    loss = chinchilla_truth(GRID_N, GRID_D) * np.exp(0.01 * rng.standard_normal(GRID_N.size))
    ensemble = Chinchilla().fit(GRID_N, GRID_D, loss).bootstrap(50, seed=0)
    conf = ensemble.predict(NEW_N, NEW_D, level=0.9)
    pred = ensemble.predict(NEW_N, NEW_D, level=0.9, interval="prediction")
    assert np.all(pred.lo < conf.lo) and np.all(pred.hi > conf.hi)
