"""Huber regression of log-loss, for many problems and many starts in one numpy batch.

Approach 3 of Hoffmann et al. (2022, Sec. 3.3 and App. D.2) minimises

    sum_i w_i Huber_delta(log Lhat(N_i, D_i; theta) - log L_i),   delta = 1e-3,

with L-BFGS-B from a grid of starts. Because delta is smaller than most residuals, the
objective is nearly piecewise linear: L-BFGS-B's line search fails at the kinks, so each
start stops somewhere different, and the published optimum is the best of 4,500 runs
(Besiroglu et al. 2024). A run started at the full-data optimum barely moves on a
bootstrap resample, which is why naive bootstrap intervals collapse.

This module does three things, each vectorised over problems x starts:

1. `huber_objective` evaluates the objective at every start of every problem at once
   (a grid of starts is one array operation, not a loop of `minimize` calls).
2. `refine` runs Levenberg-Marquardt on the IRLS model of the Huber loss (iteratively
   reweighted least squares, Huber 1981, Ch. 7): with weights psi(r)/r the quadratic
   lies above the loss and touches it at the current residual (rho(sqrt(s)) is concave
   in s), so its steps cross the kinks where L-BFGS-B stops. A step is kept only if
   the exact objective drops.
3. `polish` finishes one problem with scipy's L-BFGS-B on the exact objective and its
   exact gradient, so the answer is an L-BFGS-B stationary point as the paper specifies.

`covariance.huber_covariance` gives the estimator's covariance at the optimum. A
`Penalty` (a MAP fit's prior, `prior.PriorPenalty`) may be added to the objective of
all three steps.

Problems differ only in their observation weights: a bootstrap resample is a row of
counts, so 1,000 resamples x a few starts are one batch. Starts come from the caller:
a grid, warm starts, or `projection.projection_starts`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

_CHUNK_ELEMENTS = 1 << 20

# The fits' linear algebra is many small systems (starts x points x <= 9 parameters):
# OpenBLAS's threads buy nothing there, and on a busy machine they spin against each
# other. Measured on 2 cores under load: AutoLaw on 10,000 runs 12.8 s with 2 BLAS
# threads, 8.2 s with one (bench/simulated_study.py's fit phase).
one_blas_thread = threadpool_limits.wrap(limits=1, user_api="blas")


class Form(Protocol):
    """A law's functional form in internal (centred) coordinates theta, shape (..., P)."""

    name: str
    theta_names: tuple[str, ...]
    lower: np.ndarray  # (P,) box bounds used by the optimisers
    upper: np.ndarray

    def log_loss(self, theta: np.ndarray, *, jac: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """log Lhat at the form's observations: (K, M), and d/dtheta (K, M, P) if `jac`."""
        ...


class Penalty(Protocol):
    """A smooth penalty added to the Huber objective (a MAP fit's prior)."""

    def value(self, theta: np.ndarray) -> np.ndarray:
        """The penalty at each row of theta (K, P): (K,)."""
        ...

    def gauss_newton(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(value (K,), gradient (K, P), positive semi-definite Hessian model (K, P, P))."""
        ...


def huber(residual: np.ndarray, delta: float) -> np.ndarray:
    """Huber's loss: r^2/2 inside [-delta, delta], delta (|r| - delta/2) outside."""
    a = np.abs(residual)
    return np.where(a <= delta, 0.5 * residual * residual, delta * (a - 0.5 * delta))


def huber_objective(
    form: Form,
    theta: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    delta: float,
    penalty: Penalty | None = None,
) -> np.ndarray:
    """Weighted Huber objective (plus `penalty`) for each row of theta (K, P); weights (M,)
    or (K, M)."""
    pred, _ = form.log_loss(theta, jac=False)
    out = (huber(pred - log_loss, delta) * weights).sum(axis=-1)
    if penalty is not None:
        out = out + penalty.value(theta)
    return np.where(np.isfinite(out), out, np.inf)


@dataclass(frozen=True)
class Refined:
    """Result of `refine`: per problem-start theta (K, P), objective (K,), iterations (K,)."""

    theta: np.ndarray
    objective: np.ndarray
    n_iter: np.ndarray


@one_blas_thread
def refine(
    form: Form,
    theta0: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    *,
    delta: float,
    max_iter: int = 200,
    rtol: float = 1e-13,
    penalty: Penalty | None = None,
) -> Refined:
    """Minimises the Huber objective from each row of theta0 by batched IRLS-Levenberg-Marquardt.

    Args:
        form: the law's form (its observations are fixed inside it).
        theta0: starts, (K, P); clipped into the form's bounds.
        log_loss: observed log L, (M,).
        weights: (M,) shared, or (K, M) one row per problem (e.g. bootstrap counts).
        delta: Huber threshold on log-loss residuals.
        max_iter: iteration cap per start.
        rtol: a start stops after three accepted steps that each lower the objective by
            less than this fraction, or when the damping grows past 1e10 (no descent left).
        penalty: added to the objective, its Gauss-Newton model to each step's system.

    Returns:
        `Refined`; the objective never exceeds the objective at the clipped start.
    """
    theta = np.clip(np.array(theta0, dtype=float), form.lower, form.upper)
    k, p = theta.shape
    w = np.broadcast_to(weights, (k, log_loss.size))
    pred, jac = form.log_loss(theta, jac=True)
    resid = pred - log_loss
    obj = (huber(resid, delta) * w).sum(axis=1)
    if penalty is not None:
        obj = obj + penalty.value(theta)
    obj = _finite_or_inf(obj)
    damping = np.full(k, 1e-3)
    calm = np.zeros(k, dtype=int)
    n_iter = np.zeros(k, dtype=int)
    active = np.isfinite(obj)
    eye = np.eye(p)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        r, j, wi = resid[idx], jac[idx], w[idx]
        psi = np.clip(r, -delta, delta)
        omega = np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), delta))
        grad = np.einsum("km,kmp->kp", psi * wi, j)
        hess = np.matmul(j.transpose(0, 2, 1) * (omega * wi)[:, None, :], j)
        if penalty is not None:
            _, p_grad, p_hess = penalty.gauss_newton(theta[idx])
            grad, hess = grad + p_grad, hess + p_hess
        diag = np.diagonal(hess, axis1=1, axis2=2)
        ridge = damping[idx, None] * diag + 1e-12 * diag.max(axis=1, keepdims=True) + 1e-300
        system = hess + ridge[:, :, None] * eye
        try:
            step = np.linalg.solve(system, -grad[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:  # an exactly singular system somewhere in the batch
            step = -np.einsum("kpq,kq->kp", np.linalg.pinv(system), grad)
        trial = np.clip(theta[idx] + step, form.lower, form.upper)
        t_pred, t_jac = form.log_loss(trial, jac=True)
        t_resid = t_pred - log_loss
        t_obj = (huber(t_resid, delta) * wi).sum(axis=1)
        if penalty is not None:
            t_obj = t_obj + penalty.value(trial)
        t_obj = _finite_or_inf(t_obj)
        better = t_obj < obj[idx]
        gain = (obj[idx] - t_obj) / np.maximum(obj[idx], 1e-300)
        acc = idx[better]
        theta[acc], resid[acc], jac[acc], obj[acc] = (
            trial[better],
            t_resid[better],
            t_jac[better],
            t_obj[better],
        )
        damping[idx] = np.where(better, damping[idx] / 3.0, damping[idx] * 4.0)
        calm[idx] = np.where(better & (gain < rtol), calm[idx] + 1, np.where(better, 0, calm[idx]))
        n_iter[idx] += 1
        active[idx[(calm[idx] >= 3) | (damping[idx] > 1e10)]] = False
    return Refined(theta=theta, objective=obj, n_iter=n_iter)


def polish(
    form: Form,
    theta0: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    *,
    delta: float,
    penalty: Penalty | None = None,
) -> tuple[np.ndarray, float, bool]:
    """Runs scipy L-BFGS-B (exact gradient, form bounds) from theta0 (P,) for one problem.

    Returns:
        (theta, objective, ok); ok is False when the optimiser produced a non-finite value,
        in which case theta0 and its objective come back unchanged.
    """

    def fun_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        pred, jac = form.log_loss(x[None, :], jac=True)
        r = pred[0] - log_loss
        f = float((huber(r, delta) * weights).sum())
        g = jac[0].T @ (np.clip(r, -delta, delta) * weights)
        if penalty is not None:
            p_value, p_grad, _ = penalty.gauss_newton(x[None, :])
            f, g = f + float(p_value[0]), g + p_grad[0]
        return f, g

    start = np.clip(theta0, form.lower, form.upper)
    f0, _ = fun_and_grad(start)
    # L-BFGS-B stops when a step lowers f by less than ftol * max(|f|, 1): an objective of
    # 1e-5 (log-loss residuals of a few tenths of a percent) made that an absolute 1e-15,
    # which one short step in a flat valley meets. Where it stopped then hung on the
    # CPU's rounding: a Farseer fit of 11 runs stopped after 90 iterations at 6.39e-6 with
    # AVX-512 and ran 768 to 6.20e-6 without it, and AutoLaw chose another form. Scaled
    # to start at 1, both run to the same optimum.
    scale = 1.0 / f0 if np.isfinite(f0) and f0 > 0 else 1.0

    def scaled(x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = fun_and_grad(x)
        return f * scale, g * scale

    res = minimize(
        scaled,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(form.lower, form.upper, strict=True)),
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-14},
    )
    fun = fun_and_grad(res.x)[0] if np.all(np.isfinite(res.x)) else math.nan
    if not (np.all(np.isfinite(res.x)) and np.isfinite(fun)):
        log.warning("L-BFGS-B polish gave a non-finite result (%s); keeping its start", res.message)
        return start, f0, False
    if fun <= f0:
        return res.x, float(fun), True
    return start, f0, True


@dataclass(frozen=True)
class MultiStart:
    """Best theta per problem (R, P) and its objective (R,), plus bookkeeping.

    `solutions` holds, for problem 0, the refined starts sorted by objective (S, P):
    the distinct local optima a bootstrap can reuse as warm starts.
    """

    theta: np.ndarray
    objective: np.ndarray
    n_starts: int
    n_failed: int
    solutions: np.ndarray


def fit_multistart(
    form: Form,
    log_loss: np.ndarray,
    weights: np.ndarray,
    starts: np.ndarray,
    *,
    delta: float,
    n_refine: int,
    max_iter: int = 200,
    rtol: float = 1e-13,
    polish_best: bool = False,
    penalty: Penalty | None = None,
) -> MultiStart:
    """Screens every start of every problem in one batch, refines the best `n_refine`.

    Args:
        form: the law's form.
        log_loss: observed log L, (M,).
        weights: (R, M), one row of observation weights per problem.
        starts: (S, P) shared by all problems, or (R, S, P) per problem.
        delta: Huber threshold.
        n_refine: how many of the best-screened starts per problem get `refine`d.
        max_iter, rtol: `refine`'s iteration cap and stopping tolerance.
        polish_best: finish each problem's best with `polish` (L-BFGS-B); meant for
            single fits, it is a Python loop over problems.
        penalty: added to the objective everywhere (a MAP fit's prior); None for none.

    Returns:
        `MultiStart`. A start counts as failed when its refined objective is not finite.
    """
    r_count, m = weights.shape
    if starts.ndim == 2:
        starts = np.broadcast_to(starts, (r_count, *starts.shape))
    s_count, p = starts.shape[1], starts.shape[2]
    starts = np.clip(starts, form.lower, form.upper)
    flat = starts.reshape(-1, p)
    owner = np.repeat(np.arange(r_count), s_count)
    screened = np.empty(flat.shape[0])
    chunk = max(1, _CHUNK_ELEMENTS // m)  # bounds memory at about _CHUNK_ELEMENTS doubles
    for lo in range(0, flat.shape[0], chunk):
        sl = slice(lo, lo + chunk)
        screened[sl] = huber_objective(form, flat[sl], log_loss, weights[owner[sl]], delta, penalty)
    screened = screened.reshape(r_count, s_count)
    keep = min(n_refine, s_count)
    best_idx = np.argsort(screened, axis=1, kind="stable")[:, :keep]
    chosen = np.take_along_axis(starts, best_idx[:, :, None], axis=1).reshape(-1, p)
    rows = np.repeat(weights, keep, axis=0)
    refined = refine(
        form, chosen, log_loss, rows, delta=delta, max_iter=max_iter, rtol=rtol, penalty=penalty
    )
    obj = refined.objective.reshape(r_count, keep)
    theta = refined.theta.reshape(r_count, keep, p)
    n_failed = int(np.sum(~np.isfinite(obj)))
    winner = np.argmin(obj, axis=1)
    best_theta = theta[np.arange(r_count), winner].copy()
    best_obj = obj[np.arange(r_count), winner].copy()
    if polish_best:
        for r in range(r_count):
            if np.isfinite(best_obj[r]):
                best_theta[r], best_obj[r], ok = polish(
                    form, best_theta[r], log_loss, weights[r], delta=delta, penalty=penalty
                )
                n_failed += int(not ok)
    order = np.argsort(obj[0], kind="stable")
    solutions = theta[0, order][np.isfinite(obj[0, order])]
    if n_failed:
        log.info("%d of %d refined starts failed (non-finite objective)", n_failed, r_count * keep)
    return MultiStart(
        theta=best_theta,
        objective=best_obj,
        n_starts=s_count,
        n_failed=n_failed,
        solutions=solutions,
    )


def _finite_or_inf(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.inf)


def distinct_rows(rows: np.ndarray, limit: int) -> np.ndarray:
    """Up to `limit` finite rows of `rows`, in order, each at max-norm distance > 1e-3
    from those kept: a multi-start's distinct optima (its refined starts, best first,
    land in few basins)."""
    kept: list[np.ndarray] = []
    for row in rows:
        if np.all(np.isfinite(row)) and all(np.max(np.abs(row - k)) > 1e-3 for k in kept):
            kept.append(row)
            if len(kept) == limit:
                break
    return np.array(kept).reshape(-1, rows.shape[1])
