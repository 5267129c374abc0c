"""Priors: a previous fit pulls a new one (MAP) in proportion to how little the data say."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.laws import Chinchilla, Farseer, FitError, FitRecord, Kaplan, Overtraining
from orchestrator.laws.base import quiet_fits
from orchestrator.laws.prior import DEFAULT_SD, Prior
from tests.orchestrator.laws.conftest import HOFFMANN, hoffmann_loss, isoflop_design

WRONG = {"alpha": 0.45, "beta": 0.38}  # exponents a previous, different setup might give


def _few_runs(seed: int):
    """9 runs (3 sizes at each of 3 compute levels) with 2% lognormal noise."""
    n, d = isoflop_design(levels=(1e18, 1e19, 1e20), per_level=3, half_decades=0.6)
    rng = np.random.default_rng(seed)
    return n, d, hoffmann_loss(n, d) * np.exp(0.02 * rng.standard_normal(n.size))


def _errors(params) -> np.ndarray:
    """|error| of alpha, beta and log E against the truth."""
    return np.array(
        [
            abs(params["alpha"] - HOFFMANN["alpha"]),
            abs(params["beta"] - HOFFMANN["beta"]),
            abs(math.log(params["E"] / HOFFMANN["E"])),
        ]
    )


def test_prior_at_the_truth_cuts_the_error_of_a_fit_on_few_noisy_runs():
    # 40 seeded sets of 9 runs: alone they barely pin the exponents (mean error ~0.1, E
    # often unidentified); with the prior's default widths the errors fall several-fold.
    plain, with_prior = [], []
    with quiet_fits():
        for seed in range(40):
            data = _few_runs(seed)
            plain.append(_errors(Chinchilla(n_refine=8).fit(*data).params))
            with_prior.append(_errors(Chinchilla(n_refine=8).fit(*data, prior=HOFFMANN).params))
    plain, with_prior = np.mean(plain, axis=0), np.mean(with_prior, axis=0)
    assert np.all(with_prior < 0.5 * plain), (plain, with_prior)


def test_prior_barely_moves_a_fit_on_many_runs(simulated_runs):
    # 49 runs with 1% noise pin the parameters far better than the default widths, so
    # even a prior elsewhere moves each by well under one of the fit's standard errors.
    data = simulated_runs(seed=0)
    plain = Chinchilla().fit(*data)
    intervals = plain.param_intervals(level=0.95)
    for mean in (HOFFMANN, {**HOFFMANN, **WRONG}):
        law = Chinchilla().fit(*data, prior=mean)
        for name in ("E", "alpha", "beta"):
            se = (intervals[name].hi - intervals[name].lo) / 3.92
            assert abs(law.params[name] - plain.params[name]) < 0.6 * se, (mean, name)


def test_strong_wrong_prior_pulls_the_fit_to_it(simulated_runs):
    data = simulated_runs(seed=0)
    plain = Chinchilla().fit(*data)
    weak = Chinchilla().fit(*data, prior=Prior.from_params(WRONG))
    strong = Chinchilla().fit(
        *data, prior=Prior.from_params(WRONG, sd={"alpha": 1e-3, "beta": 1e-3})
    )
    for name, value in WRONG.items():
        assert abs(strong.params[name] - value) < 0.005, name
        # The default width moves it part of the way, in the prior's direction.
        assert plain.params[name] < weak.params[name] < value, name
        # The posterior sd is no wider than the prior's own (the t of 44 dof is 2.02).
        interval = strong.param_intervals(level=0.95)[name]
        assert (interval.hi - interval.lo) / (2 * 2.02) <= 1e-3, name


def test_prior_on_few_runs_narrows_the_intervals_and_stays_in_bootstraps():
    data = _few_runs(seed=1)
    strong = Prior.from_params(WRONG, sd={"alpha": 1e-3, "beta": 1e-3})
    with quiet_fits():
        plain = Chinchilla().fit(*data)
        law = Chinchilla().fit(*data, prior=strong)
    for name in WRONG:
        before = plain.param_intervals(level=0.9)[name]
        after = law.param_intervals(level=0.9)[name]
        assert after.hi - after.lo < 0.2 * (before.hi - before.lo), name
    samples = law.bootstrap(30, seed=0).param_samples
    for name, value in WRONG.items():
        assert np.all(np.abs(samples[name] - value) < 0.01), name


def test_a_mapping_is_a_prior_with_the_default_widths(simulated_runs):
    data = simulated_runs(seed=2)
    from_mapping = Chinchilla().fit(*data, prior=HOFFMANN)
    from_prior = Chinchilla().fit(*data, prior=Prior.from_params(HOFFMANN))
    assert from_mapping.params == from_prior.params
    assert set(DEFAULT_SD["chinchilla"]) == set(from_mapping.params)


def test_prior_from_a_record_or_a_law_is_centred_on_its_parameters(simulated_runs, tmp_path):
    law = Chinchilla().fit(*simulated_runs(seed=3))
    path = law.record().save(tmp_path / "prior.json")
    record = FitRecord.load(path)
    prior = Prior.from_fit(record)
    assert dict(prior.mean) == record.params == law.params
    assert prior.source == record.fit_id
    assert dict(Prior.from_fit(law).mean) == law.params


def test_record_notes_the_prior(simulated_runs):
    law = Chinchilla().fit(*simulated_runs(seed=4), prior=Prior.from_params({"E": 1.7}))
    record = law.record()
    assert any(w.startswith("MAP fit: a Gaussian prior pulls E=1.7") for w in record.warnings)
    assert record.reliable and law.prior_.mean == {"E": 1.7}
    assert FitRecord.from_dict(record.to_dict()).to_dict() == record.to_dict()


def test_other_forms_take_a_prior_with_explicit_widths(simulated_runs):
    data = simulated_runs(seed=5)
    plain = Kaplan().fit(*data)
    target = plain.params["alpha_D"] * 1.2
    prior = Prior.from_params({"alpha_D": target}, sd={"alpha_D": 1e-4})
    assert Kaplan().fit(*data, prior=prior).params["alpha_D"] == pytest.approx(target, rel=0.01)
    with pytest.raises(FitError, match="no default width for kaplan's 'alpha_D'"):
        Kaplan().fit(*data, prior={"alpha_D": target})


@pytest.mark.parametrize(
    "prior, message",
    [
        ({"E": 1.7, "gamma": 0.3, "delta": 1.0}, "has no parameter 'gamma', 'delta'"),
        ({"E": float("nan")}, "the mean of 'E' must be finite"),
        ({"alpha": float("inf")}, "the mean of 'alpha' must be finite"),
        ({"A": -400.0}, "A must be > 0"),
        ({}, "at least one parameter"),
        ({"E": "low"}, "mean of 'E' must be a number"),
        ([("E", 1.7)], "expected a Prior or a mapping"),
    ],
)
def test_bad_priors_are_a_fit_error_that_names_the_problem(simulated_runs, prior, message):
    with pytest.raises(FitError, match=message):
        Chinchilla().fit(*simulated_runs(seed=0), prior=prior)


@pytest.mark.parametrize("sd", [0.0, -0.1, float("nan"), float("inf")])
def test_prior_widths_must_be_finite_and_positive(sd):
    with pytest.raises(FitError, match="width of 'beta' must be finite and > 0"):
        Prior.from_params({"beta": 0.3}, sd={"beta": sd})


def test_a_width_without_a_mean_is_refused():
    with pytest.raises(FitError, match="a width for 'beta' but no mean"):
        Prior(mean={"alpha": 0.3}, sd={"beta": 0.1})


def test_prior_needs_a_residual_to_weigh_the_data_by(hoffmann):
    n, d = hoffmann.design(levels=(1e18, 1e20), per_level=3)
    n, d = n[:5], d[:5]
    with pytest.raises(FitError, match="5 observations for 5 parameters"):
        Chinchilla().fit(n, d, hoffmann.loss(n, d), prior=HOFFMANN)


@pytest.mark.parametrize("cls", [Chinchilla, Kaplan, Farseer, Overtraining])
def test_each_public_parameter_has_its_log_or_itself_as_a_record_coordinate(cls):
    # A prior is a Gaussian on the record coordinate of each public parameter: its log
    # if the parameter is positive, else the parameter itself.
    form = cls.form_class(log_n0=18.0, log_d0=21.0, x_n=np.zeros((1, 1)), x_d=np.zeros((1, 1)))
    rng = np.random.default_rng(0)
    mid = (form.lower + form.upper) / 2
    theta = mid + 0.1 * (form.upper - form.lower) * rng.uniform(-1, 1, (4, mid.size))
    theta[:, -1] = np.abs(theta[:, -1])  # positive exponents where a form needs them
    public, coords = form.public(theta), form.record_coords(theta)
    for i, name in enumerate(form.public_names):
        column = coords[:, form.record_names.index(form.public_record[i])]
        expected = np.log(public[:, i]) if form.public_positive[i] else public[:, i]
        np.testing.assert_allclose(column, expected, rtol=1e-9, atol=1e-9, err_msg=name)


def test_record_keeps_the_prior_and_its_widths(simulated_runs):
    law = Chinchilla().fit(*simulated_runs(seed=4), prior=Prior.from_params({"E": 1.7}))
    record = law.record()
    assert record.prior == {"mean": {"E": 1.7}, "sd": {"E": DEFAULT_SD["chinchilla"]["E"]},
                            "source": ""}  # fmt: skip
    assert FitRecord.from_dict(record.to_dict()).prior == record.prior
    assert Chinchilla().fit(*simulated_runs(seed=4)).record().prior is None
