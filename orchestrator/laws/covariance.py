"""The covariance of an Approach 3 fit: the Huber M-estimator's asymptotics.

Weights are precision weights: observation i's log-loss residual has variance
sigma^2 / w_i (1 for a measured run; a run stopped early, whose final loss is a
prediction, less; 0 leaves it out). They say how much each run is trusted, not how many
runs it stands for: n, the number of runs (observations of positive weight), sets the
degrees of freedom, sigma^2 = sum w r^2 / (n - p (2 - v)) with v = tau^2 / sigma^2 (see
`residual_scale`), and sigma is the noise of one measured run. For runs that all weigh 1,
cov = tau^2 (J^T J)^-1 with tau^2 = E[psi^2] / E[psi']^2 for N(0, sigma^2) residuals
(Huber 1981, Ch. 7); otherwise the sandwich H^-1 B H^-1 with each run's moments at its
own scale sigma / sqrt(w_i).
Runs that share a lineage (a parent and its cooldown branches) get a sandwich whose meat
weighs each run by its lineage's design effect (see `lineage` for the model and why), and
a MAP fit adds its prior's precision (see `prior`, which also uses `prior_scale`).
"""

from __future__ import annotations

import math

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
    # The degrees of freedom are accounted for once: sigma's estimate counts the noise
    # the fit absorbed (n - p (2 - v), `residual_scale`), and the intervals use a Student
    # t with n - p degrees of freedom; no further n / (n - p) inflation (it counted them
    # twice).
    sigma = residual_scale(resid, weights, p, delta)
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


def residual_scale(resid: np.ndarray, weights: np.ndarray, p: int, delta: float) -> float:
    """sigma, the noise of one run of weight 1, from the residuals of a Huber fit at
    `delta` with p parameters: sqrt(sum w r^2 / (n - p (2 - v))), n the runs of positive
    weight (each counts once, see the module docstring) and v = tau^2 / sigma^2.

    Why n - p (2 - v): a fit's residual is r = e - J (theta-hat - theta), so
    E[sum w r^2] = n sigma^2 - 2 E[e^T W J (theta-hat - theta)] + tr(J^T W J cov). For
    normal noise Stein's lemma makes E[e psi(e)] = sigma^2 E[psi'], so the cross term is
    p sigma^2 for any psi, and the last is p tau^2 = p v sigma^2. Least squares (v = 1)
    gives the familiar n - p; a Huber fit with delta << sigma (v -> pi/2, least absolute
    deviations) absorbs less noise, n - 0.43 p. v depends on sigma through delta / sigma:
    a few fixed-point steps (v moves from 1 to pi/2 only). With precision weights, v is
    the runs' mean, each at its own scale sigma / sqrt(w_i), so that scaling every weight
    leaves the intervals as they were (an approximation of the sandwich's trace).

    Measured on 400 seeded Chinchilla fits (n_refine=8) per size, p = 5, sigma = 0.01,
    random N in 1e7-1e9 and D in 1e9-1e11 (v = 1.49), mean sigma-hat^2 / sigma^2:
    n = 10, 14, 20, 30, 60 runs: 0.92, 0.97, 1.01, 0.96, 0.98 (standard errors 0.03 to
    0.01). The former estimate, the larger of this RMS over n - p (1.37, 1.23, 1.17, 1.05,
    1.03) and 1.4826 x the median |r| after dropping the p smallest (1.66, 1.28, 1.19,
    1.10, 1.03), gave 1.97, 1.55, 1.41, 1.23, 1.13: both parts are biased upward at small
    n, and the larger of two noisy estimates more so. With normal noise the robust part
    was larger only by chance, and with heavy tails the RMS is the larger anyway (1.6x
    on the Chinchilla figure data, where it matches the bootstrap's spread), so the
    maximum only widened intervals. Measured with it and with this estimate: AutoLaw's
    90% prediction intervals on 16 simulated sweeps of Gadre et al.'s C4 design (its
    overtraining fit as the truth, 1.4% seed noise; rolling-origin backtests of 11-23
    degrees of freedom) cover 98% and 96% pooled (the overtraining form alone 97%, 94%);
    the seeded Chinchilla studies of tests/orchestrator/laws/test_prediction.py 0.92 and
    0.89; Epoch's 240 runs 83% either way.
    """
    runs = weights > 0
    n = float(runs.sum())
    ss = float(np.sum(weights[runs] * resid[runs] ** 2))
    if ss <= 0:  # an exact fit
        return 0.0
    sigma = math.sqrt(ss / (n - p))  # least squares' estimate: a start above the answer
    for _ in range(_SCALE_STEPS):
        scale = sigma / np.sqrt(weights[runs])
        e_psi2, e_dpsi = _psi_moments(scale, delta)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = e_psi2 / (e_dpsi * scale) ** 2
        # a run so imprecise that delta / its scale underflows: the LAD limit
        v = float(np.mean(np.where(np.isfinite(ratio), ratio, math.pi / 2)))
        sigma = math.sqrt(ss / (n - p * (2 - v)))
    return sigma


# Fixed-point steps for `residual_scale`'s v(sigma): v moves only between 1 and pi/2 and
# slowly in sigma, so the steps contract fast; measured at 14 runs, 5 parameters and
# delta / sigma of 0.1, 1 and 3, three steps agree with twenty to 1e-5 relative.
_SCALE_STEPS = 3


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
