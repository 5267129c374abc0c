"""`AnnealingLaw`: the learning-rate-annealing scaling law over whole loss curves, tied
across model sizes.

Tissue et al. (2024), "Scaling Law with Learning Rate Annealing", fit one model's loss
after s updates as L(s) = L0 + A S1(s)^-alpha - C S2(s), each size with its own constants.
Tied across sizes, with Chinchilla's size term for L0 (Hoffmann et al. 2022, Eq. 2) and
an annealing gain that may grow or shrink with size:

    L(N, s) = E + A_N N^-a + A S1(s)^-alpha - C N^gamma S2(s)

Symbols (N and E as in `base`): A_N, a: scale and exponent of the size term; S1, S2: the
forward and annealing areas of the run's schedule after s updates, in learning rate x
updates (`lr_areas`, with momentum `lam`); A, alpha: scale and exponent of the area term
(the paper's letters); C N^gamma: nats per unit of S2 at size N. Every point of every
curve constrains the law, so a few runs per size cover the whole token axis, under any
schedule. (gamma: real CPU runs of 6K to 39K parameters, fitted one size at a time, had C
from 0.09 to 0.24, growing with N; one C for all sizes left their curves drifting 1-2%
from the law along a run, which a run's early points cannot tell: bench/curves_real.py's
final losses from the first 20% of a run missed by 1.57% on average, 19 of 24 inside
their 90% intervals; with gamma 1.19%, 21 of 24. gamma is 0 with one size.)

Fit (`curve_form`): Huber (delta 1e-3) on the log loss of every point after warmup (eval
loss, or smoothed train loss: `curve_data`), each run's points weighted to sum to one (a
run that logs more rows is not more runs), each run with its own log offset (its seed
noise; zero-sum over each size's runs, so sizes keep their levels and the curves' shapes
decide A, alpha and C); starts by variable projection; refined by the shared batched
IRLS-Levenberg-Marquardt and L-BFGS-B (`huber.fit_multistart`). `lam` may be a list:
each is fitted with gamma pinned at 0, the lowest objective's lam kept, and the law
refitted there with gamma free.

Intervals: the points of one curve are not independent (a run's seed noise moves them
together), so intervals come from a cluster bootstrap over runs (a cooldown branch goes
with its parent: `lineage`), drawn within each model size, each resample refitted,
offsets and all, from the full fit's optima, read as percentiles around the full fit's
value. A "prediction" interval for a
new run adds its seed noise in quadrature: the spread of the runs' mean log residuals.
`predict_final` adds a jackknife too: the law refitted without each finished run's lineage
in turn (`theta_loo_`), since a bootstrap within sizes holds every size's runs, and a
study's runs are mostly each of their own size.

What it predicts: `predict` (final loss of any RunSpec under its own schedule),
`predict_curve`, `predict_final` (a running run's final loss from its partial curve),
and `frontier` / `n_opt` / `d_opt` / `loss_opt` for one `ScheduleFamily` (by default
cosine to the end, at the fitted runs' usual peak lr, warmup, floor and batch).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from orchestrator.laws.base import (
    FitError,
    Frontier,
    NotFittedError,
    Prediction,
    as_output,
    check_positive,
    flops_6nd,
)
from orchestrator.laws.curve_data import (
    CurveSet,
    RunCurve,
    curve_points,
    final_points,
    n_params_of,
)
from orchestrator.laws.curve_form import N_LAW, CurveForm, FamilyForm, ScheduleFamily
from orchestrator.laws.frontier import FrontierAccessors, frontier_logs
from orchestrator.laws.huber import distinct_rows, fit_multistart
from orchestrator.laws.intervals import percentile_bounds
from orchestrator.laws.lineage import resample_counts
from orchestrator.laws.lr_areas import DEFAULT_LAMBDA, annealing_areas
from workers.spec import RunSpec

log = logging.getLogger(__name__)

_N_STARTS = 8  # projection cells refined for the full fit
_WARM = 4  # distinct optima of the full fit that start every bootstrap refit
_MIN_POINTS = 6
_MIN_FREE = 3  # runs beyond the model's parameters needed to estimate how far a level carries
_MIN_LEFT = 2  # runs a jackknife refit keeps
_MIN_JACKKNIFE = 3  # jackknife refits before their spread is an interval's


class AnnealingLaw(FrontierAccessors):
    """The annealing law fitted to loss curves; see the module docstring.

    Args:
        lam: S2's momentum (0.999 in Tissue et al.), or a sequence to choose from by
            the fit's objective (with gamma pinned at 0; then gamma is fitted).
        huber_delta: Huber threshold on log-loss residuals.
        n_bootstrap: cluster-bootstrap refits for intervals (0: no intervals, NaN bounds).
        seed: the bootstrap's seed.
        flops_per_token: N -> FLOPs per token for the frontier (None: 6 N).
        family: the `ScheduleFamily` of `frontier` (None: cosine, from the fitted runs).
    """

    def __init__(
        self,
        *,
        lam: float | Sequence[float] = DEFAULT_LAMBDA,
        huber_delta: float = 1e-3,
        n_bootstrap: int = 200,
        seed: int = 0,
        flops_per_token=None,
        family: ScheduleFamily | None = None,
    ):
        self.lam = lam
        self.huber_delta = huber_delta
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.flops_per_token = flops_per_token
        self.family = family

    # --- fitting ----------------------------------------------------------------------

    def fit(self, curves: CurveSet | Sequence[RunCurve]) -> AnnealingLaw:
        """Fits the law to every point of `curves` (see `curve_data.read_curves`); returns self.

        Raises:
            FitError: bad options, fewer than 6 points, or no start reached a finite
                objective.
        """
        runs = tuple(curves.runs if isinstance(curves, CurveSet) else curves)
        lams = self._check_options()
        if sum(r.steps.size for r in runs) < _MIN_POINTS:
            raise FitError(f"{sum(r.steps.size for r in runs)} curve points are too few (need 6)")
        self.runs_ = runs
        # lam is chosen with gamma pinned at 0, then gamma is fitted at that lam: with
        # D / N fixed, longer runs are larger models, and a C that varies with N can mimic
        # another S2 momentum (simulated truths of lam 0.99: a free gamma chose 0.995 in 2
        # of 20, and their runs' final losses from their first 20% missed by 1% instead
        # of 0.1-0.4%; bench/curves.py).
        best = None
        for lam in lams:
            attempt = self._fit_lam(runs, lam, free_gamma=len(lams) == 1)
            log.info("annealing law: lam %g, objective %.6g", lam, attempt[1].objective[0])
            if best is None or attempt[1].objective[0] < best[1].objective[0]:
                best = attempt
        if len(lams) > 1:
            best = self._fit_lam(runs, best[0][0], free_gamma=True)
        (lam, form, points), result = best[0], best[1]
        if not np.isfinite(result.objective[0]):
            raise FitError("annealing law: no start reached a finite objective")
        self.lam_, self.form_, self._points = lam, form, points
        self.theta_, self.objective_ = result.theta[0], float(result.objective[0])
        self._set_noise()
        self.family_ = self.family or ScheduleFamily.usual(runs)
        self.theta_samples_ = self._bootstrap(result.solutions)  # the law's own, no offsets
        self.theta_loo_ = self._jackknife(result.solutions)
        self._loo_cache: dict[int, np.ndarray] = {}
        self.warnings_ = self._warnings()
        for message in self.warnings_:
            log.warning("annealing law: %s", message)
        return self

    def _check_options(self) -> list[float]:
        lams = [self.lam] if np.ndim(self.lam) == 0 else list(self.lam)
        if not lams or not all(isinstance(x, (int, float)) and 0 <= x < 1 for x in lams):
            raise FitError(f"lam: expected numbers in [0, 1), got {self.lam!r}")
        if not isinstance(self.n_bootstrap, int) or self.n_bootstrap < 0:
            raise FitError(f"n_bootstrap: expected an integer >= 0, got {self.n_bootstrap!r}")
        if not (isinstance(self.huber_delta, (int, float)) and self.huber_delta > 0):
            raise FitError(f"huber_delta: expected a number > 0, got {self.huber_delta!r}")
        return [float(x) for x in lams]

    def _fit_lam(self, runs, lam: float, *, free_gamma: bool):
        points = curve_points(runs, lam)
        n, s1, s2, loss, w, run_index = points[:6]
        form = CurveForm.at_points(n, s1, s2, w, run_index, free_gamma=free_gamma)
        starts = form.projection_starts(loss, w, _N_STARTS)
        result = fit_multistart(
            form,
            np.log(loss),
            w[None],
            starts,
            delta=float(self.huber_delta),
            n_refine=len(starts),
            polish_best=True,
        )
        return (lam, form, points), result

    def _set_noise(self) -> None:
        """Per-run mean log residual (the run's level) and its spread across runs."""
        n, s1, s2, loss, w, run_index, _ = self._points
        x_n, x_s = self.form_.x_n, self.form_.x_s
        theta = self.theta_[None, :N_LAW]
        pred, _ = self.form_.log_loss_at(theta, x_n, x_s, self.form_.s2, jac=False)
        self.residuals_ = np.log(loss) - pred[0]  # from the law alone: a run's offset included
        level = np.bincount(run_index, self.residuals_ * w) / np.bincount(run_index, w)
        sizes = len({r.n_params for r in self.runs_})
        dof = max(1, len(self.runs_) - min(sizes, 3))  # per-size levels the size term absorbs
        self.noise_ = math.sqrt(float(np.sum(level**2)) / dof)

    def _bootstrap(self, solutions: np.ndarray) -> np.ndarray:
        """Law parameters (n, N_LAW) refitted on resamples of whole lineages of runs.

        Lineages are drawn within each model size (`resample_counts(strata=)`): the sizes are
        the study's design, not a sample, and a resample without the largest size
        extrapolated C N^gamma there (a held-out run of that size, predicted from its
        first 20%, got a 90% interval 7% wide where the others' were 1.5%).
        """
        if self.n_bootstrap == 0:
            return np.empty((0, N_LAW))
        names = list(dict.fromkeys(r.lineage for r in self.runs_))
        codes = np.array([names.index(r.lineage) for r in self.runs_])
        sizes = np.array([next(r.n_params for r in self.runs_ if r.lineage == x) for x in names])
        draws = resample_counts(
            np.random.default_rng(self.seed), codes, self.n_bootstrap, strata=sizes
        )
        out = self._refits(draws, solutions)
        out = out[np.all(np.isfinite(out), axis=1)]
        if len(out) < self.n_bootstrap / 2:
            raise FitError(f"bootstrap: {self.n_bootstrap - len(out)} of the refits failed")
        return out

    def _jackknife(self, solutions: np.ndarray) -> np.ndarray:
        """(runs, N_LAW): for each finished run, the law refitted without its lineage (NaN
        rows for the other runs, for a refit that failed, and without `n_bootstrap`), for
        `predict_final`'s jackknife (`_jackknife_sd`)."""
        out = np.full((len(self.runs_), N_LAW), np.nan)
        lineage = np.array([r.lineage for r in self.runs_])
        todo = [
            i
            for i, r in enumerate(self.runs_)
            if r.finished and np.sum(lineage != r.lineage) >= _MIN_LEFT
        ]
        if self.n_bootstrap and todo:
            draws = np.array([lineage != lineage[i] for i in todo], dtype=np.int64)
            out[todo] = self._refits(draws, solutions)
        return out

    def _refits(self, draws: np.ndarray, solutions: np.ndarray) -> np.ndarray:
        """Law parameters (len(draws), N_LAW) refitted counting run r draws[k, r] times, NaN
        where a refit failed. Each is refitted with its own offsets (`CurveForm.resampled`),
        one batch per draw, from the full fit's distinct optima (their offsets projected
        onto the draw's), by IRLS-Levenberg-Marquardt alone."""
        n, s1, s2, loss, w, run_index, _ = self._points
        starts = distinct_rows(np.vstack([self.theta_[None], solutions]), _WARM)
        offsets = self.form_.contrasts @ starts[:, N_LAW:].T  # (R, S): each start's u
        log_l = np.log(loss)
        out = np.full((len(draws), N_LAW), np.nan)
        for k, counts in enumerate(draws):
            form = self.form_.resampled(counts)
            theta0 = np.concatenate([starts[:, :N_LAW], (form.contrasts.T @ offsets).T], axis=1)
            result = fit_multistart(
                form,
                log_l,
                (counts[run_index] * w)[None],
                theta0,
                delta=float(self.huber_delta),
                n_refine=len(theta0),
                max_iter=100,
                rtol=1e-10,
            )
            if np.isfinite(result.objective[0]):
                out[k] = result.theta[0, :N_LAW]
        return out

    def _warnings(self) -> tuple[str, ...]:
        out = []
        sizes = len({r.n_params for r in self.runs_})
        if sizes < 3:
            out.append(
                f"{sizes} model size(s): the size term (E, A_N, a) needs 3 or more to be "
                "pinned down; predictions at other sizes are guesses"
            )
        if all(r.spec.schedule.kind == "constant" for r in self.runs_):
            out.append("every run has a constant learning rate: C (annealing) is not identified")
        form, theta = self.form_, self.theta_
        span = form.upper - form.lower
        for j, label in enumerate(form.bound_labels):
            if span[j] == 0:
                continue
            for side, bound in (("lower", form.lower[j]), ("upper", form.upper[j])):
                if abs(theta[j] - bound) <= 1e-6 * span[j]:
                    out.append(f"{label} is at its {side} bound: the curves do not constrain it")
        return tuple(out)

    def _check_fitted(self) -> None:
        if not hasattr(self, "theta_"):
            raise NotFittedError(
                "this AnnealingLaw is not fitted yet", hint="call fit(read_curves(store)) first"
            )

    # --- parameters -------------------------------------------------------------------

    @property
    def params(self) -> dict[str, float]:
        """E, A_N, a, A, alpha, C, gamma of the full fit (the module docstring's symbols)."""
        self._check_fitted()
        values = self.form_.public(self.theta_)[0]
        return {k: float(v) for k, v in zip(self.form_.public_names, values, strict=True)}

    def param_intervals(self, *, level: float = 0.95) -> dict[str, Prediction]:
        """Each parameter's full-fit value and bootstrap percentile interval."""
        self._check_fitted()
        samples = self.form_.public(self.theta_samples_)
        lo, hi = percentile_bounds(samples, level)
        return {
            name: Prediction(value, float(lo[i]), float(hi[i]), level)
            for i, (name, value) in enumerate(self.params.items())
        }

    # --- predictions ------------------------------------------------------------------

    def _log_loss(self, theta: np.ndarray, n, s1, s2) -> np.ndarray:
        """log L for rows of theta (K, N_LAW) at points (Q,): (K, Q)."""
        x_n, x_s = self.form_.centred(n, s1)
        out, _ = self.form_.log_loss_at(
            np.atleast_2d(theta)[:, :N_LAW], x_n[None], x_s[None], np.asarray(s2)[None], jac=False
        )
        return out

    def _thetas(self) -> np.ndarray:
        """The full fit's law parameters, then each bootstrap refit's: (1 + n, N_LAW)."""
        return np.vstack([self.theta_[None, :N_LAW], self.theta_samples_])

    def predict(
        self,
        specs: RunSpec | Sequence[RunSpec],
        *,
        level: float = 0.95,
        interval: str = "confidence",
    ) -> Prediction:
        """Final loss (nats per token) of each run spec under its own schedule.

        Args:
            interval: "confidence" bounds the law's value; "prediction" bounds one new
                run's, adding the runs' seed noise (`noise_`) in quadrature.
        """
        self._check_fitted()
        if interval not in ("confidence", "prediction"):
            raise FitError(f"interval: expected 'confidence' or 'prediction', got {interval!r}")
        scalar = isinstance(specs, RunSpec)
        specs = [specs] if scalar else list(specs)
        n, s1, s2 = final_points(specs, self.lam_)
        logs = self._log_loss(self._thetas(), n, s1, s2)
        extra = self.noise_ if interval == "prediction" else 0.0
        return _interval(logs[0], logs[1:], extra, level, scalar)

    def predict_curve(self, spec: RunSpec, steps, *, level: float = 0.95) -> Prediction:
        """The law's loss after each of `steps` updates of `spec` (confidence intervals)."""
        self._check_fitted()
        s1, s2 = annealing_areas(spec.schedule, spec.steps, steps, lam=self.lam_)
        n = np.full(s1.shape, n_params_of(spec))
        logs = self._log_loss(self._thetas(), n, np.maximum(s1, 1e-300), s2)
        return _interval(logs[0], logs[1:], 0.0, level, False)

    def predict_final(self, curve: RunCurve, *, level: float = 0.9) -> Prediction:
        """The final loss of the run whose partial curve this is (a running run's), in the
        curve's own loss: its eval loss, or its train loss if that is what the curve is
        (`RunCurve.source`; a train loss can sit well below the eval loss of a run).

        The law's final loss for its spec, times exp of the run's predicted residual at
        its end (`_end_residual`): what the finished fitted runs say the law misses at the
        end of a run of this size and this schedule, moved by as much of the run's own
        level over its points so far (its mean log residual, under every bootstrap fit) as
        the finished runs' levels at the same fraction carried to their ends. The interval
        combines in quadrature the bootstrap spread of that prediction, the finished runs'
        scatter around the same prediction of their own ends, and the jackknife spread of
        the whole prediction, made again without each finished run (`_jackknife_sd`;
        without 3 such refits, the scatter is widened by a Student t instead). A curve
        with no points after warmup gets `predict(spec, interval="prediction")`.

        (Without the jackknife, the 90% intervals of the runs bench/early_stop.py stopped
        held 71% of their final losses (274 of 387): those the law extrapolated to a size
        or a length beyond the finished runs' missed by 1-2%, which the bootstrap, holding
        the largest size's runs in every resample, cannot see, and stopping them kept them
        out of the fit, so later runs were predicted worse too. With it, 91% (310 of
        339). The Student t as well was too wide: 98%.)

        (An additive correction, the run's curve shifted by its mean gap in nats, was
        worse in bench/curves.py: the law's error at a fitted size comes from the seed
        noise of the runs it was fitted on, which scales their whole curves too.)
        """
        self._check_fitted()
        if curve.steps.size == 0:
            return self.predict(curve.spec, level=level, interval="prediction")
        spec = curve.spec
        s1, s2 = annealing_areas(spec.schedule, spec.steps, curve.steps, lam=self.lam_)
        n = np.full(s1.shape, curve.n_params)
        thetas = self._thetas()
        level_now = np.mean(np.log(curve.loss)[None] - self._log_loss(thetas, n, s1, s2), axis=1)
        fraction = curve.last_step / spec.steps
        end, sd, dof, beta = self._end_residual(fraction, curve, level_now)
        end_point = final_points([spec], self.lam_)  # the run's last step, in areas
        final = self._log_loss(thetas, *end_point)[:, 0] + end
        jackknife = self._jackknife_sd(curve, fraction, n, s1, s2, end_point, beta)
        if jackknife is not None:
            sd = math.hypot(sd, jackknife)
        elif math.isfinite(dof):
            # sd is measured on few runs: its interval is a Student t's, as a normal's of sd'.
            q = 0.5 + level / 2
            sd *= student_t.ppf(q, dof) / norm.ppf(q)
        return _interval(final[:1], final[1:, None], sd, level, True)

    def _jackknife_sd(
        self, curve: RunCurve, fraction: float, n, s1, s2, end_point, beta: float
    ) -> float | None:
        """The jackknife sd of `predict_final`'s log estimate for `curve` (its points at
        areas s1, s2 of size n, its last step at `end_point`, `final_points`'s): the
        estimate made again, law and end model (with the full data's `beta`), without each
        finished run's lineage in turn (`theta_loo_`), spread as (m - 1) / m times the sum
        of squares around their mean (Quenouille-Tukey); None below `_MIN_JACKKNIFE`
        refits.

        It measures how far the estimate leans on single runs, which a bootstrap drawn
        within each size cannot: a study's sizes are mostly run once, so the size term,
        the end model's slope in log N and the run's extrapolation to a size or length
        beyond the finished runs' all rest on one run or two.

        beta is held at the full data's: it is clipped to [0, 1], and 1 below `_MIN_FREE`
        runs, so a leave-one-out can make it jump, and a jackknife measures the spread of a
        smooth estimate only (with beta free, the stopped runs of bench/early_stop.py got
        90% intervals that held 95-96% of their final losses, the others' 98%, and weights
        so low that the study saved 17-26% of its compute, not 34%)."""
        own, cell = self._own_cell(curve)
        estimates = []
        for j, theta in enumerate(self.theta_loo_):
            if not np.all(np.isfinite(theta)):
                continue
            level = np.mean(np.log(curve.loss) - self._log_loss(theta, n, s1, s2)[0], keepdims=True)
            residuals = self._loo_residuals(j)
            shift = self._end_model(fraction, residuals, {j, own}, cell, level, beta)[0]
            estimates.append(float(self._log_loss(theta, *end_point)[0, 0] + shift[0]))
        m = len(estimates)
        if m < _MIN_JACKKNIFE:
            return None
        return math.sqrt((m - 1) / m * float(np.sum(np.square(estimates - np.mean(estimates)))))

    def _loo_residuals(self, j: int) -> np.ndarray:
        """Log residuals of every fitted point under the refit without run j's lineage
        (cached: every prediction of this fit reads them)."""
        if j not in self._loo_cache:
            n, s1, s2, loss = self._points[:4]
            logs = self._log_loss(self.theta_loo_[j], n, s1, s2)[0]
            self._loo_cache[j] = np.log(loss) - logs
        return self._loo_cache[j]

    def _end_residual(
        self, fraction: float, curve: RunCurve, level_now: np.ndarray
    ) -> tuple[np.ndarray, float, float, float]:
        """A running run's log residual at its end, given its mean residual `level_now`
        over its points up to `fraction` of its steps (one per fit: full, then bootstrap),
        the prediction's sd, the degrees of freedom of that sd (inf: none measured), and
        beta (below).

        From each other finished fitted run: e, its mean residual over its points up to
        `fraction` of its run, and f, its residual at its last point. The law misses
        the end of a run by size and by schedule alike (on bench/curves_real.py's real CPU
        runs it under-predicted every WSD run's cooldown gain by 0.5-2.6% and
        over-predicted cosine's at the larger sizes by ~2%; a size-only correction left
        both), so f and e are each fitted by a linear model, a mean, a slope in log N and
        an effect per schedule (least squares; a schedule no finished run has gets the
        others' mean effect), and the run's end is predicted as
        f(x) + beta (level_now - e(x)), x its size and schedule: beta, in [0, 1], the
        regression of the finished runs' f deviations from the model on their e
        deviations (1 when a run's level persists along it, as seed noise that scales a
        whole curve does; near 0 when its early wander tells nothing of its end), or 1,
        the law's own model, with fewer than 3 runs beyond the model's parameters. The sd
        is the finished runs' scatter of f - beta e around the model, over their degrees
        of freedom left (returned: without a jackknife, `predict_final` reads its interval
        off a Student t, since a scatter measured on a few runs is itself uncertain), with
        the run's leverage, plus, for a schedule no finished run has, the variance of the
        others' effects; with no degree of freedom left, the spread of f - beta e over the
        runs.

        (An effect per size, rather than a slope, left a study's runs, each of their own
        size, no degree of freedom: bench/early_stop.py's stopped runs' 90% intervals
        covered 59% of their final losses. With the slope and the t, 73% (before the
        jackknife: `predict_final`); and on bench/curves_real.py's runs, each predicted
        from its first 20%, 0.87% error, 23 of 24 covered, against 0.93% and 22 with
        effects per size.)
        """
        own, cell = self._own_cell(curve)
        return self._end_model(fraction, self.residuals_, {own}, cell, level_now)

    def _own_cell(self, curve: RunCurve) -> tuple[int, tuple]:
        """The curve's run's index among the fitted runs (-1 if none), and its (N, schedule)."""
        own = next((i for i, r in enumerate(self.runs_) if r.run_id == curve.run_id), -1)
        return own, (curve.n_params, curve.spec.schedule)

    def _end_model(
        self,
        fraction: float,
        residuals: np.ndarray,
        skip: set,
        cell: tuple,
        level_now,
        beta: float | None = None,
    ) -> tuple[np.ndarray, float, float, float]:
        """`_end_residual` from the log `residuals` of the fitted points under some fit,
        without the runs of index in `skip`, for a run of `cell` (N, schedule), with beta
        (returned last) held at `beta` if given."""
        run_index, steps = self._points[5], self._points[6]
        cells, early, end = [], [], []
        for i, run in enumerate(self.runs_):
            if not run.finished or i in skip:
                continue
            mine = run_index == i
            first = mine & (steps <= fraction * run.total_steps)
            if first.any():
                cells.append((run.n_params, run.spec.schedule))
                early.append(float(residuals[first].mean()))
                end.append(float(residuals[mine][-1]))
        if not cells:
            return level_now, self.noise_, math.inf, 1.0
        x, x0, unseen = _additive_design(cells, cell)
        pinv = np.linalg.pinv(x)
        early, end = np.array(early), np.array(end)
        free = len(cells) - np.linalg.matrix_rank(x)  # runs beyond the model's parameters
        de, df = early - x @ (pinv @ early), end - x @ (pinv @ end)
        held, beta = beta is not None, 1.0 if beta is None else beta
        # beta 1 is the law's own model: a run's offset holds along its whole curve
        if free >= _MIN_FREE and de @ de > 1e-12:
            beta = beta if held else float(np.clip(de @ df / (de @ de), 0.0, 1.0))
            free -= 1
        gap = end - beta * early  # what a run's end adds to the level it carries
        gap_fit = pinv @ gap
        shift = x0 @ gap_fit + beta * level_now
        if free < 1:  # as many parameters as runs: only the runs' spread says how far off
            if gap.size < 2:
                return shift, self.noise_, math.inf, beta
            return shift, float(np.std(gap, ddof=1)), gap.size - 1, beta
        scatter = float(np.sum((gap - x @ gap_fit) ** 2)) / free
        leverage = float(x0 @ pinv @ pinv.T @ x0)
        # A schedule no finished run has may be missed as much as the others are: its
        # effect, unknown, varies as theirs do.
        effects = gap_fit[2:]  # one per schedule seen (`_additive_design`'s columns)
        unknown = float(np.var(effects, ddof=1)) if unseen and effects.size > 1 else 0.0
        return shift, math.sqrt(scatter * (1 + leverage) + unknown), free, beta

    # --- the frontier -----------------------------------------------------------------

    def frontier(
        self, flops, *, family: ScheduleFamily | None = None, level: float = 0.95
    ) -> Frontier:
        """N_opt, D_opt and L at compute C (FLOPs) for runs of `family` (default `family_`),
        each with its bootstrap percentile interval."""
        self._check_fitted()
        c, scalar = check_positive(flops, "flops")
        family = family or self.family_
        fpt = self.flops_per_token or flops_6nd
        log_c = np.log(c.ravel())
        runs_d = np.array([r.spec.steps * r.spec.tokens_per_step for r in self.runs_], float)
        runs_n = np.array([r.n_params for r in self.runs_])
        ratio = float(np.mean(np.log(runs_d) - np.log(runs_n)))
        adapter = FamilyForm(self.form_, family, self.lam_, ratio, log_c)
        fitted = SimpleNamespace(form_=adapter, flops_per_token=fpt)
        parts = frontier_logs(fitted, self._thetas(), log_c)
        preds = [_interval(v[0], v[1:], 0.0, level, scalar, infinite=True) for v in parts]
        return Frontier(as_output(c, scalar), *preds)


def _interval(point, samples, extra_sd, level, scalar, *, infinite=False) -> Prediction:
    """exp(point) with percentile bounds of exp(samples) (K, Q), widened on the log scale by
    z x extra_sd in quadrature; NaN bounds without samples. `infinite`: keep infinite
    draws (`percentile_bounds`)."""
    if not 0 < level < 1:
        raise FitError(f"level: expected a number between 0 and 1, got {level!r}")
    point = np.asarray(point, dtype=float)
    if len(samples):
        lo, hi = percentile_bounds(samples, level, infinite=infinite)
        half_lo, half_hi = point - lo, hi - point
    else:
        half_lo = half_hi = np.full(point.shape, np.nan)
    z = norm.ppf(0.5 + level / 2)
    if extra_sd:
        half_lo = np.hypot(np.nan_to_num(half_lo), z * extra_sd)
        half_hi = np.hypot(np.nan_to_num(half_hi), z * extra_sd)
    with np.errstate(over="ignore"):
        values = np.exp(point), np.exp(point - half_lo), np.exp(point + half_hi)
    return Prediction(*(as_output(v, scalar) for v in values), level=level)


def _additive_design(cells: list[tuple[float, object]], new: tuple[float, object]):
    """Rows of a mean, a slope in log N and one indicator per schedule, for `cells`
    ((N, schedule) of each run) and for `new`, and whether no cell has `new`'s schedule
    (that schedule has no column: its row holds the average of the seen schedules'
    indicators, their mean effect).

    Size enters as a slope: a study's runs are mostly each of their own size, where an
    effect per size would leave no run to measure the scatter by. Beyond the sizes seen,
    the nearest one's value: a trend in the misfit is measured between them only (the
    largest run of tests/test_end_to_end.py's study, predicted half-way, fell 10.3% short
    of its final eval loss with the slope carried on, 9.3% without)."""
    schedules = list(dict.fromkeys(c[1] for c in cells))
    logs = [math.log(c[0]) for c in cells]
    centre = float(np.mean(logs))

    def row(cell: tuple) -> np.ndarray:
        log_n = min(max(math.log(cell[0]), min(logs)), max(logs))
        return np.array([1.0, log_n - centre] + [float(cell[1] == v) for v in schedules])

    x0 = row(new)
    unseen = new[1] not in schedules
    if unseen:
        x0[2:] = 1.0 / len(schedules)
    return np.array([row(c) for c in cells]), x0, unseen
