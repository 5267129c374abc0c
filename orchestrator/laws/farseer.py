"""Farseer's law L(N, D) = exp(s N^q + S) + exp(B N^b + Q) D^(-exp(A N^a + E)).

Li et al. (2025), "Predictable Scale: Part II, Farseer: A Refined Scaling Law in Large
Language Models". Where Chinchilla gives the data term one coefficient and one exponent
for every model size, Farseer lets both vary smoothly with N (a stretched exponential
in N each), and replaces E + A / N^alpha by exp(s N^q + S), whose limit for large N is
exp(S) when q < 0. Nine parameters; fitted by Approach 3 (`law.HuberLaw`). No closed
form gives N_opt(C): it is searched numerically along the iso-FLOP line (`frontier`).
Symbols are defined in `base`.

Internal coordinates, centred on the observations' mean log N and log D (n0, d0) as the
other forms are (x_n = log N - n0, x_d = log D - d0):

    log T1 = s_c e^(q x_n) + S                                s_c = s e^(q n0)
    k      = exp(A_c e^(a x_n) + E)                           A_c = A e^(a n0)
    log T2 = B_c e^(b x_n) + Q_c + d0 (k0 - k) - k x_d       B_c = B e^(b n0)
    log L  = LSE(log T1, log T2)                              Q_c = Q - k0 d0

with k0 = exp(A_c + E), the data exponent at N = e^n0. This is the same function as the
paper's (Q_c only moves the large, nearly cancelling Q - k log D to the data's centre),
so the Gauss-Newton systems stay well conditioned.

Starts: variable projection (`projection`). With b = a = 0 the law is
L = e^S U1 + e^(Q_c) U2, linear in (e^S, e^(Q_c)) for fixed (q, s_c, k, B_c, A_c), so a
grid over those five (B_c and A_c as the slopes in log N they give), each cell solved
exactly for the two coefficients, gives data-driven starts in every basin the grid
reaches; the best are refined with all nine free.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from orchestrator.laws.base import broadcast_column
from orchestrator.laws.law import HuberLaw

log = logging.getLogger(__name__)

# Projection grid over (q, s_c, k, slope of log T2, slope of log k), both slopes in log N
# at N = e^n0; b and a start at _START_EXPONENT, so B_c = slope / b and A_c = slope / a.
# q < 0 with s_c > 0: the model-size term falls towards exp(S); k: the data exponent
# (Chinchilla's beta, 0.05-1 in published fits).
_GRID_Q = (-1.0, -0.6, -0.4, -0.25, -0.15)
_GRID_S = (0.05, 0.15, 0.4, 1.0)
_GRID_K = (0.1, 0.2, 0.3, 0.45, 0.7, 1.0)
_GRID_T2_SLOPE = (-0.6, -0.3, 0.0, 0.3, 0.6)
_GRID_K_SLOPE = (-0.15, 0.0, 0.15)
_START_EXPONENT = 0.2


@dataclass(frozen=True, eq=False)
class FarseerForm:
    """exp(s N^q + S) + exp(B N^b + Q) D^-exp(A N^a + E) around (n0, d0).

    theta = (s_c, q, S, B_c, b, Q_c, A_c, a, E); see the module docstring.
    """

    log_n0: float
    log_d0: float
    x_n: np.ndarray  # (1, M) centred log N of the observations
    x_d: np.ndarray  # (1, M) centred log D
    name = "farseer"
    theta_names = ("s_c", "q", "S", "B_c", "b", "Q_c", "A_c", "a", "E")
    public_names = ("s", "q", "S", "B", "b", "Q", "A", "a", "E")
    public_positive = (False,) * 9
    record_names = public_names
    public_record = public_names  # each public name's record coordinate
    bound_labels = (
        "s (the N term's scale)",
        "q (the N term's exponent)",
        "S (the N term's floor)",
        "B (the data coefficient's N dependence)",
        "b",
        "Q (the data coefficient)",
        "A (the data exponent's N dependence)",
        "a",
        "E (the data exponent)",
    )
    # Exponents of N within +-2 (beyond, e^(q x_n) overflows over a few decades of N);
    # E keeps the data exponent k in [3e-4, 7]; S keeps the floor below e^3 nats.
    lower = np.array([-10.0, -2.0, -10.0, -10.0, -2.0, -60.0, -10.0, -2.0, -8.0])
    upper = np.array([10.0, 2.0, 3.0, 10.0, 2.0, 60.0, 10.0, 2.0, 2.0])
    projection_grid = np.array(
        list(itertools.product(_GRID_Q, _GRID_S, _GRID_K, _GRID_T2_SLOPE, _GRID_K_SLOPE))
    )

    def log_loss(self, theta: np.ndarray, *, jac: bool):
        """log Lhat at the observations, (K, M), and its Jacobian (K, M, 9) if `jac`."""
        return self.log_loss_at(theta, self.x_n, self.x_d, jac=jac)

    def log_loss_at(self, theta: np.ndarray, x_n: np.ndarray, x_d: np.ndarray, *, jac: bool):
        """log Lhat at centred points of shape (1 or K, *S): (K, *S) [, (K, *S, 9)]."""
        s_c, q, big_s, b_c, b, q_c, a_c, a, e = (
            broadcast_column(theta, i, x_n.ndim) for i in range(9)
        )
        d0 = self.log_d0
        with np.errstate(over="ignore", invalid="ignore"):
            u1, u2, u3 = np.exp(q * x_n), np.exp(b * x_n), np.exp(a * x_n)
            k, k0 = np.exp(a_c * u3 + e), np.exp(a_c + e)
            t1 = s_c * u1 + big_s
            t2 = b_c * u2 + q_c + d0 * (k0 - k) - k * x_d
            top = np.maximum(t1, t2)
            e1, e2 = np.exp(t1 - top), np.exp(t2 - top)
            total = e1 + e2
            out = top + np.log(total)
        if not jac:
            return out, None
        full_d = d0 + x_d
        out_jac = np.empty((*out.shape, 9))
        # As above: a trial step or a bootstrap refit far out (an exponent whose term
        # overflows) gives inf * 0 here; with a non-finite slope the next step's objective
        # is not finite, so `huber.refine` rejects it and that start stops where it was.
        with np.errstate(over="ignore", invalid="ignore"):
            p1, p2 = e1 / total, e2 / total
            out_jac[..., 0] = p1 * u1
            out_jac[..., 1] = p1 * s_c * u1 * x_n
            out_jac[..., 2] = p1
            out_jac[..., 3] = p2 * u2
            out_jac[..., 4] = p2 * b_c * u2 * x_n
            out_jac[..., 5] = p2
            out_jac[..., 6] = p2 * (d0 * k0 - full_d * k * u3)
            out_jac[..., 7] = -p2 * full_d * k * a_c * u3 * x_n
            out_jac[..., 8] = p2 * (d0 * k0 - full_d * k)
        return out, out_jac

    def centred(self, log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centred coordinates for `log_loss_at`."""
        return log_n - self.log_n0, log_d - self.log_d0

    def record_coords(self, theta: np.ndarray) -> np.ndarray:
        """The paper's (s, q, S, B, b, Q, A, a, E) for each row of theta, (K, 9)."""
        s_c, q, big_s, b_c, b, q_c, a_c, a, e = np.asarray(theta, dtype=float).T
        n0, d0 = self.log_n0, self.log_d0
        with np.errstate(over="ignore", invalid="ignore"):
            k0 = np.exp(a_c + e)
            return np.stack(
                [
                    s_c * np.exp(-q * n0),
                    q,
                    big_s,
                    b_c * np.exp(-b * n0),
                    b,
                    q_c + k0 * d0,
                    a_c * np.exp(-a * n0),
                    a,
                    e,
                ],
                axis=-1,
            )

    def theta_from_record(self, coords: np.ndarray) -> np.ndarray:
        """Internal theta from the paper's (s, q, S, B, b, Q, A, a, E) rows."""
        s, q, big_s, big_b, b, big_q, big_a, a, e = np.asarray(coords, dtype=float).T
        n0, d0 = self.log_n0, self.log_d0
        a_c = big_a * np.exp(a * n0)
        k0 = np.exp(a_c + e)
        return np.stack(
            [s * np.exp(q * n0), q, big_s, big_b * np.exp(b * n0), b, big_q - k0 * d0, a_c, a, e],
            axis=-1,
        )

    def public(self, theta: np.ndarray) -> np.ndarray:
        """The paper's parameters for each row of theta, (K, 9)."""
        return self.record_coords(theta)

    def projection_columns(self, loss: np.ndarray):
        """Target L (G, M) and columns [e^(s_c e^(q x_n)), T2 / e^(Q_c)] (G, M, 2)."""
        q, s_c, k, b_c, a_c = (self.projection_grid[:, i : i + 1] for i in range(5))
        b_c, a_c = b_c / _START_EXPONENT, a_c / _START_EXPONENT
        x_n, x_d = self.x_n, self.x_d
        with np.errstate(over="ignore"):
            col1 = np.exp(s_c * np.exp(q * x_n))
            # k(N) = k e^(A_c (e^(a x_n) - 1)): the data exponent is k at N = e^n0.
            k_n = k * np.exp(a_c * (np.exp(_START_EXPONENT * x_n) - 1.0))
            col2 = np.exp(b_c * np.exp(_START_EXPONENT * x_n) + self.log_d0 * (k - k_n) - k_n * x_d)
        cols = np.stack([col1, col2], axis=-1)
        cols = np.where(np.isfinite(cols), cols, 0.0)
        return np.broadcast_to(loss, cols.shape[:2]), cols

    def theta_from_projection(self, cells: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """theta from (q, s_c, k, slopes) cells and (e^S, e^(Q_c)) coefficients."""
        q, s_c, k, b_c, a_c = (cells[..., i] for i in range(5))
        b_c, a_c = b_c / _START_EXPONENT, a_c / _START_EXPONENT
        with np.errstate(divide="ignore"):
            logs = np.log(np.maximum(coef, 1e-300))
        b = np.full_like(q, _START_EXPONENT)
        theta = np.stack(
            [s_c, q, logs[..., 0], b_c, b, logs[..., 1], a_c, b, np.log(k) - a_c], axis=-1
        )
        return np.clip(theta, self.lower, self.upper)


class Farseer(HuberLaw):
    """Li et al.'s Farseer law, fitted by Approach 3 from variable-projection starts.

    Same options and methods as `Chinchilla`; `params` has the paper's keys s, q, S, B,
    b, Q, A, a, E. `start_grid` keys are those nine (absolute coordinates, as the paper
    reports them); without one, every start comes from variable projection.
    """

    form_name = "farseer"
    min_points = 10
    form_class = FarseerForm
    default_grid = None  # starts come from variable projection (see the module docstring)
    n_projection_starts = 64

    def _grid_starts(self, form) -> np.ndarray:
        if self.start_grid is None:
            return np.empty((0, len(form.theta_names)))
        return super()._grid_starts(form)
