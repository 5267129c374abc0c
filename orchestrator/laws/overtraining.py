"""Gadre et al.'s over-training law L(C, M) = E + (a M^eta + b M^-eta) C^-eta.

Gadre et al. (2024), "Language models scale reliably with over-training and on
downstream tasks", Eq. 4: loss in compute C = 6 N D and token multiplier M = D / N. It
is Chinchilla's law with one exponent for both terms: substituting C and M gives
E + a 6^-eta N^(-2 eta) + b 6^-eta D^(-2 eta), i.e. alpha = beta = 2 eta. One exponent
fewer than Chinchilla makes it the form to try when the runs are few or the sweep is
over-trained (M far from 20), where separate exponents are poorly pinned down.

Fitted by Approach 3 in Chinchilla's log-sum-exp coordinates with the exponents tied:
internal theta = (a_c, b_c, e, alpha) around the observations' mean log N and log D,
log L = LSE(a_c - alpha x_n, b_c - alpha x_d, e). Symbols are defined in `base`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orchestrator.laws.base import broadcast_column
from orchestrator.laws.law import HuberLaw

# Exponent values for variable projection (2 eta; Gadre et al. fit eta near 0.12-0.15).
_PROJECTION_ALPHA = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5)
_LOG6 = math.log(6.0)


@dataclass(frozen=True, eq=False)
class OvertrainingForm:
    """E + A N^-alpha + B D^-alpha around (n0, d0); theta = (a_c, b_c, e, alpha)."""

    log_n0: float
    log_d0: float
    x_n: np.ndarray  # (1, M) centred log N of the observations
    x_d: np.ndarray  # (1, M) centred log D
    name = "overtraining"
    theta_names = ("a_c", "b_c", "e", "alpha")
    public_names = ("E", "a", "b", "eta")
    public_positive = (True, True, True, False)
    record_names = ("log_a", "log_b", "e", "eta")
    public_record = ("e", "log_a", "log_b", "eta")  # each public name's record coordinate
    bound_labels = ("a (the N term)", "b (the D term)", "E", "eta")
    lower = np.array([-25.0, -25.0, -25.0, 0.0])
    upper = np.array([10.0, 10.0, 10.0, 5.0])
    projection_grid = np.array(_PROJECTION_ALPHA)[:, None]

    def log_loss(self, theta: np.ndarray, *, jac: bool):
        """log Lhat at the observations, (K, M), and its Jacobian (K, M, 4) if `jac`."""
        return self.log_loss_at(theta, self.x_n, self.x_d, jac=jac)

    def log_loss_at(self, theta: np.ndarray, x_n: np.ndarray, x_d: np.ndarray, *, jac: bool):
        """log Lhat at centred points of shape (1 or K, *S): (K, *S) [, (K, *S, 4)]."""
        a, b, e, alpha = (broadcast_column(theta, i, x_n.ndim) for i in range(4))
        t1, t2 = a - alpha * x_n, b - alpha * x_d
        top = np.maximum(np.maximum(t1, t2), e)
        e1, e2, e3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(e - top)
        total = e1 + e2 + e3
        out = top + np.log(total)
        if not jac:
            return out, None
        p1, p2 = e1 / total, e2 / total
        out_jac = np.empty((*out.shape, 4))
        out_jac[..., 0], out_jac[..., 1], out_jac[..., 2] = p1, p2, e3 / total
        out_jac[..., 3] = -p1 * x_n - p2 * x_d
        return out, out_jac

    def centred(self, log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centred coordinates for `log_loss_at`."""
        return log_n - self.log_n0, log_d - self.log_d0

    def record_coords(self, theta: np.ndarray) -> np.ndarray:
        """(log a, log b, e, eta) for each row of theta: A = a 6^-eta, alpha = 2 eta."""
        a_c, b_c, e, alpha = np.asarray(theta, dtype=float).T
        eta = alpha / 2
        log_a = a_c + alpha * self.log_n0 + eta * _LOG6
        log_b = b_c + alpha * self.log_d0 + eta * _LOG6
        return np.stack([log_a, log_b, e, eta], axis=-1)

    def theta_from_record(self, coords: np.ndarray) -> np.ndarray:
        """Internal theta from (log a, log b, e, eta) rows."""
        log_a, log_b, e, eta = np.asarray(coords, dtype=float).T
        alpha = 2 * eta
        return np.stack(
            [
                log_a - eta * _LOG6 - alpha * self.log_n0,
                log_b - eta * _LOG6 - alpha * self.log_d0,
                e,
                alpha,
            ],
            axis=-1,
        )

    def public(self, theta: np.ndarray) -> np.ndarray:
        """(E, a, b, eta) for each row of theta, (K, 4)."""
        log_a, log_b, e, eta = self.record_coords(theta).T
        with np.errstate(over="ignore"):
            return np.stack([np.exp(e), np.exp(log_a), np.exp(log_b), eta], axis=-1)

    def optimum_6nd(self, theta: np.ndarray, log_flops: np.ndarray):
        """log N_opt, log D_opt (K, Q) at C = 6 N D: with equal exponents the optimum
        splits C evenly in log space, N_opt = (A / B)^(1/(2 alpha)) (C/6)^(1/2)."""
        a_c, b_c, _, alpha = (t[:, None] for t in np.asarray(theta, dtype=float).T)
        log_a = a_c + alpha * self.log_n0
        log_b = b_c + alpha * self.log_d0
        scaled = log_flops[None, :] - _LOG6
        with np.errstate(divide="ignore", invalid="ignore"):
            log_g = (log_a - log_b) / (2 * alpha)
        return log_g + scaled / 2, -log_g + scaled / 2

    def projection_columns(self, loss: np.ndarray):
        """Target L (G, M) and columns [1, e^(-alpha x_n), e^(-alpha x_d)] (G, M, 3)."""
        alpha = self.projection_grid[:, 0:1]
        cols = np.stack(
            [
                np.ones((alpha.size, loss.size)),
                np.exp(-alpha * self.x_n),
                np.exp(-alpha * self.x_d),
            ],
            axis=-1,
        )
        return np.broadcast_to(loss, cols.shape[:2]), cols

    def theta_from_projection(self, cells: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """theta from alpha cells and (E, A_c, B_c) coefficients."""
        with np.errstate(divide="ignore"):
            logs = np.log(np.maximum(coef, 0.0))
        theta = np.stack([logs[..., 1], logs[..., 2], logs[..., 0], cells[..., 0]], axis=-1)
        return np.clip(theta, self.lower, self.upper)


class Overtraining(HuberLaw):
    """Gadre et al.'s over-training law E + (a M^eta + b M^-eta) C^-eta, by Approach 3.

    Same options and methods as `Chinchilla`; `params` has keys E, a, b, eta. Without a
    `start_grid` every start comes from variable projection over the shared exponent.
    """

    form_name = "overtraining"
    min_points = 4
    form_class = OvertrainingForm
    default_grid = None
    n_projection_starts = 8

    def _grid_starts(self, form) -> np.ndarray:
        if self.start_grid is None:
            return np.empty((0, len(form.theta_names)))
        return super()._grid_starts(form)
