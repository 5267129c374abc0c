"""Fit weights are precision weights: a run of weight w has log-loss noise sigma^2 / w.

A run stopped early (orchestrator/adaptive/early_stop.py) enters the study's fit with
its predicted final loss and a weight below 1. It is still one run: the degrees of
freedom and the noise estimate count runs, and the weights only say how much each is
trusted, so the noise reported is that of one measured run (weight 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.laws import Chinchilla
from tests.orchestrator.laws.test_prediction import GRID_D, GRID_N, chinchilla_truth

SIGMA = 0.01  # std of log loss of a measured run (weight 1)
# Every other run stopped early and predicted four times as noisily as a measured run.
WEIGHTS = np.where(np.arange(GRID_N.size) % 2 == 0, 1.0, 0.25)


def _losses(seed: int, weights: np.ndarray) -> np.ndarray:
    """Losses on the grid whose log noise has variance SIGMA^2 / w (one draw per seed)."""
    z = np.random.default_rng(seed).standard_normal(GRID_N.size)
    return chinchilla_truth(GRID_N, GRID_D) * np.exp(SIGMA / np.sqrt(weights) * z)


def test_runs_weighing_less_than_one_still_count_as_runs_in_the_degrees_of_freedom():
    law = Chinchilla(n_refine=8).fit(GRID_N, GRID_D, _losses(0, WEIGHTS), weights=WEIGHTS)
    assert law.dof_ == GRID_N.size - 5  # not sum(w) - 5 = 13.75
    assert not any("observations for" in w for w in law.warnings_)


def test_noise_of_a_measured_run_is_estimated_alike_with_precision_weights():
    # The same standard normal draws, scaled by 1 / sqrt(w) or not: with precision
    # weights the estimated noise of a measured run is what it is without them (over 12
    # seeds: a ratio of 0.98 in the mean sigma^2; weights counted as multiplicities gave
    # 1.68, from dividing sum w r^2 by sum(w) - p and a median of unscaled |r|).
    weighted, plain = [], []
    for seed in range(12):
        law = Chinchilla(n_refine=8).fit(GRID_N, GRID_D, _losses(seed, WEIGHTS), weights=WEIGHTS)
        weighted.append(law.noise_**2)
        ones = np.ones(GRID_N.size)
        plain.append(Chinchilla(n_refine=8).fit(GRID_N, GRID_D, _losses(seed, ones)).noise_ ** 2)
    assert np.mean(weighted) / np.mean(plain) == pytest.approx(1.0, abs=0.15)


def test_scaling_every_weight_by_one_factor_leaves_the_intervals_unchanged():
    # Only relative precision is identified: weights c w say the same about the
    # parameters as w, and a measured run's noise (weight 1) scales by sqrt(c).
    loss = _losses(1, WEIGHTS)
    law = Chinchilla(n_refine=8).fit(GRID_N, GRID_D, loss, weights=WEIGHTS)
    half = Chinchilla(n_refine=8).fit(GRID_N, GRID_D, loss, weights=0.5 * WEIGHTS)
    assert half.dof_ == law.dof_
    np.testing.assert_allclose(half.cov_, law.cov_, rtol=1e-6)
    assert half.noise_ == pytest.approx(np.sqrt(0.5) * law.noise_, rel=1e-9)
    ours, theirs = half.predict(2e9, 8e10, level=0.9), law.predict(2e9, 8e10, level=0.9)
    assert (ours.lo, ours.hi) == pytest.approx((theirs.lo, theirs.hi), rel=1e-6)


def test_unit_weights_give_exactly_the_unweighted_fit():
    loss = _losses(2, np.ones(GRID_N.size))
    plain = Chinchilla(n_refine=8).fit(GRID_N, GRID_D, loss)
    ones = Chinchilla(n_refine=8).fit(GRID_N, GRID_D, loss, weights=np.ones(GRID_N.size))
    assert ones.params == plain.params
    np.testing.assert_array_equal(ones.cov_, plain.cov_)
    assert ones.dof_ == plain.dof_ and ones.noise_ == plain.noise_


def test_a_run_of_weight_zero_is_left_out():
    loss = _losses(3, WEIGHTS)
    keep = np.arange(GRID_N.size) != 7
    weights = np.where(keep, WEIGHTS, 0.0)
    zero = Chinchilla(n_refine=8).fit(GRID_N, GRID_D, loss, weights=weights)
    left_out = Chinchilla(n_refine=8).fit(
        GRID_N[keep], GRID_D[keep], loss[keep], weights=WEIGHTS[keep]
    )
    assert zero.dof_ == left_out.dof_ == keep.sum() - 5
    assert zero.noise_ == pytest.approx(left_out.noise_, rel=1e-6)
    np.testing.assert_allclose(zero.cov_, left_out.cov_, rtol=1e-4)
