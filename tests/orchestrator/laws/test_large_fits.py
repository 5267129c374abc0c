"""Fits of thousands of runs search for starts on a subset (law.HuberLaw._starts): they
must land on the optimum the search over every observation finds."""

import numpy as np
import pytest

import orchestrator.laws.law as law_module
from orchestrator.laws import Chinchilla, Farseer


def _sweep(m: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 10 ** rng.uniform(7, 10, m)
    d = 10 ** rng.uniform(9, 12, m)
    loss = (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * np.exp(rng.normal(0, 0.01, m))
    return n, d, loss


@pytest.mark.parametrize("cls", [Chinchilla, Farseer])
def test_a_subset_search_finds_the_optimum_of_the_full_search(cls, monkeypatch):
    n, d, loss = _sweep(3 * law_module._SEARCH_POINTS)
    fast = cls().fit(n, d, loss)
    monkeypatch.setattr(law_module, "_SEARCH_POINTS", 10**9)  # search every observation
    full = cls().fit(n, d, loss)
    assert fast.objective_ == pytest.approx(full.objective_, rel=1e-9)
    assert fast.params == pytest.approx(full.params, rel=1e-4)


def test_the_subset_optima_refined_on_every_observation_are_distinct_basins(monkeypatch):
    # Farseer's 8 best subset optima on such a sweep are one or two basins; refining the
    # same optimum 8 times on every observation was most of a 10,000-run fit's time.
    n, d, loss = _sweep(3 * law_module._SEARCH_POINTS)
    starts = []
    real = law_module.fit_multistart

    def recording(form, log_loss, weights, theta0, **kwargs):
        if log_loss.size == n.size:
            starts.append(np.asarray(theta0))
        return real(form, log_loss, weights, theta0, **kwargs)

    monkeypatch.setattr(law_module, "fit_multistart", recording)
    Farseer().fit(n, d, loss)
    (full,) = starts
    assert 1 <= len(full) < law_module._SEARCH_KEEP
    for i in range(len(full)):
        for j in range(i):
            assert np.max(np.abs(full[i] - full[j])) > 1e-3


def test_backtests_of_thousands_of_runs_fit_a_subset_spread_over_compute(monkeypatch):
    import orchestrator.laws.splits as splits_module
    from orchestrator.laws import AutoLaw

    sizes = []
    real_fit = Chinchilla.fit

    def counting_fit(self, n_params, *args, **kwargs):
        sizes.append(len(n_params))
        return real_fit(self, n_params, *args, **kwargs)

    monkeypatch.setattr(Chinchilla, "fit", counting_fit)
    n, d, loss = _sweep(3 * splits_module.BACKTEST_POINTS)
    law = AutoLaw(forms=("chinchilla",)).fit(n, d, loss)
    # The fit on every run, then 5 origins on the subset's lower 50-90% by compute.
    assert sizes[0] == n.size
    origins = sizes[1:]
    assert len(origins) == 5 and max(origins) < splits_module.BACKTEST_POINTS
    assert origins == sorted(origins) and origins[0] >= splits_module.BACKTEST_POINTS // 2
    assert law.backtest_[0].held_out > 0
    assert law.form_errors_["chinchilla"].calibrated
