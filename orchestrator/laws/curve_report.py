"""`fit_curves_path`: the curve law fitted to an experiment's loss curves, as a plain report.

What `orch fit EXPERIMENT --curves` calls; the CLI only renders the `CurveFitReport`.
Every run with a spec and metric rows counts, running ones included (their partial
curves are information too); diverged runs are left out (`curve_data.read_curves`).
C is counted on the plan's axis when the caller gives it (as `fit_report` does), else
6 N D. Symbols are defined in `curves`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.laws.axis import SIX_ND, ComputeAxis
from orchestrator.laws.base import FitError, Prediction
from orchestrator.laws.curve_data import read_curves
from orchestrator.laws.curves import AnnealingLaw
from orchestrator.laws.fit_report import FrontierRow, ParamRow, frontier_budgets
from storage.errors import StoreError
from storage.store import Store

log = logging.getLogger(__name__)

_LEVEL = 0.95
_RUN_LEVEL = 0.9
LAMS = (0.99, 0.995, 0.999)  # S2 momenta the fit chooses from (Tissue et al. use 0.999)


@dataclass(frozen=True)
class CurveRunRow:
    """An unfinished run: where its curve stands and the final loss predicted from it."""

    run_id: str
    n_params: float  # N
    schedule: str  # e.g. "cosine", "wsd 1-sqrt"
    last_step: int  # updates done at its last row
    total_steps: int  # updates when finished
    last_loss: float  # nats per token, its curve's last point (eval, or smoothed train)
    source: str  # "eval" or "train"
    final: Prediction  # its final loss from its curve so far (`predict_final`), 90% interval;
    #                    in its curve's loss (eval, or train for a run that logs few evals)


@dataclass(frozen=True)
class CurveFitReport:
    """Everything `orch fit --curves` shows."""

    params: tuple[ParamRow, ...]  # E, A_N, a, A, alpha, C, gamma, 95% bootstrap intervals
    lam: float  # the S2 momentum the fit chose
    n_runs: int
    sources: dict[str, int]  # runs whose curve is "eval" loss, "train" loss
    n_points: int
    n_bootstrap: int
    family: str  # the frontier's schedule family, described
    axis: str  # how C was counted
    frontier: tuple[FrontierRow, ...]
    running: tuple[CurveRunRow, ...]  # runs not finished (running, stopped or preempted)
    warnings: tuple[str, ...]
    skipped: tuple[str, ...]  # "run_id: reason" of runs left out
    source: str


def fit_curves_path(
    path: str | os.PathLike,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    axis: ComputeAxis | None = None,
    target_flops: float | Sequence[float] | None = None,
) -> CurveFitReport:
    """Fits `curves.AnnealingLaw` to the loss curves of the experiment at `path`.

    Args:
        path: an experiment directory or URI (a store `orch submit` wrote).
        bootstrap: cluster-bootstrap refits for the intervals (>= 1).
        seed: the bootstrap's seed.
        axis: how C is counted (the plan's); None: 6 N D.
        target_flops: budget(s) C to add to the frontier table.

    Raises:
        FitError: not an experiment, no usable curve, a NaN loss, or a failed fit.
    """
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < 1:
        raise FitError(f"bootstrap: expected a whole number >= 1, got {bootstrap!r}")
    try:
        store = Store.existing(str(path))
    except StoreError as err:
        raise FitError(err.message, hint=err.hint) from err
    curves = read_curves(store)
    axis = axis or SIX_ND
    law = AnnealingLaw(
        lam=LAMS, n_bootstrap=bootstrap, seed=seed, flops_per_token=axis.per_token
    ).fit(curves)
    n = np.array([r.n_params for r in curves.runs])
    d = np.array([r.total_steps * r.spec.tokens_per_step for r in curves.runs], dtype=float)
    budgets = frontier_budgets(axis.flops(n, d), target_flops)
    table = law.frontier(budgets, level=_LEVEL)
    intervals = law.param_intervals(level=_LEVEL)
    return CurveFitReport(
        params=tuple(
            ParamRow(k, float(v.mean), float(v.lo), float(v.hi)) for k, v in intervals.items()
        ),
        lam=law.lam_,
        n_points=curves.n_points,
        n_bootstrap=len(law.theta_samples_),
        family=law.family_.describe(),
        axis=axis.describe(),
        frontier=tuple(
            FrontierRow(
                float(c), *(_pick(p, i) for p in (table.n_opt, table.d_opt, table.loss_opt))
            )
            for i, c in enumerate(budgets)
        ),
        running=tuple(
            CurveRunRow(
                run_id=r.run_id,
                n_params=r.n_params,
                schedule=_schedule(r.spec.schedule),
                last_step=r.last_step,
                total_steps=r.total_steps,
                last_loss=float(r.loss[-1]),
                source=r.source,
                final=law.predict_final(r, level=_RUN_LEVEL),
            )
            for r in sorted(curves.runs, key=lambda r: (r.n_params, r.run_id))
            if not r.finished
        ),
        n_runs=len(curves.runs),
        sources=dict(Counter(r.source for r in curves.runs)),
        warnings=law.warnings_,
        skipped=curves.skipped,
        source=curves.source,
    )


def _schedule(schedule) -> str:
    return f"wsd {schedule.decay_shape}" if schedule.kind == "wsd" else schedule.kind


def _pick(pred: Prediction, i: int) -> Prediction:
    return Prediction(float(pred.mean[i]), float(pred.lo[i]), float(pred.hi[i]), pred.level)
