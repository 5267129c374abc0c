"""Variable-projection starts: for each value of a form's exponents, the best linear coefficients.

Golub and Pereyra (1973): L = E + A N^-alpha + B D^-beta is linear in (E, A, B) once
(alpha, beta) are fixed, so a 2-D grid over the exponents, each cell solved exactly for
its coefficients, covers the 5-D space far better than a 5-D grid of the same size. The
coefficients solve the relative least-squares surrogate

    min_{c >= 0} sum_i w_i ((Z c)_i / g_i - 1)^2,

where g is the observation transformed so the model is linear in c (g = L for
Chinchilla, g = L^(1/alpha_D) for Kaplan). A relative error is a log error to first
order, so a cell's solution is close to that cell's Huber optimum, and the best cells
are good starts for `huber.refine`. The non-negative problem has at most 3 coefficients,
so it is solved exactly by enumerating supports: the NNLS optimum is the feasible
restricted least-squares solution of least error (Lawson and Hanson 1974, Ch. 23).

All problems (rows of weights, e.g. bootstrap counts) are solved together: the Gram
matrices of every cell for every problem come from one matrix product.
"""

from __future__ import annotations

import itertools
import logging
from typing import Protocol

import numpy as np

from orchestrator.laws.huber import one_blas_thread

log = logging.getLogger(__name__)


class ProjectableForm(Protocol):
    """What a form provides for variable projection (see chinchilla.py, kaplan.py)."""

    projection_grid: np.ndarray  # (G, Q) values of the nonlinear parameters

    def projection_columns(self, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(target g (G, M), columns Z (G, M, J)) at the form's observations."""
        ...

    def theta_from_projection(self, cells: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """Internal theta (..., P) from grid cells (..., Q) and coefficients (..., J)."""
        ...


@one_blas_thread
def projection_starts(
    form: ProjectableForm, loss: np.ndarray, weights: np.ndarray, *, n_best: int
) -> np.ndarray:
    """Returns the `n_best` grid cells' theta per problem, best surrogate fit first.

    Args:
        form: the law's form.
        loss: observed L (not its log), (M,).
        weights: (R, M) observation weights, one row per problem.
        n_best: starts to return per problem.

    Returns:
        (R, n_best, P) internal parameters.
    """
    target, cols = form.projection_columns(loss)
    scaled = cols / target[:, :, None]  # (G, M, J): the relative-error design
    g_count, m, j_count = scaled.shape
    outer = scaled[:, :, :, None] * scaled[:, :, None, :]  # (G, M, J, J)
    gram = (weights @ outer.transpose(1, 0, 2, 3).reshape(m, -1)).reshape(
        -1, g_count, j_count, j_count
    )
    rhs = (weights @ scaled.transpose(1, 0, 2).reshape(m, -1)).reshape(-1, g_count, j_count)
    const = weights.sum(axis=1)[:, None]
    coef, sse = _nnls_by_support(gram, rhs, const)
    keep = min(n_best, g_count)
    top = np.argsort(sse, axis=1, kind="stable")[:, :keep]  # (R, keep)
    cells = form.projection_grid[top]  # (R, keep, Q)
    best_coef = np.take_along_axis(coef, top[:, :, None], axis=1)
    return form.theta_from_projection(cells, best_coef)


def _nnls_by_support(
    gram: np.ndarray, rhs: np.ndarray, const: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact NNLS for stacks of small normal equations: (coef (..., J), squared error (...))."""
    j_count = gram.shape[-1]
    best_sse = np.broadcast_to(const, gram.shape[:-2]).astype(float)  # empty support: c = 0
    best_coef = np.zeros(rhs.shape)
    for size in range(1, j_count + 1):
        for support in itertools.combinations(range(j_count), size):
            idx = list(support)
            sub = gram[..., idx, :][..., :, idx]
            # A tiny ridge keeps nearly collinear columns solvable (an exponent near 0
            # makes N^-alpha look like the constant column).
            sub = sub + 1e-12 * np.diagonal(sub, axis1=-2, axis2=-1)[..., None] * np.eye(size)
            coef = np.zeros(rhs.shape)
            coef[..., idx] = _solve_small(sub, rhs[..., idx])
            feasible = np.all(coef[..., idx] > 0, axis=-1)
            sse = (
                np.einsum("...j,...jk,...k->...", coef, gram, coef)
                - 2 * np.einsum("...j,...j->...", coef, rhs)
                + const
            )
            better = feasible & np.isfinite(sse) & (sse < best_sse)
            best_sse = np.where(better, sse, best_sse)
            best_coef = np.where(better[..., None], coef, best_coef)
    return best_coef, best_sse


def _solve_small(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solves stacks of 1x1..3x3 systems by Cramer's rule (far faster than LAPACK calls
    on millions of tiny matrices); a singular system gives non-finite values, which the
    caller treats as infeasible."""
    size = a.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if size == 1:
            return b / a[..., 0]
        if size == 2:
            det = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]
            x0 = (b[..., 0] * a[..., 1, 1] - a[..., 0, 1] * b[..., 1]) / det
            x1 = (a[..., 0, 0] * b[..., 1] - b[..., 0] * a[..., 1, 0]) / det
            return np.stack([x0, x1], axis=-1)
        if size == 3:
            cof = np.stack(
                [
                    np.cross(a[..., 1, :], a[..., 2, :]),
                    np.cross(a[..., 2, :], a[..., 0, :]),
                    np.cross(a[..., 0, :], a[..., 1, :]),
                ],
                axis=-2,
            )  # rows of the adjugate's transpose
            det = np.einsum("...j,...j->...", a[..., 0, :], cof[..., 0, :])
            return np.einsum("...ij,...i->...j", cof, b) / det[..., None]
    return np.linalg.solve(a, b[..., None])[..., 0]
