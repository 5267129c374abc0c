"""The covariance of an Approach 3 fit: the Huber M-estimator's asymptotics.

Weights are precision weights: observation i's log-loss residual has variance
sigma^2 / w_i (1 for a measured run; a run stopped early, whose final loss is a
prediction, less; 0 leaves it out). They say how much each run is trusted, not how many
runs it stands for: n, the number of runs (observations of positive weight), sets the
degrees of freedom, sigma^2 = sum w r^2 / (n - p), and sigma is the noise of one
measured run (`residual_scale`). For runs that all weigh 1, cov = tau^2 (J^T J)^-1 with
tau^2 = E[psi^2] / E[psi']^2 for N(0, sigma^2) residuals (Huber 1981, Ch. 7); otherwise
the sandwich H^-1 B H^-1 with each run's moments at its own scale sigma / sqrt(w_i).
Runs that share a lineage (a parent and its cooldown branches) get a sandwich whose meat
weighs each run by its lineage's design effect (see `lineage` for the model and why), and
a MAP fit adds its prior's precision (see `prior`, which also uses `prior_scale`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


def huber_covariance(
    jac: np.ndarray,
    resid: np.ndarray,
    weights: np.ndarray,
    delta: float,
    *,
    design: np.ndarray | None = None,
    prior_precision: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Asymptotic covariance of the Huber fit in internal coordinates, and any problems.

    Runs that all weigh 1 and are independent: tau^2 (J^T J)^-1. Otherwise the sandwich
    H^-1 B H^-1 with H = J^T diag(w E[psi'_i]) J and B = J^T diag(w^2 E[psi_i^2] d_i) J,
    the moments for residuals ~ N(0, sigma^2 / w_i) and d_i each run's lineage design
    effect (`design`, `lineage.Lineages.design_effects`; 1 without). With
    `prior_precision` (a MAP fit's, in internal coordinates) the posterior
    (H B^-1 H + prior precision)^-1. Returns an all-infinite matrix (and a reason) when
    the parameters are not identified.
    """
    p = jac.shape[1]
    runs = int(np.count_nonzero(weights))
    infinite = np.full((p, p), np.inf)
    if runs <= p:
        return infinite, [f"{runs} observations for {p} parameters: no interval is possible"]
    info = jac.T @ (jac * weights[:, None])
    if not np.all(np.isfinite(info)):
        return infinite, ["a parameter has no effect on any observation: it is not identified"]
    if prior_precision is None and (problem := _unidentified(info)):
        return infinite, [problem]
    # The degrees of freedom are accounted for once: sigma's estimate divides by n - p,
    # and the intervals use a Student t with n - p degrees of freedom; no further
    # n / (n - p) inflation (it counted them twice).
    sigma = residual_scale(resid, weights, p)
    unit = bool(np.all(weights[weights > 0] == 1))
    if unit and design is None and prior_precision is None:
        return _huber_variance_factor(sigma, delta) * np.linalg.inv(info), []
    if sigma <= 0:  # an exact fit: the data leave no uncertainty
        return np.zeros((p, p)), []
    if unit:  # one scale for every run: tau^2 factors out of H and B
        tau2, meat_w = _huber_variance_factor(sigma, delta), weights
    else:  # each run's moments at its own scale sigma / sqrt(w_i): tau^2 is inside H and B
        tau2 = 1.0
        bread_w, meat_w = _weighted_moments(sigma, weights, delta)
        info = jac.T @ (jac * bread_w[:, None])
    if design is not None:
        meat = jac.T @ (jac * (meat_w * design)[:, None])
    else:
        meat = info if unit else jac.T @ (jac * meat_w[:, None])
    if prior_precision is None:
        bread = np.linalg.inv(info)
        cov = tau2 * bread @ meat @ bread
        return (cov + cov.T) / 2, []
    precision = info @ np.linalg.pinv(meat, hermitian=True) @ info / tau2 + prior_precision
    if problem := _unidentified(precision):
        return infinite, [problem + ", even with the prior"]
    cov = np.linalg.inv(precision)
    return (cov + cov.T) / 2, []


