"""Approach 2 against a simulated truth: which of its known biases show up, and how much."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.laws import FitError, fit_isoflop
from orchestrator.laws.isoflop import compute_levels

LEVELS = np.logspace(18, 21, 5)


def grid(hoffmann, *, half_decades=1.0, drift_decades=0.0, per_level=9):
    """IsoFLOP runs: centres slide from the true optimum to drift_decades below it."""
    ns, ds = [], []
    for i, c in enumerate(LEVELS):
        centre = hoffmann.n_opt(c) * 10 ** (-drift_decades * i / (len(LEVELS) - 1))
        n = centre * np.logspace(-half_decades, half_decades, per_level)
        ns.append(n)
        ds.append(c / (6 * n))
    n, d = np.concatenate(ns), np.concatenate(ds)
    return n, d, hoffmann.loss(n, d)


def predicted_vertex_shift(alpha, beta, half_decades, per_level=9):
    """u0: the least-squares parabola's vertex on the true IsoFLOP profile (see isoflop.py)."""
    u = np.log(10) * np.linspace(-half_decades, half_decades, per_level)
    profile = beta * np.exp(-alpha * u) + alpha * np.exp(beta * u)
    c2, c1, _ = np.polyfit(u, profile, 2)
    return -c1 / (2 * c2)


@pytest.mark.parametrize("half_decades", [0.5, 1.0, 1.5])
def test_centred_grids_leave_the_exponent_unbiased_but_shift_n_opt_by_the_skew(
    hoffmann, half_decades
):
    fit = fit_isoflop(*grid(hoffmann, half_decades=half_decades))
    alpha, beta = hoffmann.params["alpha"], hoffmann.params["beta"]
    assert fit.n_exponent == pytest.approx(beta / (alpha + beta), abs=1e-9)
    assert fit.d_exponent == pytest.approx(alpha / (alpha + beta), abs=1e-9)
    u0 = predicted_vertex_shift(alpha, beta, half_decades)
    ratio = fit.n_opt(1e20).mean / hoffmann.n_opt(1e20)
    assert np.log(ratio) == pytest.approx(u0, abs=1e-9)
    # The figures quoted in the isoflop module docstring.
    assert ratio - 1 == pytest.approx({0.5: 0.010, 1.0: 0.040, 1.5: 0.092}[half_decades], abs=0.001)


def test_grids_that_drift_off_the_optimum_bias_the_exponent(hoffmann):
    alpha, beta = hoffmann.params["alpha"], hoffmann.params["beta"]
    fit = fit_isoflop(*grid(hoffmann, drift_decades=np.log10(3)))
    bias = fit.n_exponent - beta / (alpha + beta)
    assert bias == pytest.approx(-0.008, abs=0.001)


def test_levels_whose_minimum_lies_outside_the_grid_are_left_out(hoffmann):
    n, d, loss = grid(hoffmann)
    # Replace the top level by runs all smaller than its optimum.
    top = 6 * n * d > 5e20
    c = LEVELS[-1]
    small = hoffmann.n_opt(c) * np.logspace(-2.5, -1.5, top.sum())
    n[top], d[top] = small, c / (6 * small)
    loss[top] = hoffmann.loss(n[top], d[top])
    fit = fit_isoflop(n, d, loss)
    assert [p.used for p in fit.profiles] == [True] * 4 + [False]
    assert "outside the sampled N" in fit.profiles[-1].reason


def test_noisy_profiles_give_intervals_that_contain_the_noiseless_answer(hoffmann):
    n, d, loss = grid(hoffmann)
    rng = np.random.default_rng(0)
    noisy = fit_isoflop(n, d, loss * np.exp(0.003 * rng.standard_normal(loss.size)))
    clean = fit_isoflop(n, d, loss)
    pred = noisy.n_opt(1e22, level=0.95)
    assert pred.lo < clean.n_opt(1e22).mean < pred.hi


def test_one_compute_level_is_not_enough(hoffmann):
    n = hoffmann.n_opt(1e20) * np.logspace(-1, 1, 9)
    with pytest.raises(FitError, match="at least 2 compute levels"):
        fit_isoflop(n, 1e20 / (6 * n), hoffmann.loss(n, 1e20 / (6 * n)))


def test_continuous_compute_is_not_chained_into_one_level():
    # 200 runs log-uniform over two decades: every neighbour gap is tiny.
    flops = np.geomspace(1e18, 1e20, 200)
    levels = compute_levels(flops, tol_dex=0.05)
    spans = [np.log10(flops[m].max() / flops[m].min()) for m in levels]
    assert len(levels) >= 10 and max(spans) <= 0.1 + 1e-12
    assert sorted(np.concatenate(levels).tolist()) == list(range(200))


def test_an_isoflop_grid_keeps_one_level_per_nominal_budget():
    flops = np.concatenate([c * (1 + 0.01 * np.arange(-3, 4)) for c in (1e18, 3e18, 1e19)])
    assert [len(m) for m in compute_levels(flops, tol_dex=0.05)] == [7, 7, 7]
