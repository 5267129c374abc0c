"""The form's misfit as a smooth discrepancy, for `active`: what a run far from the
targets is worth when the form is only roughly right.

Kennedy & O'Hagan's (2001) calibration model, on log-loss:

    log L(x) = form(x; theta) + delta(x) + noise,

with x = (log N, log D/N), delta a zero-mean Gaussian process with squared-exponential
covariance tau^2 exp(-|x - x'|^2 / 2 l^2) (one length scale l per coordinate, in
e-folds), and white seed noise of variance s^2. The quantity wanted at a target run t is
form(t; theta) + delta(t).

The law that will predict is the form's own least-squares fit, with no discrepancy
term (the study's Chinchilla, the replay's AutoLaw). Its error at t is judged, not a
posterior variance (`FitErrorState`): a run far from the targets moves that fit by its
own delta, unrelated to delta(t), so its expected worth can be negative, however cheap
the run; a run near the targets shares their delta and corrects the fit towards it.
(A posterior variance under the same model, which assumes a predictor that knows delta,
was tried first: it still sent the study to the cheap corners of the N-D plane, and the
Epoch replay's error did not move; bench/replay_real.py.)

`learn_discrepancy` splits the fit's residuals into a smooth part (tau, l) and white
noise (s) by maximising their restricted likelihood (REML: the residuals' likelihood
with the linearised parameters integrated out; Rasmussen & Williams 2006, sec. 2.7) over
a small grid. tau is kept at least `_MIN_SD`: a 5-parameter fit to a study's few
runs absorbs most of the misfit, and its residuals then show about the seed noise
(REML on 10-80 runs of the Epoch sweep: tau ~ 0.005), while on whole sweeps the same
REML finds tau of 0.013-0.025 (Epoch's 240 runs) and 0.05-0.12 (Gadre et al.'s three
sweeps of 34-35 runs), with length scales of 1-2 e-folds (hence `_LENGTHS`).

`plan_fit_error` builds active's greedy plans on `FitErrorState` (active.py says how).
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass

import numpy as np

from orchestrator.adaptive.strategies.base import best_affordable

_LENGTHS = (1.0, 2.0)  # e-folds of N and of D/N: what REML chooses on whole sweeps
_SHARES = (0.5, 0.7, 0.9, 0.97)  # smooth share of the residual variance
_MIN_SD = 0.01  # floor of tau, std of log-loss (module docstring)
_JITTER = 1e-10  # relative to the diagonal: keeps Cholesky factors of repeated points


@dataclass(frozen=True)
class Discrepancy:
    """The misfit model: delta's scale and length scales, and the white noise left."""

    sd: float  # tau: std of delta(x), on log-loss
    length_n: float  # l of log N, e-folds
    length_r: float  # l of log D/N, e-folds
    noise_sd: float  # s: std of the white (seed) noise of log-loss

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cov(delta(a_i), delta(b_j)) for rows (log N, log D/N) of a and b: (len a, len b)."""
        scale = np.array([self.length_n, self.length_r])
        diff = (a[:, None, :] - b[None, :, :]) / scale
        return self.sd**2 * np.exp(-0.5 * np.sum(diff**2, axis=-1))


def coordinates(n_params, tokens) -> np.ndarray:
    """(log N, log D/N) of each run: (K, 2)."""
    log_n = np.log(np.asarray(n_params, float))
    return np.stack([log_n, np.log(np.asarray(tokens, float)) - log_n], axis=-1)


def learn_discrepancy(
    x: np.ndarray, resid: np.ndarray, basis: np.ndarray, weights: np.ndarray, *, min_noise: float
) -> Discrepancy:
    """The (tau, l, s) of the grid that maximise the REML likelihood of `resid`.

    Args:
        x: (M, 2) observed runs' coordinates (`coordinates`).
        resid: (M,) log L observed - form(x; estimate).
        basis: (M, P) the form's Jacobian at the estimate: the directions the fit's own
            parameters absorb, which the restricted likelihood integrates out.
        weights: (M,) multiplicities (noise variance s^2 / w).
        min_noise: floor of s, std of log-loss.
    """
    m, p = basis.shape
    dof = m - p
    middle = _LENGTHS[len(_LENGTHS) // 2]
    if dof < 2:  # too few runs to tell smooth from white: the floors
        return _split(0.0, _SHARES[0], middle, middle, min_noise)
    basis = basis / np.maximum(np.linalg.norm(basis, axis=0), 1e-300)  # a conditioned Gram
    best, best_ll = None, -math.inf
    for share, l_n, l_r in itertools.product(_SHARES, _LENGTHS, _LENGTHS):
        cov = _unit_cov(x, weights, share, l_n, l_r)
        try:
            quad, logdet = _reml_parts(cov, resid, basis)
        except np.linalg.LinAlgError:
            continue
        if quad > 0:  # the scale profiled out: scale^2 = quad / dof
            ll = -0.5 * (dof * math.log(quad / dof) + logdet)
            if ll > best_ll:
                best, best_ll = (share, l_n, l_r, quad / dof), ll
    if best is None:
        return _split(0.0, _SHARES[0], middle, middle, min_noise)
    return _split(best[3], *best[:3], min_noise)


def _unit_cov(x, weights, share, l_n, l_r) -> np.ndarray:
    unit = Discrepancy(math.sqrt(share), l_n, l_r, math.sqrt(1 - share))
    return unit.kernel(x, x) + np.diag((1 - share) / weights)


def _split(total: float, share: float, l_n: float, l_r: float, floor: float) -> Discrepancy:
    return Discrepancy(
        sd=max(math.sqrt(share * total), _MIN_SD),
        length_n=l_n,
        length_r=l_r,
        noise_sd=max(math.sqrt((1 - share) * total), floor),
    )


def _reml_parts(cov, resid, basis) -> tuple[float, float]:
    """(r^T Pi r, log|cov| + log|basis^T cov^-1 basis|), Pi the GLS residual projector."""
    jitter = _JITTER * float(np.mean(np.diag(cov)))
    chol = np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
    wr = np.linalg.solve(chol, resid)
    wb = np.linalg.solve(chol, basis)
    gram = wb.T @ wb
    gram_chol = np.linalg.cholesky(gram + 1e-10 * np.trace(gram) * np.eye(len(gram)))
    proj = np.linalg.solve(gram_chol, wb.T @ wr)
    logdet = 2 * float(np.sum(np.log(np.diag(chol))) + np.sum(np.log(np.diag(gram_chol))))
    return float(wr @ wr - proj @ proj), logdet


class FitErrorState:
    """One parameter draw's expected squared error of the form's own fit at the targets.

    Linearised, the fit's estimate is theta + H^-1 J^T W e with H = J^T W J (+ a weak
    ridge), J the fitted runs' Jacobian, W their multiplicities and e = delta + noise
    over them, so its error at quantity q_t = g_t theta + delta_t is
    u_t^T J^T W e - delta_t with u_t = H^-1 g_t, and

        MSE_t = u_t^T B u_t - 2 u_t^T b_t + Var(delta_t),
        B = J^T W Cov(e) W J,   b_t = J^T W Cov(delta, delta_t)

    (the bias-variance criterion of a misspecified regression; Box & Draper 1959).
    Adding candidate c updates H by rank one and B, b by rank two; `mse_after` gives the
    MSE after adding any one candidate for all K at once, in O(K T P) from
    Sherman-Morrison, and never forms a K x K matrix.
    """

    def __init__(self, disc: Discrepancy, observed, candidates, targets, ridge: np.ndarray):
        """observed: (x (M, 2), weights (M,), noise covariance (M, M), Jacobian (M, P));
        candidates: (x (K, 2), Jacobian rows (K, P)); targets: (x (T, 2), mask (T,): 1
        where the quantity carries delta at its point, gradients (T, P)); ridge: (P, P)."""
        x_obs, weights, noise_obs, j_obs = observed
        self.disc = disc
        self.x_cand, self.j_cand = candidates
        self.x_targ, self.targ_mask, self.grads = targets
        wj = j_obs * weights[:, None]  # (M, P): W J
        self.h = j_obs.T @ wj + ridge  # (P, P)
        self.b_mat = wj.T @ (disc.kernel(x_obs, x_obs) + noise_obs) @ wj  # B
        self.beta = wj.T @ disc.kernel(x_obs, self.x_cand)  # (P, K): J^T W Cov(delta, delta_c)
        self.k_ct = disc.kernel(self.x_cand, self.x_targ) * self.targ_mask  # (K, T)
        self.b_t = wj.T @ (disc.kernel(x_obs, self.x_targ) * self.targ_mask)  # (P, T)
        self.var_t = disc.sd**2 * self.targ_mask  # (T,)

    def copy(self) -> FitErrorState:
        """An independent copy: `add` rebinds every array it changes."""
        return copy.copy(self)

    def mse(self) -> np.ndarray:
        """The expected squared error at each target quantity with the runs so far: (T,)."""
        u = np.linalg.solve(self.h, self.grads.T)  # (P, T)
        quad = np.einsum("pt,pt->t", u, self.b_mat @ u)
        return quad - 2 * np.einsum("pt,pt->t", u, self.b_t) + self.var_t

    def mse_after(self, noise_cand: np.ndarray) -> np.ndarray:
        """The MSE at each target after adding each candidate alone: (K, T).

        With v = H^-1 j_c and c_t = j_c.u_t / (1 + j_c.v), u_t becomes u_t - c_t v;
        B gains j beta^T + beta j^T + Var(e_c) j j^T and b_t gains j Cov(delta_c, delta_t).
        """
        u = np.linalg.solve(self.h, self.grads.T)  # (P, T)
        v = np.linalg.solve(self.h, self.j_cand.T).T  # (K, P)
        gamma = 1.0 + np.einsum("kp,kp->k", v, self.j_cand)
        c = (self.j_cand @ u) / gamma[:, None]  # (K, T); also j_c . u'_t
        bu = self.b_mat @ u
        quad = (
            np.einsum("pt,pt->t", u, bu)
            - 2 * c * (v @ bu)
            + c**2 * np.einsum("kp,kp->k", v @ self.b_mat, v)[:, None]
        )
        beta_u = self.beta.T @ u - np.einsum("pk,kp->k", self.beta, v)[:, None] * c  # beta.u'
        quad = quad + 2 * c * beta_u + c**2 * (self.disc.sd**2 + noise_cand)[:, None]
        lin = np.einsum("pt,pt->t", u, self.b_t) - c * (v @ self.b_t) + c * self.k_ct
        return quad - 2 * lin + self.var_t

    def add(self, k: int, noise_var: float) -> None:
        """Adds candidate k (noise variance `noise_var`) to the fitted runs."""
        j, beta_k = self.j_cand[k], self.beta[:, k]
        self.h = self.h + np.outer(j, j)
        var_e = self.disc.sd**2 + noise_var
        self.b_mat = self.b_mat + np.outer(j, beta_k) + np.outer(beta_k, j) + var_e * np.outer(j, j)
        self.beta = self.beta + np.outer(
            j, self.disc.kernel(self.x_cand[k : k + 1], self.x_cand)[0]
        )
        self.b_t = self.b_t + np.outer(j, self.k_ct[k])


def plan_fit_error(draws, cost, budget, labels, sizes, corr, s2, power):
    """A greedy plan for the whole remaining budget: runs taken by the fall of the MSE at
    the targets (relative to now, summed over them, mean over draws) / cost^power until
    nothing affordable lowers it. Returns (picks, the MSE by its end relative to now).
    `sizes` (the lineages' runs) is updated as runs are taken."""
    draws = [d.copy() for d in draws]
    mse0 = np.stack([d.mse() for d in draws])  # (S, T)
    now = mse0
    chosen: list[int] = []
    left = budget
    scale = cost / np.max(cost)  # the power of a FLOP count overflows nothing this way
    while True:
        noise = s2 * (1.0 + sizes[labels] * corr)  # (K,); s^2 for a run starting a lineage
        fall = np.zeros(len(cost))
        for d, m0, m in zip(draws, mse0, now, strict=True):
            fall += np.sum((m - d.mse_after(noise)) / m0, axis=1)
        best = best_affordable(fall / scale**power, chosen, cost > left)
        if best is None:
            break
        chosen.append(best)
        left -= cost[best]
        for d in draws:
            d.add(best, float(noise[best]))
        sizes[labels[best]] += 1  # later branches of its lineage share it with this run
        now = np.stack([d.mse() for d in draws])
    return chosen, float(np.mean(now / mse0))
