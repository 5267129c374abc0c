"""Prediction intervals: where the loss of a run nobody has trained will fall.

A confidence interval bounds the fitted curve. A new run's loss also carries its own
seed noise, and, when the run lies beyond the data, the error of the form itself, which
on real sweeps is the largest of the three (a form fitted on small runs bends the wrong
way at large ones). The prediction interval adds the three in quadrature on log L:

    var = se_theta^2                  parameter uncertainty (delta method, as the CI)
        + sigma^2                     seed-to-seed noise: the fit's residual scale
        + (kappa * delta)^2           the form's error, delta decades of C beyond the data
                                      (the N and D a point lacks from its nearest run:
                                      `decades_beyond`)

kappa (log-loss error per decade of extrapolation) is calibrated on the law's own data
by rolling-origin backtests (`splits.rolling_origin_splits`): refit on the runs below
each compute cut-off, predict the runs above, and fit the excess of the squared held-out
residuals over what the first two terms explain, r^2 - se^2 - sigma^2, by kappa^2 delta^2
(least squares, kappa >= 0). This is split-conformal in spirit: the interval is widened
by errors the law actually made on held-out larger runs, in proportion to how far out a
prediction reaches. With too few runs for any backtest, kappa is unknown and the
interval leaves the form's error out (`FormError.calibrated` is False).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from orchestrator.laws.base import FitError, flops_6nd
from orchestrator.laws.splits import (
    BACKTEST_POINTS,
    fitted_origins,
    rolling_origin_splits,
    spread_subset,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FormError:
    """The form's extrapolation error, calibrated by rolling-origin backtests."""

    per_decade: float  # kappa: std of log L error per decade of C beyond the data; NaN if unknown
    n_origins: int  # backtest origins that could be fitted
    n_held_out: int  # held-out predictions the calibration used

    @property
    def calibrated(self) -> bool:
        return math.isfinite(self.per_decade)


INTERVALS = ("confidence", "prediction")


def check_interval(interval: str) -> None:
    """Raises FitError unless `interval` names a kind `predict` gives (`INTERVALS`)."""
    if interval not in INTERVALS:
        raise FitError(f"interval: expected 'confidence' or 'prediction', got {interval!r}")


def decades_beyond(law, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """How many decades of compute each (N, D) lies beyond the law's observed runs: from
    the nearest run, the decades of N (in FLOPs per token) and of D it lacks, summed.

    A point above a run in both N and D is as far as its compute is beyond that run's, so
    on a sweep whose largest budget spans its sizes this is the decades beyond the
    largest compute. It is more where the data are thin: a sample whose largest runs are
    all big models at few tokens has measured nothing near a small model trained long at
    the same compute, and its form is extrapolated the whole way there in D. Measured
    from the largest C alone, a production run of a small model trained far longer than
    any fitted run, at less compute than the largest, would be no extrapolation at all;
    and two large runs at 2.5-5.3B parameters put every run of the Marin project's next
    IsoFLOP budget 0.22-0.37 decades out (bench/replay_real.py, dclm at 10% of the pool),
    its 157M-447M runs 1.0-1.2 decades out by this count.
    """
    fpt = law.flops_per_token or flops_6nd
    n_obs, d_obs, _, w = law.observations_
    keep = w > 0
    log_n, log_d = _outermost(np.log10(fpt(n_obs[keep])), np.log10(d_obs[keep]))
    n, d = np.broadcast_arrays(np.asarray(n, float), np.asarray(d, float))
    more_n = np.log10(fpt(n.ravel()))[:, None] - log_n
    more_d = np.log10(d.ravel())[:, None] - log_d
    lacks = np.maximum(more_n, 0.0) + np.maximum(more_d, 0.0)  # (points, outermost runs)
    return lacks.min(axis=1).reshape(n.shape)


def _outermost(log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The runs no other run exceeds in both N and D. A run with as much N and D as
    another lacks no more from any point, so only these can be a point's nearest: a
    sweep's largest budget, a few dozen runs, rather than a (points, runs) matrix of a
    10,000-run study's every run (what a report asks of its every run)."""
    order = np.lexsort((-log_d, -log_n))  # largest N first, within it largest D first
    d_sorted = log_d[order]
    most_d_before = np.concatenate([[-np.inf], np.maximum.accumulate(d_sorted)[:-1]])
    front = order[d_sorted > most_d_before]
    return log_n[front], log_d[front]


def calibrate_form_error(law) -> FormError:
    """kappa for a fitted `law.HuberLaw`, from backtests on its own observations."""
    n, d, loss, w = law.observations_
    fpt = law.flops_per_token or flops_6nd
    keep = np.flatnonzero(w > 0)
    keep = keep[spread_subset((fpt(n) * d)[keep], BACKTEST_POINTS)]
    n, d, loss = n[keep], d[keep], loss[keep]
    try:
        splits = rolling_origin_splits(fpt(n) * d)
    except FitError:
        return FormError(math.nan, 0, 0)
    excess, reach = [], []
    origins = 0
    make_law = functools.partial(type(law), **law.get_params())
    for split, sub in fitted_origins(make_law, n, d, loss, splits, min_points=law.min_points):
        origins += 1
        mean, se = sub.log_mean_se(n[split.test], d[split.test])
        resid = np.log(loss[split.test]) - mean
        excess.append(resid**2 - se**2 - sub.noise_**2)
        reach.append(decades_beyond(sub, n[split.test], d[split.test]))
    if not origins:
        return FormError(math.nan, 0, 0)
    form = form_error_from(np.concatenate(excess), np.concatenate(reach), origins)
    log.info(
        "%s: form error %.3g per decade from %d held-out runs over %d origins",
        law.form_name,
        form.per_decade,
        form.n_held_out,
        origins,
    )
    return form


def form_error_from(excess: np.ndarray, reach: np.ndarray, origins: int) -> FormError:
    """kappa from held-out runs' excess squared log error (r^2 - se^2 - sigma^2) and their
    reach (decades of C beyond the data they were predicted from): least squares of
    excess on kappa^2 reach^2 through the origin, kappa >= 0."""
    ok = np.isfinite(excess) & (reach > 0)
    if not ok.any():
        return FormError(math.nan, origins, 0)
    reach2 = reach[ok] ** 2
    kappa2 = max(0.0, float(np.sum(excess[ok] * reach2) / np.sum(reach2**2)))
    return FormError(math.sqrt(kappa2), origins, int(ok.sum()))


def prediction_se(
    law, n: np.ndarray, d: np.ndarray, conf_se: np.ndarray, form: FormError | None = None
) -> np.ndarray:
    """Standard error of a new run's log L: the curve's, the seed noise, the form's error
    (`form`, or the law's own calibration when None)."""
    form = law.form_error_ if form is None else form
    var = conf_se**2 + law.noise_**2
    if form.calibrated:
        var = var + (form.per_decade * decades_beyond(law, n, d)) ** 2
    return np.sqrt(var)
