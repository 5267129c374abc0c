"""The Huber fit's noise scale: unbiased at the small sizes real sweeps come in."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.laws import Chinchilla
from orchestrator.laws.covariance import residual_scale

SIGMA = 0.01  # the simulated seed noise of log L


def _truth(n, d):
    return 1.8 + 400 * n**-0.34 + 400 * d**-0.28


def test_noise_variance_is_unbiased_on_small_seeded_fits():
    # 60 seeded studies of 14 runs for 5 parameters (9 degrees of freedom, like a backtest
    # origin of Gadre et al.'s ~35-run sweeps). Measured: mean sigma-hat^2 / sigma^2 1.04
    # on these seeds, 0.97 over 400 such studies (standard error 0.02); the former
    # estimate, the larger of a median-based scale and the RMS over n - p, gave 1.84 and
    # 1.55.
    ratios = []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = np.exp(rng.uniform(np.log(1e7), np.log(1e9), 14))
        d = np.exp(rng.uniform(np.log(1e9), np.log(1e11), 14))
        loss = _truth(n, d) * np.exp(SIGMA * rng.standard_normal(14))
        law = Chinchilla(n_refine=8).fit(n, d, loss)
        ratios.append((law.noise_ / SIGMA) ** 2)
    assert 0.85 <= np.mean(ratios) <= 1.15


@pytest.mark.parametrize(
    ("delta", "dof"),
    [(1e3, 20 - 5), (1e-9, 20 - (2 - math.pi / 2) * 5)],
    ids=["least-squares", "least-absolute-deviations"],
)
def test_noise_scale_counts_the_noise_the_fit_absorbed(delta, dof):
    # A delta far above the residuals is least squares (n - p); far below, least absolute
    # deviations, whose fit absorbs less of the noise (n - 0.43 p).
    resid = np.random.default_rng(0).standard_normal(20) * 0.01
    expected = math.sqrt(np.sum(resid**2) / dof)
    assert residual_scale(resid, np.ones(20), 5, delta) == pytest.approx(expected, rel=1e-3)
