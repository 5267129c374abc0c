"""Approach 1: the envelope of training curves (Hoffmann et al. 2022, Sec. 3.1).

Symbols are defined in `base`. Each run's curve (loss against tokens seen) is mapped
to compute C = flops_per_token(N) D and interpolated, linearly in (log C, log L), onto
a common grid of log-spaced C. At every grid C the run with the lowest loss is on the
envelope; its N is N_opt(C) and D_opt(C) = C / flops_per_token(N). Power laws
N_opt = k_N C^a and D_opt = k_D C^b are then fitted by least squares over the grid.

Caveats:
- An intermediate point of a run stands in for a run trained to that many tokens. With
  a cosine schedule sized for the full run that point has not annealed, so its loss is
  too high; Hoffmann et al. ran several schedule lengths per N for this reason. WSD or
  constant schedules (or evaluating at cooldown checkpoints) make the envelope fairer.
- N on the envelope only takes the sampled values, so a is resolved no finer than the
  spacing of N; grid points covered by fewer than `min_runs` runs are left out, since a
  lone run is on the envelope by default.
- Neighbouring grid points on one run's stretch of the envelope are not independent, so
  the least-squares variance is inflated by (grid points used) / (distinct runs on the
  envelope), and the Student t uses (distinct runs - 2) degrees of freedom.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from orchestrator.laws.base import FitError, flops_6nd
from orchestrator.laws.frontier import PowerLawAccessors
from orchestrator.laws.isoflop import PowerLaw, fit_power_law

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvelopeFit(PowerLawAccessors):
    """Approach 1's result: the envelope on a grid of C and power laws through it."""

    flops: np.ndarray  # grid C (FLOPs) where the envelope is defined
    n_params: np.ndarray  # N of the run on the envelope at each C
    tokens: np.ndarray  # D there (tokens)
    loss: np.ndarray  # envelope loss (nats per token)
    run_ids: tuple[str, ...]  # the run on the envelope at each C
    n_law: PowerLaw  # N_opt = exp(intercept) C^a
    d_law: PowerLaw  # D_opt = exp(intercept) C^b


def fit_envelope(
    run_ids,
    n_params,
    tokens,
    loss,
    *,
    flops_per_token=None,
    n_grid: int = 250,
    min_runs: int = 2,
) -> EnvelopeFit:
    """Fits N_opt(C) and D_opt(C) from the envelope of training curves.

    Args:
        run_ids: run of each curve point (points of one run share N).
        n_params: N of each point's run.
        tokens: D seen at each point (tokens so far).
        loss: L at each point.
        flops_per_token: N -> FLOPs per token; None means 6 N.
        n_grid: log-spaced C values spanning the curves (Hoffmann et al. used 1,500).
        min_runs: a grid C counts only if at least this many curves cover it.

    Raises:
        FitError: bad points, fewer than two usable curves, or fewer than three grid C
            on the envelope.
    """
    ids = np.asarray(run_ids).astype(str)
    n = np.asarray(n_params, dtype=float)
    d = np.asarray(tokens, dtype=float)
    y = np.asarray(loss, dtype=float)
    if not (ids.shape == n.shape == d.shape == y.shape) or n.ndim != 1:
        raise FitError("run_ids, n_params, tokens and loss must be 1-D and of equal length")
    if not np.all(np.isfinite(np.c_[n, d, y]) & (np.c_[n, d, y] > 0)):
        raise FitError("every N, D and loss must be finite and > 0")
    fpt = flops_per_token or flops_6nd
    log_c = np.log(fpt(n) * d)
    curves = []
    for run in np.unique(ids):
        rows = np.flatnonzero(ids == run)
        if np.ptp(n[rows]) > 0:
            raise FitError(f"run {run}: its points have different N")
        order = rows[np.argsort(log_c[rows], kind="stable")]
        if len(order) < 2:
            log.info("run %s has one point; its curve is left out of the envelope", run)
            continue
        curves.append((run, n[order[0]], log_c[order], np.log(y[order])))
    if len(curves) < 2:
        raise FitError(f"the envelope needs at least 2 runs with 2+ points, found {len(curves)}")
    lo = min(c[2][0] for c in curves)
    hi = max(c[2][-1] for c in curves)
    grid = np.linspace(lo, hi, n_grid)
    table = np.full((len(curves), n_grid), np.nan)
    for i, (_, _, xs, ys) in enumerate(curves):
        inside = (grid >= xs[0]) & (grid <= xs[-1])
        table[i, inside] = np.interp(grid[inside], xs, ys)
    covered = np.sum(np.isfinite(table), axis=0) >= min_runs
    if covered.sum() < 3:
        raise FitError(
            f"only {covered.sum()} grid points are covered by {min_runs}+ runs",
            hint="the training curves must overlap in compute",
        )
    best = np.nanargmin(np.where(np.isfinite(table[:, covered]), table[:, covered], np.inf), 0)
    env_c = np.exp(grid[covered])
    env_n = np.array([curves[i][1] for i in best])
    env_d = env_c / fpt(env_n)
    n_law = fit_power_law(np.log(env_c), np.log(env_n))
    d_law = fit_power_law(np.log(env_c), np.log(env_d))
    distinct = len(np.unique(best))
    inflation = covered.sum() / distinct
    return EnvelopeFit(
        flops=env_c,
        n_params=env_n,
        tokens=env_d,
        loss=np.exp(table[best, np.flatnonzero(covered)]),
        run_ids=tuple(curves[i][0] for i in best),
        n_law=replace(n_law, cov=n_law.cov * inflation, dof=max(distinct - 2, 0)),
        d_law=replace(d_law, cov=d_law.cov * inflation, dof=max(distinct - 2, 0)),
    )
