"""`orch fit --approach envelope | isoflop`: Hoffmann et al.'s Approaches 1 and 2 on a path.

Approach 3 (a parametric L(N, D), `fit_report.fit_path`) is the default. The other two
read N_opt(C) and D_opt(C) without a form for the loss, so they are the check on it that
Hoffmann et al. (2022, Sec. 3) made: three estimates of the same exponents that should
agree.
- envelope (Approach 1, `envelope.fit_envelope`): the lowest training curve at every C.
  It needs the curves, so only an experiment directory has the data (its metrics: eval
  loss when every run logged it at 3+ points, else the train loss). A cosine run's early
  points have not annealed and sit above a run trained to that many tokens, so the
  envelope favours smaller models with cosine schedules; WSD or constant ones suit it.
- isoflop (Approach 2, `isoflop.fit_isoflop`): a parabola in log N per compute level,
  its minimum per level, a power law through the minima. Any table of final losses.
C is counted on the observations' axis (`fit_report.Observations.axis`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.laws.axis import ComputeAxis
from orchestrator.laws.base import FitError, Prediction
from orchestrator.laws.envelope import fit_envelope
from orchestrator.laws.fit_report import frontier_budgets, load_observations
from orchestrator.laws.intervals import t_interval
from orchestrator.laws.isoflop import fit_isoflop

APPROACHES = ("envelope", "isoflop")
_LEVEL = 0.95


@dataclass(frozen=True)
class ApproachRow:
    """N_opt and D_opt at one budget C (FLOPs), with 95% intervals."""

    flops: float
    n_opt: Prediction
    d_opt: Prediction


@dataclass(frozen=True)
class ApproachReport:
    """What `orch fit --approach` shows: the exponents and the frontier they give."""

    approach: str  # "envelope" or "isoflop"
    n_exponent: Prediction  # a in N_opt ~ C^a, 95% interval
    d_exponent: Prediction  # b in D_opt ~ C^b
    frontier: tuple[ApproachRow, ...]
    n_runs: int  # runs whose data entered the fit
    detail: str  # what was fitted, in a sentence
    axis: str  # how C was counted


def fit_approach(
    path: str | os.PathLike,
    approach: str,
    *,
    axis: ComputeAxis | None = None,
    target_flops=None,
) -> ApproachReport:
    """Approach 1 or 2 on an experiment directory (or, for isoflop, a table).

    Raises:
        FitError: an unknown approach, a table given to the envelope, or data the
            approach cannot fit (too few levels or overlapping curves).
    """
    if approach not in APPROACHES:
        raise FitError(f"unknown approach {approach!r}; choose from {list(APPROACHES)}")
    obs = load_observations(path).on_axis(axis)
    per_token = obs.axis.per_token
    budgets = frontier_budgets(obs.flops, target_flops)
    if approach == "isoflop":
        fit = fit_isoflop(obs.n_params, obs.tokens, obs.loss, flops_per_token=per_token)
        used = [p for p in fit.profiles if p.used]
        detail = (
            f"IsoFLOP parabolas at {len(used)} of {len(fit.profiles)} compute levels, a power "
            "law through their minima"
        )
        n_runs = int(sum(p.n_params.size for p in used))
    else:
        if not Path(path).is_dir() or not obs.run_ids:
            raise FitError(
                f"{path}: the envelope needs training curves: give an experiment directory",
                hint="a table of final losses suits --approach isoflop or the default",
            )
        ids, n, d, loss = _curves(Path(path), obs)
        fit = fit_envelope(ids, n, d, loss, flops_per_token=per_token)
        detail = (
            f"the lowest of {len(set(ids))} training curves at {fit.flops.size} compute "
            f"values, {len(set(fit.run_ids))} runs on the envelope"
        )
        n_runs = len(set(ids))
    return ApproachReport(
        approach=approach,
        n_exponent=_exponent(fit.n_law),
        d_exponent=_exponent(fit.d_law),
        frontier=tuple(
            ApproachRow(
                float(c), fit.n_opt(float(c), level=_LEVEL), fit.d_opt(float(c), level=_LEVEL)
            )
            for c in budgets
        ),
        n_runs=n_runs,
        detail=detail,
        axis=obs.axis.describe(),
    )


def _curves(experiment: Path, obs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every logged point of the finished runs: (run id, N, tokens so far, loss)."""
    from storage.store import Store

    table = Store(str(experiment)).metrics(
        list(obs.run_ids), columns=["run_id", "tokens", "loss", "eval_loss"]
    )
    ids = np.asarray(table["run_id"].to_pylist(), dtype=object)
    tokens = np.asarray(table["tokens"].to_numpy(zero_copy_only=False), dtype=float)
    eval_loss = np.asarray(table["eval_loss"].to_numpy(zero_copy_only=False), dtype=float)
    train = np.asarray(table["loss"].to_numpy(zero_copy_only=False), dtype=float)
    # One kind of loss for every curve (eval and train loss differ by more than the
    # envelope's margins): eval loss when every run logged it at 3+ points, else train.
    evals = [np.isfinite(eval_loss[ids == r]).sum() for r in obs.run_ids]
    loss = eval_loss if min(evals, default=0) >= 3 else train
    n_of = dict(zip(obs.run_ids, obs.n_params, strict=True))
    keep = np.isfinite(loss) & (loss > 0) & (tokens > 0)
    ids, tokens, loss = ids[keep], tokens[keep], loss[keep]
    return ids, np.array([n_of[r] for r in ids]), tokens, loss


def _exponent(law) -> Prediction:
    return t_interval(law.exponent, np.sqrt(law.cov[1, 1]), _LEVEL, False, True, law.dof)
