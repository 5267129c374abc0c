"""`active` under a wrong form: the misfit as a smooth discrepancy (strategies/discrepancy.py).

A cheap run far from the targets moves the form's fit by its own misfit; when the misfit
is large, it must stop looking nearly free. The rank-one updates must agree with
refitting from scratch, and the residuals' split into smooth misfit and white noise must
follow the residuals.
"""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.adaptive.strategies.active import (
    log_loss_rows,
    target_gradients,
    target_points,
)
from orchestrator.adaptive.strategies.discrepancy import (
    Discrepancy,
    FitErrorState,
    coordinates,
    learn_discrepancy,
)
from orchestrator.adaptive.targets import Target, TargetRun
from orchestrator.laws import Chinchilla
from tests.orchestrator.laws.conftest import hoffmann_loss

TARGET = Target(runs=(TargetRun(n_params=1e10, tokens=2e11),))


@pytest.fixture(scope="module")
def law():
    """A Chinchilla fit to a 3 x 3 grid of runs near 20 tokens per parameter."""
    rng = np.random.default_rng(0)
    n = np.repeat([1e8, 3e8, 1e9], 3)
    d = n * np.tile([10.0, 20.0, 40.0], 3)
    loss = hoffmann_loss(n, d) * np.exp(0.005 * rng.standard_normal(n.size))
    return Chinchilla().fit(n, d, loss)


def _state(law, disc: Discrepancy, cand_n, cand_d, extra=None) -> FitErrorState:
    """The fit's state with candidates (cand_n, cand_d); `extra`: a candidate index
    taken as a fitted run from the start."""
    n, d, _, w = law.observations_
    _, jac = law.form_.log_loss(law.theta_[None], jac=True)
    x_o, j_o = coordinates(n, d), jac[0]
    rows = log_loss_rows(law, cand_n, cand_d, law.theta_)
    if extra is not None:
        x_o = np.vstack([x_o, coordinates(cand_n[extra : extra + 1], cand_d[extra : extra + 1])])
        j_o, w = np.vstack([j_o, rows[extra]]), np.append(w, 1.0)
    x_t, mask = target_points(law, TARGET)
    return FitErrorState(
        disc,
        (x_o, w, np.diag(disc.noise_sd**2 / w), j_o),
        (coordinates(cand_n, cand_d), rows),
        (x_t, mask, target_gradients(law, TARGET)),
        1e-8 * np.eye(law.theta_.size),
    )


def _falls(law, sd: float) -> np.ndarray:
    """Relative fall of the target's MSE from adding each of (corner, near-target run)."""
    disc = Discrepancy(sd=sd, length_n=1.0, length_r=1.0, noise_sd=0.005)
    # A tiny, heavily under-trained run (0.5 tokens per parameter, far from the target in
    # both coordinates) and a run near the target (3e9 parameters, 20 tokens each).
    state = _state(law, disc, [3e7, 3e9], [1.5e7, 6e10])
    before = state.mse()
    return (before - state.mse_after(np.full(2, 0.005**2)))[:, 0] / before[0]


def test_a_far_corner_run_is_worth_less_as_the_misfit_grows(law):
    # The fit is on 9 runs, so any run still narrows it; but the corner's share of what
    # the near run gives shrinks as the misfit grows, since its own discrepancy moves the
    # fit while the near run's discrepancy is the target's.
    falls = np.array([_falls(law, sd) for sd in (1e-4, 0.01, 0.02, 0.05)])  # (4, 2)
    assert np.all(np.diff(falls[:, 0]) < 0)  # the corner is worth less at each step
    assert np.all(np.diff(falls[:, 1]) > 0)  # the near run a little more
    share = falls[:, 0] / falls[:, 1]
    assert share[-1] < 0.6 * share[0]


def test_adding_a_candidate_matches_rebuilding_the_state_with_it(law):
    disc = Discrepancy(sd=0.01, length_n=2.0, length_r=1.0, noise_sd=0.004)
    cand_n, cand_d = np.array([5e7, 2e9, 4e9]), np.array([2e9, 4e10, 2e10])
    state = _state(law, disc, cand_n, cand_d)
    predicted = state.mse_after(np.full(3, disc.noise_sd**2))  # (3, 1)
    state.add(1, disc.noise_sd**2)
    rebuilt = _state(law, disc, cand_n, cand_d, extra=1)
    np.testing.assert_allclose(state.mse(), predicted[1], rtol=1e-8)
    np.testing.assert_allclose(rebuilt.mse(), predicted[1], rtol=1e-8)
    # and the others' MSE after a second run, from the updated state or the rebuilt one
    np.testing.assert_allclose(
        state.mse_after(np.full(3, disc.noise_sd**2))[[0, 2]],
        rebuilt.mse_after(np.full(3, disc.noise_sd**2))[[0, 2]],
        rtol=1e-8,
    )


def test_smooth_residuals_are_read_as_misfit_and_white_ones_as_noise():
    rng = np.random.default_rng(1)
    log_n = rng.uniform(17, 23, 40)
    log_r = rng.uniform(0, 5, 40)
    x = np.stack([log_n, log_r], axis=-1)
    basis = np.stack([np.ones(40), log_n - 20, log_r - 2.5], axis=-1)  # what a fit absorbs
    smooth = 0.02 * np.sin(1.3 * (log_n - 20)) * np.cos(0.9 * log_r) + 0.001 * rng.normal(size=40)
    white = 0.01 * rng.normal(size=40)
    ones = np.ones(40)
    got_smooth = learn_discrepancy(x, smooth, basis, ones, min_noise=1e-4)
    got_white = learn_discrepancy(x, white, basis, ones, min_noise=1e-4)
    smooth_ratio = got_smooth.sd / got_smooth.noise_sd
    assert smooth_ratio > 2.9  # the largest smooth share the grid allows, 0.9: a ratio of 3
    assert got_white.sd / got_white.noise_sd < smooth_ratio / 1.5
