"""Approach 3 laws: the fit, covariance, predictions and frontier shared by every form.

A form (`chinchilla.ChinchillaForm`, `kaplan.KaplanForm`) supplies log L(N, D; theta)
and its Jacobian; `HuberLaw` does the rest with scikit-learn manners: options in
`__init__`, checked at `fit`; learned state in trailing-underscore attributes.

Intervals for a point fit come from the asymptotic covariance of a Huber M-estimator
(Huber 1981, Ch. 7): cov = tau^2 (J^T W J)^-1 with tau^2 = E[psi^2] / E[psi']^2, both
evaluated for N(0, sigma^2) residuals (see `covariance.residual_scale` for sigma), and a
Student t with M - P degrees of freedom (M runs, however much each is trusted: `fit`'s
weights are precision weights, see `covariance`). With delta << sigma, tau^2 is least
absolute deviations' pi sigma^2 / 2. It assumes independent residuals and a nearly linear model
over the interval; with few runs, or correlated errors, prefer `bootstrap`. Runs that
share a lineage (`fit(..., groups=)`, see `lineage`) get a sandwich covariance weighed by
each lineage's design effect and fewer degrees of freedom; a MAP fit (`fit(..., prior=)`,
see `prior`) gets the posterior covariance. Derived quantities (A, N_opt, ...) use the
delta method with central differences, in log space for positive quantities so that
intervals stay positive.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from orchestrator.laws.base import (
    FitError,
    Frontier,
    NotFittedError,
    Prediction,
    as_output,
    check_observations,
    check_positive,
    check_positive_pair,
    grid_product,
)
from orchestrator.laws.bootstrap import BootstrapFit, run_bootstrap
from orchestrator.laws.covariance import huber_covariance, residual_scale
from orchestrator.laws.frontier import FrontierAccessors, frontier_logs
from orchestrator.laws.huber import distinct_rows, fit_multistart
from orchestrator.laws.intervals import (
    delta_se,
    perturbed,
    quadratic_se,
    reshape_prediction,
    t_interval,
)
from orchestrator.laws.lineage import fit_lineages, lineage_codes
from orchestrator.laws.prediction import (
    FormError,
    calibrate_form_error,
    check_interval,
    prediction_se,
)
from orchestrator.laws.prior import as_prior, map_starts, prior_penalty, prior_terms
from orchestrator.laws.projection import projection_starts
from orchestrator.laws.record import FitRecord, record_for
from orchestrator.laws.splits import spread_subset

log = logging.getLogger(__name__)

# Observations above which the start search runs on an evenly spread subset (`_starts`).
_SEARCH_POINTS = 1024
_SEARCH_KEEP = 8  # the subset fit's best local optima refined on every observation
_N_WARM_STARTS = 4  # distinct local optima kept as warm starts for bootstrap resamples


class HuberLaw(FrontierAccessors):
    """Base of the Approach 3 laws; subclasses set the form (see `Chinchilla`)."""

    form_name: ClassVar[str]
    min_points: ClassVar[int]
    form_class: ClassVar[type]  # the Form built on the (centred) observations
    default_grid: ClassVar[Mapping[str, Sequence[float]] | None]  # starts if no start_grid
    n_projection_starts: ClassVar[int] = 16  # best variable-projection cells added to them

    def __init__(
        self,
        *,
        huber_delta: float = 1e-3,
        flops_per_token=None,
        start_grid: Mapping[str, Sequence[float]] | None = None,
        n_refine: int = 32,
        polish: bool = True,
    ):
        """Options shared by every form, stored as given and checked at `fit`; see the
        Args of `Chinchilla` (a subclass declares only its form, grid and `min_points`)."""
        self.huber_delta = huber_delta
        self.flops_per_token = flops_per_token
        self.start_grid = start_grid
        self.n_refine = n_refine
        self.polish = polish

    # --- subclass hooks ---------------------------------------------------------------

    def _make_form(self, log_n: np.ndarray, log_d: np.ndarray, weights: np.ndarray):
        # Centre log N and log D on their weighted means: better-conditioned steps.
        n0 = float(np.average(log_n, weights=weights))
        d0 = float(np.average(log_d, weights=weights))
        return self.form_class(log_n0=n0, log_d0=d0, x_n=(log_n - n0)[None], x_d=(log_d - d0)[None])

    def _grid_starts(self, form) -> np.ndarray:
        grid = self.default_grid if self.start_grid is None else self.start_grid
        return form.theta_from_record(grid_product(grid, form.record_names))

    def _starts(self, form, flops, log_n, log_d, loss, w) -> np.ndarray:
        """The multi-start's starts: the grid and the best variable-projection cells; for
        more than `_SEARCH_POINTS` observations, the local optima of a fit to a subset
        spread evenly over compute instead. The search only has to find the basins, and
        its cost grows with the observations (the projection's design is cells x points,
        the refinement's Jacobian starts x points): a 10,000-run study spent over a minute
        and gigabytes there. The subset's best few optima are then refined on them all."""
        if loss.size <= _SEARCH_POINTS:
            projected = projection_starts(form, loss, w[None], n_best=self.n_projection_starts)
            return np.concatenate([self._grid_starts(form), projected[0]])
        sub = spread_subset(flops, _SEARCH_POINTS)
        small = self._make_form(log_n[sub], log_d[sub], w[sub])
        search = fit_multistart(
            small,
            np.log(loss[sub]),
            w[sub][None],
            self._starts(small, flops[sub], log_n[sub], log_d[sub], loss[sub], w[sub]),
            delta=float(self.huber_delta),
            n_refine=self.n_refine,
        )
        # The subset's form is centred on its own means: through the record coordinates,
        # which do not depend on centring, into this form's. Starts that ended in one
        # basin are refined on every observation once: Farseer's 8 best on a 10,000-run
        # study were one optimum, refined 8 times over (7 of AutoLaw's 12 s).
        keep = min(self.n_refine, _SEARCH_KEEP)
        best = distinct_rows(search.solutions[:keep], keep)
        return form.theta_from_record(small.record_coords(best))

    # --- options ----------------------------------------------------------------------

    def get_params(self) -> dict[str, object]:
        """The constructor options, as given."""
        return {
            "huber_delta": self.huber_delta,
            "flops_per_token": self.flops_per_token,
            "start_grid": self.start_grid,
            "n_refine": self.n_refine,
            "polish": self.polish,
        }

    def _check_options(self) -> None:
        delta = self.huber_delta
        if not isinstance(delta, (int, float)) or not math.isfinite(delta) or delta <= 0:
            raise FitError(f"huber_delta: expected a finite number > 0, got {delta!r}")
        if not isinstance(self.n_refine, int) or self.n_refine < 1:
            raise FitError(f"n_refine: expected an integer >= 1, got {self.n_refine!r}")
        if self.flops_per_token is not None and not callable(self.flops_per_token):
            raise FitError("flops_per_token: expected None (6 N) or a function of N")

    # --- fitting ----------------------------------------------------------------------

    def fit(self, n_params, tokens, loss, *, weights=None, groups=None, prior=None):
        """Fits the law by Approach 3 and returns self.

        Args:
            n_params: N per observation (non-embedding parameters).
            tokens: D per observation (training tokens).
            loss: L per observation (nats per token).
            weights: optional non-negative precision weight of each observation: its
                log-loss noise variance is sigma^2 / w (1, the default, for a measured
                run; less for a run stopped early, whose final loss is a prediction; 0
                leaves it out). The point fit minimises sum w rho(r); the degrees of
                freedom and sigma count runs (observations of positive weight), not the
                weights' sum (see `covariance`).
            groups: optional lineage label per observation (any hashable, e.g. the
                run_id a run's lineage starts from): runs with one label share weights
                and seed noise (a parent and its cooldown branches), so the covariance,
                the degrees of freedom and `bootstrap` count the lineage, not its runs
                (see `lineage`). None: every run is its own lineage.
            prior: optional `prior.Prior` (or a mapping of parameter values, with the
                default widths) on the parameters: the fit is then the MAP (see `prior`).

        Raises:
            FitError: bad options, observations, groups or prior, or no start reached a
                finite objective.
        """
        self._check_options()
        n, d, loss_arr, w = check_observations(
            n_params, tokens, loss, min_points=self.min_points, weights=weights
        )
        codes = lineage_codes(groups, loss_arr.size)
        prior = as_prior(prior)
        log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss_arr)
        form = self._make_form(log_n, log_d, w)
        terms = None if prior is None else prior_terms(prior, form)  # fails before the search
        delta = float(self.huber_delta)
        starts = self._starts(form, n * d, log_n, log_d, loss_arr, w)
        result = fit_multistart(
            form,
            log_l,
            w[None],
            starts,
            delta=delta,
            n_refine=self.n_refine,
            polish_best=self.polish,
        )
        if not np.isfinite(result.objective[0]):
            raise FitError(f"{self.form_name}: no start reached a finite objective")
        self.n_starts_, self.n_failed_ = result.n_starts, result.n_failed
        self.penalty_ = None  # the prior's term in the objective (bootstrap refits use it)
        if prior is not None:
            plain = result.theta[0]
            self.penalty_ = prior_penalty(form, log_l, w, codes, plain, prior, terms, delta)
            starts = map_starts(self.penalty_, plain, result.solutions)
            result = fit_multistart(
                form,
                log_l,
                w[None],
                starts,
                delta=delta,
                n_refine=len(starts),
                polish_best=self.polish,
                penalty=self.penalty_,
            )
            self.n_starts_ += result.n_starts
            self.n_failed_ += result.n_failed
        theta = result.theta[0]
        self.form_ = form
        self.theta_ = theta
        self.objective_ = float(result.objective[0])  # with a prior: the penalised objective
        self.n_obs_ = int(loss_arr.size)
        self.observations_ = (n, d, loss_arr, w)
        self.groups_ = None if groups is None else tuple(groups)
        self.prior_ = prior
        self.warm_starts_ = distinct_rows(result.solutions, _N_WARM_STARTS)
        pred, jac = form.log_loss(theta[None], jac=True)
        resid = pred[0] - log_l
        self.lineages_ = fit_lineages(codes, np.clip(resid, -delta, delta), w)
        shared = self.lineages_.corr > 0
        runs = (w > 0).astype(float)  # how many runs each observation is (not its weight)
        self.cov_, cov_problems = huber_covariance(
            jac[0],
            resid,
            w,
            self.huber_delta,
            design=self.lineages_.design_effects(runs) if shared else None,
            prior_precision=None if prior is None else self.penalty_.precision(theta),
        )
        if _bound_problems(form, theta):
            # A parameter at its bound: the delta method's slope there cannot see how far
            # it could move. At Chinchilla's floor for A the N term vanishes, and with it
            # any uncertainty about N, so a wrong form looked certain beyond the data
            # (Gadre et al.'s form, the same surface, printed a finite interval where
            # Chinchilla's singular information matrix printed none). No interval, as for
            # an unidentified fit; the warning names the parameter.
            self.cov_ = np.full_like(self.cov_, np.inf)
        # Residual degrees of freedom, for the Student t of the intervals: the runs less
        # the parameters (a run weighing less than 1 is still one run); with shared
        # lineages, Kish's effective number of runs less the parameters (at least 1).
        self.dof_ = float(runs.sum()) - theta.size
        if shared:
            self.dof_ = max(self.lineages_.effective_count(runs) - theta.size, min(1.0, self.dof_))
        # Seed-to-seed noise of one measured run's log L (weight 1), for prediction
        # intervals.
        self.noise_ = residual_scale(resid, w, len(theta), delta) if self.dof_ > 0 else np.inf
        self._form_error = None  # calibrated on first use (see `form_error_`)
        self._set_warnings(n, d, w, cov_problems)
        return self

    def _set_warnings(self, n, d, w, cov_problems: list[str]) -> None:
        theta, lineages = self.theta_, self.lineages_
        bound_problems = _bound_problems(self.form_, theta) + _design_problems(n, d)
        cautions = []
        runs = int(np.count_nonzero(w))
        if runs < 2 * len(theta):
            cautions.append(
                f"{runs} observations for {len(theta)} parameters: covariance intervals "
                "are rough; bootstrap intervals are more honest"
            )
        if lineages.corr > 0 and lineages.count < 2 * len(theta):
            cautions.append(
                f"{lineages.count} lineages for {len(theta)} parameters (within-lineage "
                f"correlation {lineages.corr:.2f}): intervals are rough"
            )
        self.warnings_ = tuple(bound_problems + cov_problems + cautions)
        self.reliable_ = not (bound_problems or cov_problems)
        for message in self.warnings_:
            log.warning("%s fit: %s", self.form_name, message)
        if self.prior_ is not None:  # a note for the record, not a reason to worry
            self.warnings_ += (f"MAP fit: a Gaussian prior pulls {self.prior_.describe()}",)
        log.info(
            "%s fit: %d observations in %d lineages (correlation %.2f), objective %.6g, "
            "%d starts (%d failed)%s",
            self.form_name,
            self.n_obs_,
            lineages.count,
            lineages.corr,
            self.objective_,
            self.n_starts_,
            self.n_failed_,
            "" if self.prior_ is None else ", with a prior",
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "theta_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet", hint="call fit(N, D, loss) first"
            )

    # --- parameters -------------------------------------------------------------------

    @property
    def params(self) -> dict[str, float]:
        """Fitted parameters by public name (Chinchilla: E, A, B, alpha, beta)."""
        self._check_fitted()
        values = self.form_.public(self.theta_[None])[0]
        return {k: float(v) for k, v in zip(self.form_.public_names, values, strict=True)}

    def param_intervals(self, *, level: float = 0.95) -> dict[str, Prediction]:
        """Each public parameter with its interval from the covariance (delta method)."""
        self._check_fitted()
        form = self.form_
        stack, steps = perturbed(self.theta_, form.lower, form.upper)
        values = form.public(stack)
        positive = np.array(form.public_positive)
        values = np.where(positive, np.log(np.maximum(values, 1e-300)), values)
        se = delta_se(values, steps, self.cov_)
        out = {}
        for i, name in enumerate(form.public_names):
            out[name] = t_interval(
                values[0, i : i + 1], se[i : i + 1], level, positive[i], True, self.dof_
            )
        return out

    # --- predictions ------------------------------------------------------------------

    def predict(
        self, n_params, tokens, *, level: float = 0.95, interval: str = "confidence"
    ) -> Prediction:
        """Predicted loss L(N, D) (nats per token) with an interval at `level`.

        Args:
            interval: "confidence" bounds the fitted curve; "prediction" bounds the loss
                of one new run there: the curve's uncertainty plus seed noise plus the
                form's extrapolation error, calibrated by backtests (`prediction`).
        """
        self._check_fitted()
        check_interval(interval)
        n, d, scalar = check_positive_pair(n_params, tokens, "n_params", "tokens")
        mean, se = self.log_mean_se(n.ravel(), d.ravel())
        if interval == "prediction":
            se = prediction_se(self, n.ravel(), d.ravel(), se)
        pred = t_interval(mean, se, level, True, scalar, self.dof_)
        return reshape_prediction(pred, n.shape, scalar)

    def log_mean_se(self, n: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log L at 1-D arrays of N and D, and the delta-method standard error of the curve."""
        self._check_fitted()
        x_n, x_d = self.form_.centred(np.log(n), np.log(d))
        out, jac = self.form_.log_loss_at(self.theta_[None], x_n[None], x_d[None], jac=True)
        return out[0], quadratic_se(jac[0], self.cov_)

    @property
    def form_error_(self) -> FormError:
        """The form's extrapolation error per decade of C, from rolling-origin backtests
        on this fit's observations (computed once, on first use)."""
        self._check_fitted()
        if self._form_error is None:
            self._form_error = calibrate_form_error(self)
        return self._form_error

    def frontier(self, flops, *, level: float = 0.95) -> Frontier:
        """N_opt, D_opt and L at compute C (FLOPs), each with its interval."""
        self._check_fitted()
        c, scalar = check_positive(flops, "flops")
        stack, steps = perturbed(self.theta_, self.form_.lower, self.form_.upper)
        parts = frontier_logs(self, stack, np.log(c.ravel()))
        preds = [
            reshape_prediction(
                t_interval(v[0], delta_se(v, steps, self.cov_), level, True, scalar, self.dof_),
                c.shape,
                scalar,
            )
            for v in parts
        ]
        return Frontier(as_output(c, scalar), *preds)

    # --- ensembles and records --------------------------------------------------------

    def bootstrap(self, n: int, seed: int | np.random.Generator = 0) -> BootstrapFit:
        """Refits `n` resamples of the observations; returns a `BootstrapFit` (new object).

        Each observation (one per run in a summary) is drawn with replacement, or each
        lineage when `fit` was given `groups`; every resample gets its own multi-start
        search, with the prior of a MAP fit (see `bootstrap.run_bootstrap`).
        """
        self._check_fitted()
        return run_bootstrap(self, n, seed)

    def record(self, *, run_ids: Sequence[str] = (), data_hash: str | None = None) -> FitRecord:
        """The fit's provenance as a `FitRecord` (intervals from the covariance)."""
        self._check_fitted()
        return record_for(self, run_ids=run_ids, data_hash=data_hash, bootstrap=None)


def _bound_problems(form, theta: np.ndarray) -> list[str]:
    span = form.upper - form.lower
    problems = []
    for j, label in enumerate(form.bound_labels):
        for side, bound in (("lower", form.lower[j]), ("upper", form.upper[j])):
            if abs(theta[j] - bound) <= 1e-6 * span[j]:
                problems.append(f"{label} is at its {side} bound: the data do not constrain it")
    return problems


# Below this ratio of the two singular values of the centred (log N, log D) cloud, the runs
# lie on one line: one compute level (N D fixed), one tokens-per-parameter ratio (D / N
# fixed), or one N or one D. The N and D terms then trade off against each other, and a
# fit can reach a low objective with parameters far from the truth and finite-looking
# covariance (seen with 8 runs of one IsoFLOP level: E 0.18 for a true 1.69).
_MIN_DESIGN_SPREAD = 0.05


def _design_problems(n: np.ndarray, d: np.ndarray) -> list[str]:
    cloud = np.column_stack([np.log(n), np.log(d)])
    singular = np.linalg.svd(cloud - cloud.mean(axis=0), compute_uv=False)
    if singular[0] > 0 and singular[1] >= _MIN_DESIGN_SPREAD * singular[0]:
        return []
    return [
        "the runs lie on one line in (log N, log D) (one compute level, one tokens-per-"
        "parameter ratio, or one N or D): the N and D terms cannot be told apart"
    ]
