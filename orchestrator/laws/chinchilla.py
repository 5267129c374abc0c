"""Chinchilla's law L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Eq. 2).

Fitted by Approach 3 (`law.HuberLaw`): Huber (delta = 1e-3) on log-loss residuals in the
log-sum-exp form log L = LSE(a - alpha log N, b - beta log D, e) with a = log A,
b = log B, e = log E (Besiroglu et al. 2024, Sec. 2). Symbols are defined in `base`.

Internally the form is centred: a_c = a - alpha n0 and b_c = b - beta d0, where n0 and
d0 are the mean log N and log D of the fitted observations. This is the same function
(the objective does not change), but a_c is then the log of the model-size term at a
typical N instead of at N = 1, which removes most of the a-alpha correlation and keeps
the Gauss-Newton systems well conditioned.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from orchestrator.laws.base import broadcast_column
from orchestrator.laws.law import HuberLaw

log = logging.getLogger(__name__)

# Hoffmann et al. (2022) App. D.2 grid, as used by Besiroglu et al. (2024):
# 5 x 5 x 5 x 6 x 6 = 4,500 starts in (a, b, e, alpha, beta).
HOFFMANN_GRID: Mapping[str, tuple[float, ...]] = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}

# Exponent values for variable projection: denser where published fits land (0.2-0.5).
_PROJECTION_EXPONENTS = (
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    1.0,
    1.25,
    1.5,
    2.0,
)


@dataclass(frozen=True, eq=False)
class ChinchillaForm:
    """E + A N^-alpha + B D^-beta around reference point (n0, d0) = mean log N, log D.

    theta = (a_c, b_c, e, alpha, beta); x_n = log N - n0 and x_d = log D - d0 have a
    leading axis of 1 (shared) or K (one row per theta).
    """

    log_n0: float
    log_d0: float
    x_n: np.ndarray  # (1, M) centred log N of the observations
    x_d: np.ndarray  # (1, M) centred log D
    name = "chinchilla"
    theta_names = ("a_c", "b_c", "e", "alpha", "beta")
    public_names = ("E", "A", "B", "alpha", "beta")
    public_positive = (True, True, True, False, False)
    record_names = ("a", "b", "e", "alpha", "beta")
    public_record = ("e", "a", "b", "alpha", "beta")  # each public name's record coordinate
    bound_labels = ("A (the N term)", "B (the D term)", "E", "alpha", "beta")
    # Terms at the reference point between e^-25 (negligible) and e^10 nats; exponents in
    # [0, 5]: a negative exponent would make loss grow with scale.
    lower = np.array([-25.0, -25.0, -25.0, 0.0, 0.0])
    upper = np.array([10.0, 10.0, 10.0, 5.0, 5.0])
    projection_grid = np.array(list(itertools.product(_PROJECTION_EXPONENTS, repeat=2)))

    def log_loss(self, theta: np.ndarray, *, jac: bool):
        """log Lhat at the observations, (K, M), and its Jacobian (K, M, 5) if `jac`."""
        return self.log_loss_at(theta, self.x_n, self.x_d, jac=jac)

    def log_loss_at(self, theta: np.ndarray, x_n: np.ndarray, x_d: np.ndarray, *, jac: bool):
        """log Lhat at centred points x_n, x_d of shape (1 or K, *S): (K, *S) [, (K, *S, 5)]."""
        a, b, e, alpha, beta = (broadcast_column(theta, i, x_n.ndim) for i in range(5))
        t1 = a - alpha * x_n
        t2 = b - beta * x_d
        with np.errstate(over="ignore"):
            e1, e2, e3 = np.exp(t1), np.exp(t2), np.exp(e)
            total = e1 + e2 + e3
        # Inside the bounds the terms stay far from overflow, so the plain sum is exact and
        # twice as fast; shift by the largest term only when a point is extreme.
        if not np.all(np.isfinite(total) & (total > 0)):
            top = np.maximum(np.maximum(t1, t2), e)
            e1, e2, e3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(e - top)
            total = e1 + e2 + e3
            out = top + np.log(total)
        else:
            out = np.log(total)
        if not jac:
            return out, None
        inv = 1.0 / total
        p1, p2 = e1 * inv, e2 * inv
        out_jac = np.empty((*out.shape, 5))
        out_jac[..., 0], out_jac[..., 1], out_jac[..., 2] = p1, p2, e3 * inv
        out_jac[..., 3], out_jac[..., 4] = -p1 * x_n, -p2 * x_d
        return out, out_jac

    def centred(self, log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centred coordinates for `log_loss_at`."""
        return log_n - self.log_n0, log_d - self.log_d0

    def public(self, theta: np.ndarray) -> np.ndarray:
        """(E, A, B, alpha, beta) for each row of theta, (K, 5)."""
        a_c, b_c, e, alpha, beta = theta.T
        with np.errstate(over="ignore"):
            return np.stack(
                [
                    np.exp(e),
                    np.exp(a_c + alpha * self.log_n0),
                    np.exp(b_c + beta * self.log_d0),
                    alpha,
                    beta,
                ],
                axis=-1,
            )

    def record_coords(self, theta: np.ndarray) -> np.ndarray:
        """(a, b, e, alpha, beta) for each row of theta: the coordinates of the covariance."""
        a_c, b_c, e, alpha, beta = theta.T
        return np.stack([a_c + alpha * self.log_n0, b_c + beta * self.log_d0, e, alpha, beta], -1)

    def theta_from_record(self, coords: np.ndarray) -> np.ndarray:
        """Internal theta from (a, b, e, alpha, beta) rows."""
        a, b, e, alpha, beta = np.asarray(coords, dtype=float).T
        return np.stack([a - alpha * self.log_n0, b - beta * self.log_d0, e, alpha, beta], -1)

    def optimum_6nd(self, theta: np.ndarray, log_flops: np.ndarray):
        """log N_opt and log D_opt, (K, Q), for C = 6 N D (Hoffmann et al. 2022, Eq. 4).

        N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = G^-1 (C/6)^(alpha/(alpha+beta)),
        G = (alpha A / (beta B))^(1/(alpha+beta)). Infinite or NaN if an exponent is 0.
        """
        a, b, _, alpha, beta = (t[:, None] for t in self.record_coords(theta).T)
        with np.errstate(divide="ignore", invalid="ignore"):
            total = alpha + beta
            log_g = (np.log(alpha) + a - np.log(beta) - b) / total
            scaled = log_flops[None, :] - np.log(6.0)
            return log_g + beta / total * scaled, -log_g + alpha / total * scaled

    def projection_columns(self, loss: np.ndarray):
        """Target L (G, M) and columns [1, e^(-alpha x_n), e^(-beta x_d)] (G, M, 3)."""
        alpha = self.projection_grid[:, 0:1]
        beta = self.projection_grid[:, 1:2]
        cols = np.stack(
            [np.ones((alpha.size, loss.size)), np.exp(-alpha * self.x_n), np.exp(-beta * self.x_d)],
            axis=-1,
        )
        return np.broadcast_to(loss, cols.shape[:2]), cols

    def theta_from_projection(self, cells: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """theta from (alpha, beta) cells and (E, A_c, B_c) coefficients."""
        with np.errstate(divide="ignore"):
            logs = np.log(np.maximum(coef, 0.0))
        theta = np.stack(
            [logs[..., 1], logs[..., 2], logs[..., 0], cells[..., 0], cells[..., 1]], axis=-1
        )
        return np.clip(theta, self.lower, self.upper)


class Chinchilla(HuberLaw):
    """Hoffmann et al.'s law E + A / N^alpha + B / D^beta, fitted by Approach 3.

    Example:
        >>> law = Chinchilla().fit(n_params, tokens, loss)
        >>> law.params["alpha"], law.n_opt(1e21).mean
        >>> # Cooldown branches share their parent's noise; a previous fit is a prior:
        >>> law = Chinchilla().fit(n_params, tokens, loss, groups=lineage_of_each_run,
        ...                        prior=Prior.from_fit(previous_record))

    Args (keyword only, stored as given; checked at `fit`):
        huber_delta: Huber threshold on log-loss residuals (Hoffmann et al.: 1e-3).
        flops_per_token: N -> FLOPs per token for n_opt/d_opt/loss_opt; None means 6 N.
        start_grid: a mapping of each of a, b, e, alpha, beta to values; the starts are
            their Cartesian product. None means Hoffmann's 4,500-start grid.
        n_refine: how many best-screened starts get the batched Gauss-Newton refinement.
        polish: finish with scipy L-BFGS-B on the exact objective.
    """

    form_name = "chinchilla"
    min_points = 5
    form_class = ChinchillaForm
    default_grid = HOFFMANN_GRID
