"""Everything the report shows, gathered from the store once: curves, fits, budget history.

Each analysis that can fail on too little data (the law fit, IsoFLOP parabolas, the rival
forms' backtest) is tried here, and a failure becomes a note naming what is missing; the
report then shows that note in the section instead of a plot. Only the store is read, so
a report can be made while the study runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.laws import AutoLaw, fit_isoflop
from orchestrator.laws.base import FitError
from orchestrator.laws.fit_report import Observations, observations_from_summary
from orchestrator.laws.isoflop import IsoFlopFit, IsoFlopProfile, compute_levels, isoflop_profiles
from orchestrator.report.status import ExperimentStatus, read_status, summary_table
from orchestrator.scheduler.base import RunState
from storage.store import Store

log = logging.getLogger(__name__)

_LEVEL_TOL_DEX = 0.05  # runs within 12 % of compute share an IsoFLOP level (as fit_isoflop)


@dataclass(frozen=True)
class Curve:
    """One run's logged losses against training tokens."""

    run_id: str
    n_params: float  # N, non-embedding parameters (NaN if the spec is unreadable)
    tokens: np.ndarray  # training tokens at each logged step
    loss: np.ndarray  # train loss, nats/token
    eval_tokens: np.ndarray  # training tokens at each evaluation
    eval_loss: np.ndarray  # held-out loss, nats/token


@dataclass(frozen=True)
class BudgetHistory:
    """Compute over time, as step functions sampled at every event."""

    hours: np.ndarray  # hours since the study's first event
    spent_flops: np.ndarray
    committed_flops: np.ndarray
    budget_flops: float | None  # the plan's cap, if it has one
    planned_flops: float


@dataclass(frozen=True)
class ReportData:
    experiment: str
    status: ExperimentStatus
    curves: list[Curve]
    observations: Observations | None  # finished runs' (N, D, L); None before any
    # Every form fitted to `observations` and weighed by backtest (its `backtest_` is the
    # rival forms' section), C counted as the plan counts it (`observations.axis`).
    law: AutoLaw | None
    law_note: str  # why there is no law, if none
    levels: list[np.ndarray]  # indices into observations per compute level, smallest first
    profiles: tuple[IsoFlopProfile, ...]  # each level's parabola, in the order of `levels`
    isoflop: IsoFlopFit | None  # the power laws across levels (needs 2 with a minimum)
    isoflop_note: str
    comparison_note: str  # why there is no backtest table, if none
    history: BudgetHistory | None
    history_note: str


def gather(store: Store) -> ReportData:
    """Reads the store and runs every analysis the report shows."""
    status = read_status(store)
    observations, law, law_note = _fit(status)
    levels: list[np.ndarray] = []
    profiles: tuple[IsoFlopProfile, ...] = ()
    isoflop, isoflop_note = None, "no finished runs yet"
    comparison_note = law_note or "no finished runs yet"
    if observations is not None:
        n, d, loss = observations.n_params, observations.tokens, observations.loss
        axis = {"flops_per_token": observations.axis.per_token, "level_tol_dex": _LEVEL_TOL_DEX}
        levels = compute_levels(observations.flops, tol_dex=_LEVEL_TOL_DEX)
        profiles = isoflop_profiles(n, d, loss, **axis)
        try:
            isoflop, isoflop_note = fit_isoflop(n, d, loss, **axis), ""
        except FitError as err:
            isoflop_note = f"IsoFLOP fit not possible: {err.message}"
    if law is not None:
        backtested = any(r.origins for r in law.backtest_)
        comparison_note = (
            ""
            if backtested
            else (
                "rival forms not compared: too few runs above any compute cut-off to backtest them"
            )
        )
    history, history_note = _history(store, status)
    return ReportData(
        experiment=store.uri,
        status=status,
        curves=_curves(store, status),
        observations=observations,
        law=law,
        law_note=law_note,
        levels=levels,
        profiles=profiles,
        isoflop=isoflop,
        isoflop_note=isoflop_note,
        comparison_note=comparison_note,
        history=history,
        history_note=history_note,
    )


def _fit(status: ExperimentStatus) -> tuple[Observations | None, AutoLaw | None, str]:
    try:
        obs = observations_from_summary(summary_table(status.runs), Path(status.experiment))
    except FitError:
        return None, None, "no finished runs yet"
    obs = obs.on_axis(status.axis)
    try:
        law = AutoLaw(flops_per_token=obs.axis.per_token).fit(obs.n_params, obs.tokens, obs.loss)
    except FitError as err:
        return obs, None, f"the law could not be fitted to {len(obs.loss)} runs: {err.message}"
    # A fit that stands but is shaky says so under its figures.
    return obs, law, "; ".join(f"fit caution: {w}" for w in law.warnings_)


def _curves(store: Store, status: ExperimentStatus) -> list[Curve]:
    table = store.metrics(
        [r.run_id for r in status.runs], columns=["run_id", "tokens", "loss", "eval_loss"]
    )
    ids = np.asarray(table["run_id"].to_pylist(), dtype=object)
    tokens = _floats(table["tokens"])
    loss = _floats(table["loss"])
    eval_loss = _floats(table["eval_loss"])
    curves = []
    for r in status.runs:
        mine = ids == r.run_id
        if not mine.any():
            continue
        n = r.n_params
        has_eval = mine & np.isfinite(eval_loss)
        has_loss = mine & np.isfinite(loss)
        curves.append(
            Curve(
                run_id=r.run_id,
                n_params=float(n) if n is not None else float("nan"),
                tokens=tokens[has_loss],
                loss=loss[has_loss],
                eval_tokens=tokens[has_eval],
                eval_loss=eval_loss[has_eval],
            )
        )
    return curves


def _history(store: Store, status: ExperimentStatus) -> tuple[BudgetHistory | None, str]:
    """Spent and committed FLOPs after every event: a run commits its compute when it
    starts and spends it when it ends (all of it if finished, else the share of tokens it
    trained, as `orch status` counts)."""
    flops = {r.run_id: r.flops_planned for r in status.runs}
    share = {r.run_id: r.progress for r in status.runs}
    events = []
    for r in status.runs:
        for e in store.events(r.run_id).to_pylist():
            events.append((e["time_unix_s"], r.run_id, e["state"]))
    if not events or status.budget is None:
        return None, "no run has started yet"
    events.sort()
    t0 = events[0][0]
    running: set[str] = set()
    spent = 0.0
    hours, spent_series, committed_series = [0.0], [0.0], [0.0]
    for t, run_id, state in events:
        if state == RunState.RUNNING:
            running.add(run_id)
        elif state != RunState.QUEUED:
            running.discard(run_id)
            spent += flops[run_id] * (1.0 if state == RunState.FINISHED else share[run_id])
        hours.append((t - t0) / 3600)
        spent_series.append(spent)
        committed_series.append(sum(flops[r] for r in running))
    now_h = (status.read_unix_s - t0) / 3600
    if running and now_h > hours[-1]:  # runs still going: the picture holds until now
        hours.append(now_h)
        spent_series.append(spent_series[-1])
        committed_series.append(committed_series[-1])
    return (
        BudgetHistory(
            hours=np.asarray(hours),
            spent_flops=np.asarray(spent_series),
            committed_flops=np.asarray(committed_series),
            budget_flops=status.budget.budget_flops,
            planned_flops=status.budget.planned_flops,
        ),
        "",
    )


def _floats(column) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)
