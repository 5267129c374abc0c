"""Chinchilla's law fitted by Approach 3: oracle, simulated truth, API manners, tiny data."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.laws import Chinchilla, FitError, NotFittedError
from storage.errors import OrchError

# Besiroglu et al. (2024), "replicate exactly": plain Huber sum, L-BFGS-B, 4,500-start grid.
EPOCH_REPLICATE = {"A": 477.84, "B": 2143.86, "E": 1.81724, "alpha": 0.34731, "beta": 0.36718}
EPOCH_OBJECTIVE = 0.00101827


def test_huber_fit_reproduces_epoch_replicate_exactly_optimum(epoch_runs):
    law = Chinchilla().fit(*epoch_runs)
    for name, published in EPOCH_REPLICATE.items():
        assert law.params[name] == pytest.approx(published, rel=0.005), name
    assert law.objective_ <= 0.0010183
    assert law.objective_ == pytest.approx(EPOCH_OBJECTIVE, rel=1e-5)
    assert law.n_obs_ == 240
    assert law.n_starts_ >= 4500
    assert law.reliable_ and law.warnings_ == ()


def test_fit_recovers_noiseless_truth_to_machine_precision(hoffmann):
    n, d = hoffmann.design()
    law = Chinchilla().fit(n, d, hoffmann.loss(n, d))
    for name, true in hoffmann.params.items():
        assert law.params[name] == pytest.approx(true, rel=1e-6), name


def test_fit_recovers_noisy_truth_within_four_standard_errors(simulated_runs, hoffmann):
    # 49 runs with 1 % lognormal noise. The fit's own standard errors are calibrated on
    # this design (test_bootstrap checks coverage over 100 datasets), so 4 SE bounds the
    # error of a correct fit; the SE bounds keep the check from being vacuous: alpha and
    # beta to +-0.12 at most, E to +-0.25 nats.
    law = Chinchilla().fit(*simulated_runs(seed=0))
    intervals = law.param_intervals(level=0.95)
    for name in ("E", "alpha", "beta"):
        se = (intervals[name].hi - intervals[name].lo) / 3.92
        assert abs(law.params[name] - hoffmann.params[name]) <= 4 * se, name
        assert se < (0.06 if name == "E" else 0.03), name


def test_frontier_spends_exactly_the_budget_and_minimises_loss_on_the_isoflop_line(epoch_runs):
    law = Chinchilla().fit(*epoch_runs)
    budgets = np.array([1e20, 1e22, 1e24])
    frontier = law.frontier(budgets)
    np.testing.assert_allclose(6 * frontier.n_opt.mean * frontier.d_opt.mean, budgets, rtol=1e-9)
    for c, n in zip(budgets, frontier.n_opt.mean, strict=True):
        best = law.predict(n, c / (6 * n)).mean
        for factor in (0.9, 1.1):
            assert law.predict(n * factor, c / (6 * n * factor)).mean > best
    np.testing.assert_allclose(
        frontier.loss_opt.mean, law.predict(frontier.n_opt.mean, frontier.d_opt.mean).mean
    )


def test_numeric_frontier_with_a_flops_function_matches_closed_form_for_6nd(epoch_runs):
    closed = Chinchilla().fit(*epoch_runs)
    numeric = Chinchilla(flops_per_token=lambda n: 6.0 * n).fit(*epoch_runs)
    budgets = np.array([1e21, 1e23])
    np.testing.assert_allclose(numeric.n_opt(budgets).mean, closed.n_opt(budgets).mean, rtol=1e-6)
    np.testing.assert_allclose(
        numeric.loss_opt(budgets).mean, closed.loss_opt(budgets).mean, rtol=1e-9
    )


def test_frontier_spends_the_budget_under_a_flops_function_with_overhead(epoch_runs):
    # A fixed per-token overhead (e.g. attention over a long context) makes each token
    # dearer, so the same budget buys fewer tokens.
    def with_overhead(n):
        return 6.0 * n + 6.0e9

    plain = Chinchilla().fit(*epoch_runs)
    dear = Chinchilla(flops_per_token=with_overhead).fit(*epoch_runs)
    c = 1e22
    frontier = dear.frontier(c)
    assert with_overhead(frontier.n_opt.mean) * frontier.d_opt.mean == pytest.approx(c, rel=1e-9)
    assert frontier.d_opt.mean < plain.d_opt(c).mean


def test_point_predictions_carry_intervals_that_widen_with_level(epoch_runs):
    law = Chinchilla().fit(*epoch_runs)
    narrow, wide = law.predict(1e10, 2e11, level=0.5), law.predict(1e10, 2e11, level=0.99)
    assert narrow.mean == wide.mean
    assert wide.lo < narrow.lo < narrow.mean < narrow.hi < wide.hi
    # Extrapolation is less certain than interpolation.
    near, far = law.n_opt(1e21), law.n_opt(1e25)
    assert far.hi / far.lo > near.hi / near.lo > 1


def test_scalar_inputs_give_floats_and_array_inputs_keep_their_shape(epoch_runs):
    law = Chinchilla().fit(*epoch_runs)
    scalar = law.predict(1e9, 2e10)
    assert all(isinstance(v, float) for v in (scalar.mean, scalar.lo, scalar.hi))
    grid = law.predict(np.full((2, 3), 1e9), np.full((2, 3), 2e10))
    assert grid.mean.shape == grid.lo.shape == (2, 3)
    assert isinstance(law.loss_opt(1e22).mean, float)
    assert law.d_opt([1e21, 1e22]).mean.shape == (2,)


def test_predicting_before_fit_raises_not_fitted_error():
    law = Chinchilla()
    with pytest.raises(NotFittedError, match="not fitted"):
        law.predict(1e9, 1e10)
    with pytest.raises(NotFittedError):
        _ = law.params


@pytest.mark.parametrize(
    ("n", "d", "loss", "message"),
    [
        ([1e8, 2e8, 3e8, 4e8, 5e8], [1e9] * 5, [3, 3, np.nan, 3, 3], r"loss\[2\] = nan"),
        ([1e8, 2e8, 0, 4e8, 5e8], [1e9] * 5, [3] * 5, r"n_params\[2\] = 0\.0"),
        ([1e8, 2e8, 3e8, 4e8, 5e8], [1e9] * 5, [3, 3, 3, 3, -1], r"loss\[4\] = -1\.0"),
        ([1e8, 2e8, 3e8, 4e8, 5e8], [1e9] * 4, [3] * 5, "different lengths"),
        ([1e8, 2e8, 3e8, 4e8], [1e9] * 4, [3] * 4, "4 observations are too few"),
    ],
)
def test_fit_rejects_bad_observations_with_a_clear_error(n, d, loss, message):
    with pytest.raises(FitError, match=message) as info:
        Chinchilla().fit(n, d, loss)
    assert isinstance(info.value, ValueError) and isinstance(info.value, OrchError)


def test_options_are_stored_as_given_and_checked_at_fit():
    law = Chinchilla(huber_delta=-1.0, n_refine=8)
    assert law.get_params()["huber_delta"] == -1.0
    assert law.get_params()["n_refine"] == 8
    with pytest.raises(FitError, match="huber_delta"):
        law.fit([1e8, 2e8, 3e8, 4e8, 5e8], [1e9] * 5, [3.0] * 5)
    with pytest.raises(TypeError):
        Chinchilla(1e-3)  # options are keyword-only
    with pytest.raises(FitError, match="start_grid"):
        Chinchilla(start_grid={"a": [0.0]}).fit([1e8, 2e8, 3e8, 4e8, 5e8], [1e9] * 5, [3.0] * 5)


def test_nine_runs_from_a_small_cpu_grid_fit_finite_parameters_and_say_intervals_are_rough():
    rng = np.random.default_rng(0)
    n = np.repeat([2e5, 8e5, 3e6], 3)
    d = np.tile([2e6, 1e7, 5e7], 3)
    loss = (2.0 + 300 * n**-0.4 + 200 * d**-0.3) * np.exp(0.01 * rng.standard_normal(9))
    law = Chinchilla().fit(n, d, loss)
    assert all(np.isfinite(v) for v in law.params.values())
    assert np.isfinite(law.n_opt(1e16).mean)
    assert any("9 observations for 5 parameters" in w for w in law.warnings_)


def test_runs_of_one_model_size_are_flagged_unreliable_with_unbounded_intervals():
    d = np.geomspace(1e6, 1e8, 6)
    law = Chinchilla().fit(np.full(6, 1e6), d, 2.0 + 200 * d**-0.3)
    assert not law.reliable_
    assert all(np.isfinite(v) for v in law.params.values())
    assert any("A (the N term)" in w for w in law.warnings_)
    n_opt = law.n_opt(1e16)
    assert n_opt.lo == 0.0 and n_opt.hi == np.inf


def test_fit_is_deterministic(simulated_runs):
    data = simulated_runs(seed=3)
    assert Chinchilla().fit(*data).params == Chinchilla().fit(*data).params


def test_a_weight_scales_a_runs_term_in_the_objective_as_repeating_it_would(simulated_runs):
    # The point fit only: intervals count runs, not weights (laws/test_weights.py).
    n, d, loss = simulated_runs(seed=4)
    weights = np.ones(n.size)
    weights[:10] = 2
    repeated = np.r_[np.arange(n.size), np.arange(10)]
    by_weight = Chinchilla().fit(n, d, loss, weights=weights)
    by_rows = Chinchilla().fit(n[repeated], d[repeated], loss[repeated])
    assert by_weight.objective_ == pytest.approx(by_rows.objective_, rel=1e-9)
    for name, value in by_rows.params.items():
        assert by_weight.params[name] == pytest.approx(value, rel=1e-5)