def _weighted_moments(sigma: float, weights: np.ndarray, delta: float):
    """(w E[psi'_i], w^2 E[psi_i^2]) per run, (M,) each, for residuals ~ N(0, sigma^2 / w_i);
    0 for a run of weight 0."""
    bread_w, meat_w = np.zeros_like(weights), np.zeros_like(weights)
    pos = weights > 0
    w = weights[pos]
    e_psi2, e_dpsi = _psi_moments(sigma / np.sqrt(w), delta)
    bread_w[pos], meat_w[pos] = w * e_dpsi, w**2 * e_psi2
    return bread_w, meat_w


def _unidentified(info: np.ndarray) -> str:
    """Why an information matrix leaves a parameter unidentified, or ""."""
    scale = np.sqrt(np.diag(info))
    if np.any(scale <= 0) or not np.all(np.isfinite(info)):
        return "a parameter has no effect on any observation: it is not identified"
    corr = info / np.outer(scale, scale)
    eig = np.linalg.eigvalsh(corr)
    if eig[0] < 1e-12 * eig[-1]:
        return "the observations cannot separate the parameters (e.g. all runs share one N or D)"
    return ""


def prior_scale(sigma: float, delta: float) -> float:
    """E[psi^2] / E[psi'] for residuals ~ N(0, sigma^2): the weight c that makes a
    penalty c/2 ((phi - mu) / sd)^2 count as a prior of precision 1 / sd^2 against the
    Huber objective (tau^2 E[psi']; sigma^2 for least squares; see `prior`)."""
    if not sigma > 0:
        return 0.0
    e_psi2, e_dpsi = _psi_moments(sigma, delta)
    return e_psi2 / e_dpsi


def residual_scale(resid: np.ndarray, weights: np.ndarray, p: int) -> float:
    """sigma, the noise of one run of weight 1: the larger of a robust and a
    degrees-of-freedom estimate from the residuals standardised by sqrt(w) (precision
    weights, see the module docstring; each of the n runs of positive weight counts once).

    Robust: 1.4826 x median sqrt(w)|r| after dropping the p smallest (a Huber fit with
    small delta, like least absolute deviations, sets about p residuals to ~0).
    Degrees of freedom: sqrt(sum w r^2 / (n - p)), which, unlike the median, accounts for
    the fit absorbing noise when n is close to p, and for heavy tails (on the Chinchilla
    figure data it is 1.6x the robust value and matches the bootstrap's spread).
    Taking the larger errs towards wider intervals.
    """
    runs = weights > 0
    scaled = np.sqrt(weights[runs]) * np.abs(resid[runs])
    a = np.sort(scaled)[p:]
    robust = 1.4826 * float(a[(a.size - 1) // 2])  # the lower median
    rms = float(np.sqrt(np.sum(weights * resid**2) / (runs.sum() - p)))
    return max(robust, rms)


def _huber_variance_factor(sigma: float, delta: float) -> float:
    """E[psi^2] / E[psi']^2 for residuals ~ N(0, sigma^2) and Huber's psi at delta."""
    if sigma <= 0:
        return 0.0
    e_psi2, e_dpsi = _psi_moments(sigma, delta)
    return e_psi2 / e_dpsi**2


def _psi_moments(sigma, delta: float):
    """(E[psi^2], E[psi']) of Huber's psi at delta for residuals ~ N(0, sigma^2); floats
    for a float sigma, arrays for an array."""
    k = delta / sigma
    inside = 2 * norm.cdf(k) - 1
    e_psi2 = sigma**2 * (inside - 2 * k * norm.pdf(k)) + 2 * delta**2 * norm.sf(k)
    if np.ndim(sigma):
        return e_psi2, inside
    return float(e_psi2), float(inside)
