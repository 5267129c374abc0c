"""One suite over every Approach 3 law form (STYLE 2.15): the same promises for each."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.laws import Chinchilla, Farseer, FitRecord, Kaplan, NotFittedError, Overtraining
from orchestrator.laws.base import Law

FORMS = [Chinchilla, Kaplan, Farseer, Overtraining]


TRUTHS = {
    Chinchilla: lambda n, d: 1.8 + 400 * n**-0.34 + 400 * d**-0.28,
    Kaplan: lambda n, d: ((8.8e13 / n) ** 0.8 + 5.4e13 / d) ** 0.095,
    Overtraining: lambda n, d: 1.8 + 400 * n**-0.3 + 400 * d**-0.3,
    # The data term's coefficient grows and its exponent shrinks with N: an optimum exists.
    Farseer: lambda n, d: (
        np.exp(100 * n**-0.3 + np.log(1.5))
        + np.exp(0.5 * n**0.1 + 3.0) * d ** -np.exp(-0.02 * n**0.1 - 1.0)
    ),
}


@pytest.fixture(scope="module", params=FORMS, ids=lambda cls: cls.__name__)
def form_and_runs(request):
    """A law class and 30 runs drawn from its own form with 0.5 % lognormal noise."""
    n = np.repeat(np.geomspace(1e7, 1e9, 6), 5)
    d = np.tile(np.geomspace(1e9, 1e11, 5), 6)
    rng = np.random.default_rng(5)
    loss = TRUTHS[request.param](n, d) * np.exp(0.005 * rng.standard_normal(n.size))
    return request.param, (n, d, loss)


@pytest.fixture(scope="module")
def runs(form_and_runs):
    return form_and_runs[1]


@pytest.fixture(scope="module")
def fitted(form_and_runs):
    cls, data = form_and_runs
    return cls().fit(*data)


@pytest.mark.parametrize("cls", FORMS, ids=lambda cls: cls.__name__)
def test_unfitted_law_raises_not_fitted_error(cls):
    with pytest.raises(NotFittedError):
        cls().n_opt(1e21)


def test_fit_returns_the_law_with_learned_state_in_underscore_attributes(fitted, runs):
    assert isinstance(fitted, Law)
    assert np.all(np.isfinite(fitted.theta_)) and np.isfinite(fitted.objective_)
    assert fitted.n_obs_ == runs[0].size
    assert set(fitted.params) == set(fitted.form_.public_names)
    assert "huber_delta" in fitted.get_params()


def test_jacobian_matches_finite_differences(fitted):
    form, theta = fitted.form_, fitted.theta_
    _, jac = form.log_loss(theta[None], jac=True)
    for j in range(theta.size):
        h = 1e-6 * (1 + abs(theta[j]))
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        numeric = form.log_loss(up[None], jac=False)[0] - form.log_loss(down[None], jac=False)[0]
        np.testing.assert_allclose(jac[0, :, j], numeric[0] / (2 * h), rtol=1e-5, atol=1e-8)


def test_record_coordinates_round_trip_to_internal_parameters(fitted):
    form = fitted.form_
    coords = form.record_coords(fitted.theta_[None])
    np.testing.assert_allclose(form.theta_from_record(coords)[0], fitted.theta_, rtol=1e-10)


def test_fit_is_close_to_the_data(fitted, runs):
    n, d, loss = runs
    rel = fitted.predict(n, d).mean / loss - 1
    assert np.sqrt(np.mean(rel**2)) < 0.02


def test_closed_form_optimum_is_the_minimum_along_the_isoflop_line(fitted):
    for c in (1e19, 1e22):
        n_opt = fitted.n_opt(c).mean
        grid = n_opt * np.geomspace(0.5, 2, 41)
        losses = fitted.predict(grid, c / (6 * grid)).mean
        assert np.argmin(losses) == 20


def test_intervals_contain_point_values(fitted):
    for name, interval in fitted.param_intervals(level=0.95).items():
        assert interval.lo <= fitted.params[name] <= interval.hi, name
    frontier = fitted.frontier([1e20, 1e23])
    for pred in (frontier.n_opt, frontier.d_opt, frontier.loss_opt):
        assert np.all(pred.lo <= pred.mean) and np.all(pred.mean <= pred.hi)


def test_record_round_trips(fitted):
    record = fitted.record(run_ids=["r1"])
    assert record.form == fitted.form_name
    assert FitRecord.from_dict(record.to_dict()).to_dict() == record.to_dict()


def test_bootstrap_gives_an_ensemble_with_the_same_interface(fitted):
    ensemble = fitted.bootstrap(25, seed=0)
    assert ensemble.theta_samples_.shape == (25, fitted.theta_.size)
    assert set(ensemble.param_intervals()) == set(fitted.params)
    assert ensemble.loss_opt(1e22).lo < ensemble.loss_opt(1e22).hi
