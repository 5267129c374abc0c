"""Delta-method intervals for a point fit: central differences and Student-t bounds.

A derived quantity q(theta) (a public parameter, L at (N, D), N_opt at C) gets the
standard error sqrt(g cov g^T), with g = dq/dtheta by central differences around the
fitted theta (`perturbed`, `delta_se`), or from an exact Jacobian (`quadratic_se`).
`t_interval` turns it into a two-sided `Prediction`, on the log scale for positive
quantities so that intervals stay positive. An ensemble's draws (a bootstrap) give
percentile bounds instead (`percentile_bounds`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import t as student_t

from orchestrator.laws.base import FitError, Prediction, as_output


def perturbed(theta: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """theta, then theta +- h e_j for each j (clipped to bounds): (1 + 2P, P), and the
    actual differences (P,) between each + and - row, for central differences."""
    p = theta.size
    h = 1e-6 * (1 + np.abs(theta))
    plus = np.clip(theta + np.diag(h), lower, upper)
    minus = np.clip(theta - np.diag(h), lower, upper)
    stack = np.empty((1 + 2 * p, p))
    stack[0], stack[1::2], stack[2::2] = theta, plus, minus
    return stack, np.diag(plus - minus).copy()


def delta_se(values: np.ndarray, steps: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Delta-method standard errors of values[0] (Q,) from a `perturbed` stack (1+2P, Q)."""
    # A quantity infinite on both sides of theta (a degenerate fit) has no slope: inf - inf
    # is NaN, and so is its standard error, which the interval passes on as unknown.
    with np.errstate(invalid="ignore"):
        grads = (values[1::2] - values[2::2]) / steps[:, None]  # (P, Q)
    return quadratic_se(grads.T, cov)


def quadratic_se(grads: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """sqrt(g cov g^T) per row of grads (Q, P); inf when the covariance is not finite."""
    if not np.all(np.isfinite(cov)):
        return np.full(grads.shape[0], np.inf)
    with np.errstate(invalid="ignore"):
        var = np.einsum("qp,pr,qr->q", grads, cov, grads)
    return np.sqrt(np.maximum(var, 0.0))


def t_interval(center, se, level: float, positive: bool, scalar: bool, dof: float) -> Prediction:
    """center +- t se (Student t with `dof` degrees of freedom), on the log scale if positive.

    Raises:
        FitError: level is not strictly between 0 and 1.
    """
    if not 0 < level < 1:
        raise FitError(f"level: expected a number between 0 and 1, got {level!r}")
    z = student_t.ppf(0.5 + level / 2, dof) if dof > 0 else np.inf
    with np.errstate(over="ignore", invalid="ignore"):
        lo, hi = center - z * se, center + z * se
        if positive:
            center, lo, hi = np.exp(center), np.exp(lo), np.exp(hi)
    return Prediction(*(as_output(v, scalar) for v in (center, lo, hi)), level=level)


def reshape_prediction(pred: Prediction, shape: tuple[int, ...], scalar: bool) -> Prediction:
    """The prediction with array fields reshaped to `shape` (unchanged for a scalar)."""
    if scalar:
        return pred
    return Prediction(
        *(np.reshape(v, shape) for v in (pred.mean, pred.lo, pred.hi)), level=pred.level
    )


def percentile_bounds(
    samples: np.ndarray, level: float, *, infinite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The central `level` percentiles of `samples` over axis 0, as numpy's default
    (linear) quantiles, leaving out NaN draws; all-NaN columns give NaN.

    infinite: keep infinite draws, as the frontier's: a refit whose optimum lies beyond
    the search on one side (`frontier`) says so, and left out, those refits made the
    bounds of the rest look certain (given to numpy, inf - inf made the bound NaN). A
    percentile among such draws, or between one and a finite draw, is then infinite.
    False (predictions, parameters) leaves them out with the NaN ones: there an infinite
    draw is a refit gone degenerate (its loss overflows), not a direction.

    Raises:
        FitError: level is not strictly between 0 and 1.
    """
    if not 0 < level < 1:
        raise FitError(f"level: expected a number between 0 and 1, got {level!r}")
    samples = np.asarray(samples, dtype=float)
    if not infinite:
        samples = np.where(np.isfinite(samples), samples, np.nan)
    ordered = np.sort(samples, axis=0)  # NaN sorts last
    last = np.maximum(np.sum(~np.isnan(samples), axis=0) - 1, 0)
    bounds = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        i = np.floor(last * q).astype(int)
        frac = last * q - i
        below = np.take_along_axis(ordered, i[None], 0)[0]
        above = np.take_along_axis(ordered, np.minimum(i + 1, last)[None], 0)[0]
        with np.errstate(invalid="ignore"):
            x = np.where(
                (frac == 0) | (below == -np.inf),
                below,
                np.where(above == np.inf, np.inf, below + frac * (above - below)),
            )
        bounds.append(x)
    return bounds[0], bounds[1]
