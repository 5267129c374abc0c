"""Approach 2: IsoFLOP profiles (Hoffmann et al. 2022, Sec. 3.2). Symbols are defined in `base`.

Runs are grouped into compute levels (C within `level_tol_dex` of a neighbour). At each
level a parabola L = c0 + c1 x + c2 x^2 in x = log N is fitted by least squares and its
vertex taken as N_opt(C); then log N_opt = log k_N + a log C and
log D_opt = log k_D + b log C are fitted by ordinary least squares over the levels.
With C = 6 N D, b = 1 - a exactly.

Known biases, measured against a simulated truth in tests/orchestrator/laws/test_isoflop.py:

- Skewed profiles. Along an IsoFLOP line the true profile is
  L(u) = E + G [beta e^(-alpha u) + alpha e^(beta u)] / (alpha + beta), u = log(N / N_opt),
  which is not a parabola and is skewed when alpha != beta. E and G enter linearly,
  so a least-squares vertex is displaced by a constant u0 that depends only on alpha,
  beta and the sampled u: with a grid centred on the true optimum at every level, the
  exponent a stays unbiased, but k_N (so N_opt at any C) is off by the factor e^u0.
  For Hoffmann's law (alpha = 0.34, beta = 0.28) and 9 log-spaced N per level,
  u0 = +0.010, +0.039 and +0.088 for grids of +-0.5, +-1 and +-1.5 decades: N_opt is
  overestimated by 1.0 %, 4.0 % and 9.2 % at every C.
- Off-centre grids. If the grid centres drift away from the true optimum as C grows (a
  wrong prior for N_opt(C)), u0 changes with C and the exponent is biased. With the
  same law, 5 levels over 3 decades of C and +-1 decade grids whose centres slide from
  the optimum at the smallest C to 3x below it at the largest, a comes out 0.443
  instead of 0.452 (-0.008); the bias grows with the drift.
- A vertex outside the sampled N range is an extrapolation of the parabola; such levels
  are left out (`IsoFlopProfile.used` is False) rather than trusted.

Intervals on N_opt(C) and D_opt(C) come from the OLS fit across levels (Student t);
they include scatter of the vertices but not the biases above.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

from orchestrator.laws.base import FitError, Prediction, as_output, flops_6nd
from orchestrator.laws.frontier import PowerLawAccessors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IsoFlopProfile:
    """One compute level: its runs, the fitted parabola and its vertex."""

    flops: float  # the level's C: geometric mean of its runs' C (FLOPs)
    n_params: np.ndarray  # N of the level's runs
    loss: np.ndarray  # their L
    coef: tuple[float, float, float]  # (c0, c1, c2) of L = c0 + c1 x + c2 x^2, x = log N
    n_opt: float  # vertex N (parameters); NaN if the parabola has no minimum
    loss_opt: float  # parabola's L at the vertex
    used: bool  # enters the power-law fit
    reason: str  # why not, if not used


@dataclass(frozen=True)
class PowerLaw:
    """log y = intercept + exponent log C, from OLS over the levels."""

    intercept: float
    exponent: float
    cov: np.ndarray  # (2, 2) covariance of (intercept, exponent)
    dof: int  # levels - 2

    def predict(self, flops, *, level: float) -> Prediction:
        """y at C with a Student-t interval for the fitted line."""
        c = np.asarray(flops, dtype=float)
        x = np.log(np.atleast_1d(c))
        mean = self.intercept + self.exponent * x
        var = self.cov[0, 0] + 2 * x * self.cov[0, 1] + x * x * self.cov[1, 1]
        q = student_t.ppf(0.5 + level / 2, self.dof) if self.dof > 0 else np.inf
        with np.errstate(invalid="ignore"):
            half = q * np.sqrt(var)
        scalar = c.ndim == 0
        return Prediction(
            as_output(np.exp(mean), scalar),
            as_output(np.exp(mean - half), scalar),
            as_output(np.exp(mean + half), scalar),
            level,
        )


@dataclass(frozen=True)
class IsoFlopFit(PowerLawAccessors):
    """Approach 2's result: per-level profiles and power laws for N_opt(C), D_opt(C)."""

    profiles: tuple[IsoFlopProfile, ...]
    n_law: PowerLaw  # N_opt = exp(intercept) C^a
    d_law: PowerLaw  # D_opt = exp(intercept) C^b


