"""Bootstrap ensembles of Approach 3 fits: refit resampled observations, read off percentiles.

Each resample draws the M observations (one per run in an experiment summary, so this
is a bootstrap over runs) with replacement; in the batched fitter that is just a row of
counts used as weights. When the fit was given lineages (`fit(..., groups=)`: a parent
run and its cooldown branches), whole lineages are drawn instead, each run counted as
often as its lineage (the cluster bootstrap, see `lineage`); a MAP fit's prior stays in
every refit's objective. Every resample gets its own multi-start search: the full-data
optimum and the other distinct local optima of the full-data search as warm starts,
plus the best variable-projection cells computed on that resample's own counts; the best
`_N_REFINE` of these by objective are refined by IRLS Gauss-Newton (`huber.refine`),
which, unlike L-BFGS-B, leaves the full-data optimum when the data move. All resamples
are refined together in chunks, so 1,000 resamples are a few batched solves.

Intervals are percentile intervals of the refitted quantities; the point value reported
with them is the full-data fit's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from orchestrator.laws.base import (
    FitError,
    Frontier,
    Prediction,
    as_output,
    check_positive,
    check_positive_pair,
)
from orchestrator.laws.frontier import FrontierAccessors, frontier_logs
from orchestrator.laws.huber import fit_multistart
from orchestrator.laws.intervals import percentile_bounds
from orchestrator.laws.lineage import resample_counts
from orchestrator.laws.prediction import check_interval, prediction_se
from orchestrator.laws.projection import projection_starts
from orchestrator.laws.record import FitRecord, record_for

log = logging.getLogger(__name__)

_N_PROJECTION = 4  # variable-projection starts per resample
_N_REFINE = 3  # starts refined per resample (best of warm + projection by objective)
_CHUNK = 250  # resamples per batch: bounds memory at about CHUNK x 3 x M x P doubles
_MAX_ITER = 100
_RTOL = 1e-10  # a 1e-10 relative objective change moves no percentile that is reported


def run_bootstrap(law, n: int, seed: int | np.random.Generator) -> BootstrapFit:
    """Refits `n` resamples of `law`'s observations; see the module docstring.

    `law` is a fitted `law.HuberLaw` (not imported here: `law` imports this module).

    Raises:
        FitError: n is not a positive integer, or more than half the refits failed.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise FitError(f"bootstrap: n must be a positive integer, got {n!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    _, _, loss, weights = law.observations_
    form = law.form_
    log_l = np.log(loss)
    counts = resample_counts(rng, law.lineages_.codes, n) * weights[None, :]
    theta = np.empty((n, law.theta_.size))
    objective = np.empty(n)
    warm = law.warm_starts_ if len(law.warm_starts_) else law.theta_[None]
    for lo in range(0, n, _CHUNK):
        chunk = counts[lo : lo + _CHUNK]
        projected = projection_starts(form, loss, chunk, n_best=_N_PROJECTION)
        starts = np.concatenate(
            [np.broadcast_to(warm, (len(chunk), *warm.shape)), projected], axis=1
        )
        result = fit_multistart(
            form,
            log_l,
            chunk,
            starts,
            delta=float(law.huber_delta),
            n_refine=_N_REFINE,
            max_iter=_MAX_ITER,
            rtol=_RTOL,
            penalty=law.penalty_,
        )
        theta[lo : lo + len(chunk)] = result.theta
        objective[lo : lo + len(chunk)] = result.objective
    failed = ~np.isfinite(objective)
    if failed.sum() > n / 2:
        raise FitError(f"bootstrap: {failed.sum()} of {n} refits failed")
    if failed.any():
        log.warning("bootstrap: %d of %d refits failed and are left out", failed.sum(), n)
    seed_repr = seed if isinstance(seed, (int, np.integer)) else repr(seed)
    return BootstrapFit(
        law,
        theta[~failed],
        objective[~failed],
        counts[~failed],
        seed=seed_repr,
        n_failed=int(failed.sum()),
    )


class BootstrapFit(FrontierAccessors):
    """A point fit plus refits on resamples; every prediction has a percentile interval.

    Attributes:
        law: the full-data fit, a `law.HuberLaw` (its values are the reported point
            estimates).
        theta_samples_: internal parameters of each successful refit, (n, P).
        objective_samples_: each refit's Huber objective on its resample.
        resample_weights_: each refit's observation weights (draw counts), (n, M).
        n_resamples_: resamples drawn; n_failed_: refits that failed and are left out.
    """

    def __init__(self, law, theta_samples, objective_samples, resample_weights, *, seed, n_failed):
        self.law = law
        self.seed = seed
        self.theta_samples_ = np.asarray(theta_samples)
        self.objective_samples_ = np.asarray(objective_samples)
        self.resample_weights_ = np.asarray(resample_weights)
        self.n_failed_ = n_failed
        self.n_resamples_ = len(self.theta_samples_) + n_failed

    @property
    def params(self) -> dict[str, float]:
        """The full-data fit's parameters."""
        return self.law.params

    @property
    def param_samples(self) -> dict[str, np.ndarray]:
        """Each public parameter's refitted values, (n,) arrays."""
        values = self.law.form_.public(self.theta_samples_)
        return {name: values[:, i] for i, name in enumerate(self.law.form_.public_names)}

    def param_intervals(self, *, level: float = 0.95) -> dict[str, Prediction]:
        """Each public parameter's point value and percentile interval."""
        point = self.law.params
        out = {}
        for name, samples in self.param_samples.items():
            lo, hi = percentile_bounds(samples[:, None], level)
            out[name] = Prediction(point[name], float(lo[0]), float(hi[0]), level)
        return out

    def predict(
        self, n_params, tokens, *, level: float = 0.95, interval: str = "confidence"
    ) -> Prediction:
        """Predicted loss L(N, D) with a percentile interval over the ensemble.

        interval="prediction" widens it for one new run, as `law.HuberLaw.predict` does:
        the percentile half-widths on log L are combined in quadrature with the seed
        noise and the form's calibrated extrapolation error.
        """
        check_interval(interval)
        n, d, scalar = check_positive_pair(n_params, tokens, "n_params", "tokens")
        form = self.law.form_
        x_n, x_d = form.centred(np.log(n.ravel()), np.log(d.ravel()))
        samples, _ = form.log_loss_at(self.theta_samples_, x_n[None], x_d[None], jac=False)
        point = self.law.predict(n_params, tokens, level=level).mean
        with np.errstate(over="ignore"):
            lo, hi = percentile_bounds(np.exp(samples), level)
        if interval == "prediction":
            z = norm.ppf(0.5 + level / 2)
            log_point = np.log(np.ravel(point))
            half_lo, half_hi = log_point - np.log(lo), np.log(hi) - log_point
            extra = prediction_se(self.law, n.ravel(), d.ravel(), np.zeros(n.size)) * z
            lo = np.exp(log_point - np.hypot(half_lo, extra))
            hi = np.exp(log_point + np.hypot(half_hi, extra))
        return _prediction(point, lo, hi, level, n.shape, scalar)

    def frontier(self, flops, *, level: float = 0.95) -> Frontier:
        """N_opt, D_opt and L at compute C (FLOPs), with percentile intervals."""
        c, scalar = check_positive(flops, "flops")
        point = self.law.frontier(flops, level=level)
        parts = frontier_logs(self.law, self.theta_samples_, np.log(c.ravel()))
        preds = []
        for values, p in zip(parts, (point.n_opt, point.d_opt, point.loss_opt), strict=True):
            with np.errstate(over="ignore", invalid="ignore"):
                lo, hi = percentile_bounds(np.exp(values), level, infinite=True)
            preds.append(_prediction(p.mean, lo, hi, level, c.shape, scalar))
        return Frontier(as_output(c, scalar), *preds)

    def record(self, *, run_ids: Sequence[str] = (), data_hash: str | None = None) -> FitRecord:
        """The fit's provenance as a `FitRecord`, intervals and summary from the ensemble."""
        return record_for(self.law, run_ids=run_ids, data_hash=data_hash, bootstrap=self)


def _prediction(point, lo, hi, level, shape, scalar) -> Prediction:
    if scalar:
        return Prediction(float(point), float(lo[0]), float(hi[0]), level)
    return Prediction(np.reshape(point, shape), np.reshape(lo, shape), np.reshape(hi, shape), level)
