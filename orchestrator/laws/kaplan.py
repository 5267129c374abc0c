"""Kaplan et al.'s rival law L(N, D) = ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D.

Kaplan et al. (2020), Eq. 1.5 (their fit: alpha_N = 0.076, alpha_D = 0.095,
N_c = 8.8e13, D_c = 5.4e13). It has no irreducible term, so loss goes to 0 with scale;
`compare.compare_forms` shows whether that extrapolates better or worse than
Chinchilla's E + A/N^alpha + B/D^beta on your data. Symbols are defined in `base`.

Log form: log L = alpha_D LSE(u - p x_n, v - x_d) with p = alpha_N / alpha_D,
u = p (log N_c - n0), v = log D_c - d0, and x_n, x_d the log N, log D centred at their
means n0, d0. Internal theta = (u, v, p, alpha_D). Fitted by Approach 3 (`law.HuberLaw`).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from orchestrator.laws.base import broadcast_column
from orchestrator.laws.law import HuberLaw

log = logging.getLogger(__name__)

# Kaplan et al. (2020) Eq. 1.5 as the published start, in record coordinates
# (log N_c, log D_c, alpha_N, alpha_D); variable projection adds data-driven starts.
KAPLAN_START: Mapping[str, tuple[float, ...]] = {
    "log_N_c": (math.log(8.8e13),),
    "log_D_c": (math.log(5.4e13),),
    "alpha_N": (0.076,),
    "alpha_D": (0.095,),
}

_PROJECTION_P = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
_PROJECTION_ALPHA_D = (0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)


@dataclass(frozen=True, eq=False)
class KaplanForm:
    """((N_c/N)^p + D_c/D)^alpha_D around reference point (n0, d0); theta = (u, v, p, alpha_D)."""

    log_n0: float
    log_d0: float
    x_n: np.ndarray  # (1, M) centred log N of the observations
    x_d: np.ndarray  # (1, M) centred log D
    name = "kaplan"
    theta_names = ("u", "v", "p", "alpha_D")
    public_names = ("N_c", "D_c", "alpha_N", "alpha_D")
    public_positive = (True, True, False, False)
    record_names = ("log_N_c", "log_D_c", "alpha_N", "alpha_D")
    public_record = record_names  # each public name's record coordinate
    bound_labels = ("N_c", "D_c", "alpha_N / alpha_D", "alpha_D")
    # u and v scale like log(L) / alpha_D, so they need a wide box; p and alpha_D keep
    # both terms falling with scale.
    lower = np.array([-100.0, -100.0, 0.01, 0.005])
    upper = np.array([500.0, 500.0, 20.0, 3.0])
    projection_grid = np.array(list(itertools.product(_PROJECTION_P, _PROJECTION_ALPHA_D)))

    def log_loss(self, theta: np.ndarray, *, jac: bool):
        """log Lhat at the observations, (K, M), and its Jacobian (K, M, 4) if `jac`."""
        return self.log_loss_at(theta, self.x_n, self.x_d, jac=jac)

    def log_loss_at(self, theta: np.ndarray, x_n: np.ndarray, x_d: np.ndarray, *, jac: bool):
        """log Lhat at centred points of shape (1 or K, *S): (K, *S) [, (K, *S, 4)]."""
        u, v, p, s = (broadcast_column(theta, i, x_n.ndim) for i in range(4))
        t1 = u - p * x_n
        t2 = v - x_d
        top = np.maximum(t1, t2)
        e1, e2 = np.exp(t1 - top), np.exp(t2 - top)
        total = e1 + e2
        lse = top + np.log(total)
        out = s * lse
        if not jac:
            return out, None
        q1, q2 = e1 / total, e2 / total
        out_jac = np.empty((*out.shape, 4))
        out_jac[..., 0], out_jac[..., 1] = s * q1, s * q2
        out_jac[..., 2], out_jac[..., 3] = -s * q1 * x_n, lse
        return out, out_jac

    def centred(self, log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centred coordinates for `log_loss_at`."""
        return log_n - self.log_n0, log_d - self.log_d0

    def record_coords(self, theta: np.ndarray) -> np.ndarray:
        """(log N_c, log D_c, alpha_N, alpha_D) for each row of theta."""
        u, v, p, s = theta.T
        return np.stack([self.log_n0 + u / p, self.log_d0 + v, p * s, s], axis=-1)

    def theta_from_record(self, coords: np.ndarray) -> np.ndarray:
        """Internal theta from (log N_c, log D_c, alpha_N, alpha_D) rows."""
        lnc, ldc, alpha_n, s = np.asarray(coords, dtype=float).T
        p = alpha_n / s
        return np.stack([p * (lnc - self.log_n0), ldc - self.log_d0, p, s], axis=-1)

    def public(self, theta: np.ndarray) -> np.ndarray:
        """(N_c, D_c, alpha_N, alpha_D) for each row of theta, (K, 4)."""
        coords = self.record_coords(theta)
        with np.errstate(over="ignore"):
            return np.stack(
                [np.exp(coords[:, 0]), np.exp(coords[:, 1]), coords[:, 2], coords[:, 3]], -1
            )

    def optimum_6nd(self, theta: np.ndarray, log_flops: np.ndarray):
        """log N_opt, log D_opt (K, Q) for C = 6 N D.

        Minimising (N_c/N)^p + 6 N D_c / C over N gives D_c/D = p (N_c/N)^p, so
        N_opt^(1+p) = p N_c^p C / (6 D_c).
        """
        lnc, ldc, _, _ = (t[:, None] for t in self.record_coords(theta).T)
        p = theta[:, 2:3]
        log_c6 = log_flops[None, :] - math.log(6.0)
        log_n = (np.log(p) + p * lnc + log_c6 - ldc) / (1 + p)
        return log_n, log_c6 - log_n

    def projection_columns(self, loss: np.ndarray):
        """Target L^(1/alpha_D) (G, M) and columns [e^(-p x_n), e^(-x_d)] (G, M, 2)."""
        p = self.projection_grid[:, 0:1]
        s = self.projection_grid[:, 1:2]
        target = np.exp(np.log(loss)[None, :] / s)
        cols = np.stack(
            [np.exp(-p * self.x_n), np.broadcast_to(np.exp(-self.x_d), (p.size, loss.size))],
            axis=-1,
        )
        return target, cols

    def theta_from_projection(self, cells: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """theta from (p, alpha_D) cells and (e^u, e^v) coefficients."""
        with np.errstate(divide="ignore"):
            logs = np.log(np.maximum(coef, 0.0))
        theta = np.stack([logs[..., 0], logs[..., 1], cells[..., 0], cells[..., 1]], -1)
        return np.clip(theta, self.lower, self.upper)


class Kaplan(HuberLaw):
    """Kaplan et al.'s law ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D, fitted by Approach 3.

    Same options and methods as `Chinchilla`; `params` has keys N_c, D_c, alpha_N,
    alpha_D. `start_grid` keys are log_N_c, log_D_c, alpha_N, alpha_D (default: Kaplan
    et al.'s published values; variable-projection starts are always added).
    """

    form_name = "kaplan"
    min_points = 5
    form_class = KaplanForm
    default_grid = KAPLAN_START
