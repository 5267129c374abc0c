"""The covariance of an Approach 3 fit: the Huber M-estimator's asymptotics.

For independent runs, cov = tau^2 (J^T W J)^-1 with tau^2 = E[psi^2] / E[psi']^2 for
N(0, sigma^2) residuals (Huber 1981, Ch. 7), sigma from `residual_scale`. Runs that
share a lineage (a parent and its cooldown branches) get a sandwich whose meat weighs
each run by its lineage's design effect (see `lineage` for the model and why), and a
MAP fit adds its prior's precision (see `prior`, which also uses `prior_scale`).
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

    Independent runs: tau^2 (J^T W J)^-1. With `design` (each run's lineage design
    effect, `lineage.Lineages.design_effects`) the sandwich tau^2 H^-1 B H^-1 with
    H = J^T W J and B = J^T W diag(design) J. With `prior_precision` (a MAP fit's, in
    internal coordinates) the posterior (H B^-1 H / tau^2 + prior precision)^-1.
    Returns an all-infinite matrix (and a reason) when the parameters are not identified.
    """
    p = jac.shape[1]
    m_eff = float(weights.sum())
    infinite = np.full((p, p), np.inf)
    if m_eff <= p:
        return infinite, [f"{m_eff:g} observations for {p} parameters: no interval is possible"]
    info = jac.T @ (jac * weights[:, None])
    if not np.all(np.isfinite(info)):
        return infinite, ["a parameter has no effect on any observation: it is not identified"]
    if prior_precision is None and (problem := _unidentified(info)):
        return infinite, [problem]
    # The degrees of freedom are accounted for once: sigma's estimate divides by M - p,
    # and the intervals use a Student t with M - p degrees of freedom; no further
    # M / (M - p) inflation (it counted them twice).
    sigma = residual_scale(resid, weights, p)
    tau2 = _huber_variance_factor(sigma, delta)
    if design is None and prior_precision is None:
        return tau2 * np.linalg.inv(info), []
    if tau2 <= 0:  # an exact fit: the data leave no uncertainty
        return np.zeros((p, p)), []
    meat = info if design is None else jac.T @ (jac * (weights * design)[:, None])
    if prior_precision is None:
        bread = np.linalg.inv(info)
        cov = tau2 * bread @ meat @ bread
        return (cov + cov.T) / 2, []
    precision = info @ np.linalg.pinv(meat, hermitian=True) @ info / tau2 + prior_precision
    if problem := _unidentified(precision):
        return infinite, [problem + ", even with the prior"]
    cov = np.linalg.inv(precision)
    return (cov + cov.T) / 2, []


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
    """sigma of the residuals: the larger of a robust and a degrees-of-freedom estimate.

    Robust: 1.4826 x weighted median |r| after dropping the p smallest |r| (a Huber fit
    with small delta, like least absolute deviations, sets about p residuals to ~0).
    Degrees of freedom: sqrt(sum w r^2 / (M - p)), which, unlike the median, accounts for
    the fit absorbing noise when M is close to p, and for heavy tails (on the Chinchilla
    figure data it is 1.6x the robust value and matches the bootstrap's spread).
    Taking the larger errs towards wider intervals.
    """
    order = np.argsort(np.abs(resid))
    a, w = np.abs(resid)[order], weights[order]
    keep = np.cumsum(w) > p
    a, w = a[keep], w[keep]
    cum = np.cumsum(w)
    robust = 1.4826 * float(a[np.searchsorted(cum, cum[-1] / 2)])
    rms = float(np.sqrt(np.sum(weights * resid**2) / (weights.sum() - p)))
    return max(robust, rms)


def _huber_variance_factor(sigma: float, delta: float) -> float:
    """E[psi^2] / E[psi']^2 for residuals ~ N(0, sigma^2) and Huber's psi at delta."""
    if sigma <= 0:
        return 0.0
    e_psi2, e_dpsi = _psi_moments(sigma, delta)
    return e_psi2 / e_dpsi**2


def _psi_moments(sigma: float, delta: float) -> tuple[float, float]:
    """(E[psi^2], E[psi']) of Huber's psi at delta for residuals ~ N(0, sigma^2)."""
    k = delta / sigma
    inside = 2 * norm.cdf(k) - 1
    e_psi2 = sigma**2 * (inside - 2 * k * norm.pdf(k)) + 2 * delta**2 * norm.sf(k)
    return float(e_psi2), float(inside)