def fit_isoflop(
    n_params,
    tokens,
    loss,
    *,
    flops_per_token=None,
    level_tol_dex: float = 0.05,
    min_points: int = 3,
) -> IsoFlopFit:
    """Fits IsoFLOP parabolas per compute level and power laws to their minima.

    Args:
        n_params: N of each run.
        tokens: D of each run.
        loss: final L of each run.
        flops_per_token: N -> FLOPs per token; None means 6 N.
        level_tol_dex: runs whose log10 C differ by at most this from a neighbour
            share a level (0.05 dex = 12 %).
        min_points: runs a level needs for its parabola (at least 3).

    Raises:
        FitError: bad observations, or fewer than two levels with a usable minimum.
    """
    n = np.asarray(n_params, dtype=float)
    d = np.asarray(tokens, dtype=float)
    y = np.asarray(loss, dtype=float)
    if not (n.shape == d.shape == y.shape) or n.ndim != 1:
        raise FitError("n_params, tokens and loss must be 1-D and of equal length")
    if not np.all(np.isfinite(np.c_[n, d, y]) & (np.c_[n, d, y] > 0)):
        raise FitError("every N, D and loss must be finite and > 0")
    fpt = flops_per_token or flops_6nd
    profiles = isoflop_profiles(
        n, d, y, flops_per_token=fpt, level_tol_dex=level_tol_dex, min_points=min_points
    )
    used = [p for p in profiles if p.used]
    for p in profiles:
        if not p.used:
            log.warning("IsoFLOP level C=%.3g left out: %s", p.flops, p.reason)
    if len(used) < 2:
        raise FitError(
            f"IsoFLOP fit needs at least 2 compute levels with a minimum, found {len(used)}",
            hint="sample several N at each of several compute budgets",
        )
    log_c = np.log([p.flops for p in used])
    n_star = np.array([p.n_opt for p in used])
    d_star = np.array([p.flops for p in used]) / fpt(n_star)
    return IsoFlopFit(
        profiles=tuple(profiles),
        n_law=fit_power_law(log_c, np.log(n_star)),
        d_law=fit_power_law(log_c, np.log(d_star)),
    )


def isoflop_profiles(
    n_params, tokens, loss, *, flops_per_token=None, level_tol_dex: float = 0.05, min_points=3
) -> tuple[IsoFlopProfile, ...]:
    """Each compute level's parabola and vertex, smallest C first, without the power-law
    fit across levels (so also when fewer than two levels have a minimum). Arguments as
    for `fit_isoflop`, with the observations already checked."""
    n, d, y = (np.asarray(a, dtype=float) for a in (n_params, tokens, loss))
    flops = (flops_per_token or flops_6nd)(n) * d
    return tuple(
        _profile(flops[members], n[members], y[members], min_points)
        for members in compute_levels(flops, tol_dex=level_tol_dex)
    )


def compute_levels(flops: np.ndarray, *, tol_dex: float) -> list[np.ndarray]:
    """Indices of runs per compute level, smallest C first.

    A level starts at its smallest C and takes the next runs while each is within
    `tol_dex` of the previous one and within 2 x `tol_dex` of the level's first. Linking
    neighbours alone (single linkage) would chain runs of continuously spread compute
    across decades into one "level"; the span bound keeps a level an iso-FLOP line.
    """
    log_c = np.log10(flops)
    order = np.argsort(log_c, kind="stable")
    levels, current = [], [order[0]] if order.size else []
    for prev, idx in zip(order[:-1], order[1:], strict=True):
        start = log_c[current[0]]
        if log_c[idx] - log_c[prev] > tol_dex or log_c[idx] - start > 2 * tol_dex:
            levels.append(np.array(current))
            current = []
        current.append(idx)
    if current:
        levels.append(np.array(current))
    return levels


def fit_power_law(log_x: np.ndarray, log_y: np.ndarray) -> PowerLaw:
    """OLS of log_y on log_x: PowerLaw with the parameters' covariance."""
    design = np.c_[np.ones_like(log_x), log_x]
    coef, *_ = np.linalg.lstsq(design, log_y, rcond=None)
    dof = len(log_x) - 2
    if dof > 0:
        s2 = float(np.sum((log_y - design @ coef) ** 2) / dof)
        cov = s2 * np.linalg.inv(design.T @ design)
    else:
        cov = np.full((2, 2), np.inf)
    return PowerLaw(intercept=float(coef[0]), exponent=float(coef[1]), cov=cov, dof=dof)


def _profile(flops: np.ndarray, n: np.ndarray, y: np.ndarray, min_points: int) -> IsoFlopProfile:
    level_c = float(np.exp(np.mean(np.log(flops))))
    x = np.log(n)
    need = max(3, min_points)
    if len(np.unique(x)) < need:
        return IsoFlopProfile(
            level_c,
            n,
            y,
            (math.nan,) * 3,
            math.nan,
            math.nan,
            False,
            f"{len(np.unique(x))} distinct N; a parabola needs {need}",
        )
    centre = float(np.mean(x))
    c2, c1, c0 = np.polyfit(x - centre, y, 2)
    coef = (float(c0 - c1 * centre + c2 * centre**2), float(c1 - 2 * c2 * centre), float(c2))
    if c2 <= 0:
        return IsoFlopProfile(
            level_c,
            n,
            y,
            coef,
            math.nan,
            math.nan,
            False,
            "the profile is not convex in log N (no minimum)",
        )
    vertex = centre - c1 / (2 * c2)
    loss_opt = float(c0 - c1 * c1 / (4 * c2))
    if not x.min() <= vertex <= x.max():
        return IsoFlopProfile(
            level_c,
            n,
            y,
            coef,
            float(np.exp(vertex)),
            loss_opt,
            False,
            "the minimum lies outside the sampled N (widen the grid)",
        )
    return IsoFlopProfile(level_c, n, y, coef, float(np.exp(vertex)), loss_opt, True, "")
