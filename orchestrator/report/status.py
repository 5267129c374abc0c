"""What a study looks like right now, read from its store only (works while it runs).

Everything here is derived from the files the driver and the workers write (events,
metrics, per-run summaries, the stored plan), never from a live driver, so `orch status`
answers the same for a study that is running, crashed, or long finished.

A running run's final loss is predicted from its partial curve by the learning-rate
annealing law (`laws/curves.py`) fitted to the finished runs' curves: the number a user
watching a run wants before it ends.

Budget figures are derived live from the runs, because the driver writes
`ledger.parquet` only when it stops: a run's compute is committed while its last event
is `running`, and spent once it has ended, in proportion to the tokens it trained
(all of it for a finished run).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from orchestrator.laws.auto import AutoLaw
from orchestrator.laws.axis import ComputeAxis
from orchestrator.laws.base import FitError, Prediction
from orchestrator.laws.curve_data import read_curves
from orchestrator.laws.curves import AnnealingLaw
from orchestrator.laws.fit_report import observations_from_summary
from orchestrator.planning import expand_plan, parse_plan
from orchestrator.planning.axis import compute_axis
from orchestrator.planning.flops import count_params
from orchestrator.scheduler.base import RunState
from storage import schema
from storage.errors import OrchError
from storage.fsio import read_bytes, redact
from storage.store import Store
from workers.spec import RunSpec

log = logging.getLogger(__name__)

_LEVEL = 0.95
_PREDICTION_LEVEL = 0.9  # a running run's predicted final loss, as a prediction interval
# Cluster-bootstrap refits for its interval: each costs ~0.2 s on 35 simulated curves, and
# 20 gave bounds within 0.3% of 50's there (a coarse interval, paid once per finished run).
_CURVE_BOOTSTRAP = 20
_NO_RUNNING_CURVE = "no running run has a curve past its warmup yet"
_METRIC_COLUMNS = ["run_id", "step", "tokens", "wall_s", "loss", "eval_loss", "tokens_per_s"]


@dataclass
class RunStatusRow:
    run_id: str
    spec: RunSpec | None
    state: RunState  # the last event's state; QUEUED if none yet
    attempts: int
    detail: str
    latest: dict[str, Any] = field(default_factory=dict)  # last metrics row
    summary: dict[str, Any] | None = None  # the run's summary row, once it has ended
    n_params: int | None = None  # non-embedding params: the worker's count, or the shape's
    eval_loss: float | None = None  # nats/token: the summary's, else the last one logged
    tokens_done: int = 0  # training tokens so far (the latest attempt's progress)
    tokens_planned: int = 0  # what the run trains in all (steps x tokens per step)
    flops_planned: float = 0.0  # total training FLOPs the run is budgeted
    elapsed_s: float = 0.0  # wall time of all attempts, the running one up to now
    eta_s: float | None = None  # seconds left at the latest tokens/s (running runs only)
    gpu_hours: float = 0.0  # ranks x elapsed, accelerator-hours (CPU slots on CPU)
    log_files: list[str] = field(default_factory=list)  # oldest attempt first
    # A running run's final eval loss predicted from its curve so far (`predict_running`).
    predicted_final: Prediction | None = None

    @property
    def progress(self) -> float:
        """Fraction of the planned tokens trained, 0..1."""
        if self.state is RunState.FINISHED:
            return 1.0
        return min(1.0, self.tokens_done / self.tokens_planned) if self.tokens_planned else 0.0


@dataclass(frozen=True)
class BudgetStatus:
    """Compute so far; FLOPs are total training FLOPs, GPU-hours accelerator-hours."""

    budget_flops: float | None  # the plan's cap; None when it gives none (a grid)
    planned_flops: float
    committed_flops: float  # runs whose last event is `running`
    spent_flops: float  # ended runs, by the share of their tokens they trained
    planned_gpu_hours: float
    spent_gpu_hours: float  # includes the running attempts so far


@dataclass(frozen=True)
class FitHeadline:
    """The law fitted to the runs ended so far, read at the target compute."""

    form: str
    n_runs: int
    target_flops: float  # C the numbers below are for
    n_opt: Prediction  # parameters
    d_opt: Prediction  # tokens
    loss_opt: Prediction  # nats/token
    reliable: bool
    warnings: tuple[str, ...]


@dataclass
class ExperimentStatus:
    experiment: str
    runs: list[RunStatusRow]
    budget: BudgetStatus | None = None
    fit: FitHeadline | None = None
    fit_note: str = ""  # why there is no fit headline, if there is none
    curve_note: str = ""  # why running runs have no predicted final loss, if they have none
    target_flops: float | None = None  # C the study is asked about (plan's report.flops)
    read_unix_s: float = 0.0
    # How the plan counts C (planning/axis.py); None without a plan: the runs' own C.
    axis: ComputeAxis | None = None

    def count(self, state: RunState | str) -> int:
        return sum(r.state == state for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (`orch status --json`): the runs, the budget, the fit.

        A run is its id, state, N, shape, progress, losses, compute, timing and log
        files; intervals are {"mean", "lo", "hi", "level"}; missing values are null.
        """
        runs = []
        for r in self.runs:
            shape = r.spec.shape if r.spec is not None else None
            runs.append(
                {
                    "run_id": r.run_id,
                    "state": str(r.state),
                    "attempts": r.attempts,
                    "n_params": r.n_params,
                    "n_layer": shape.n_layer if shape else None,
                    "d_model": shape.d_model if shape else None,
                    "world_size": r.spec.world_size if r.spec is not None else None,
                    "zero_stage": r.spec.zero_stage if r.spec is not None else None,
                    "progress": r.progress,
                    "tokens_done": r.tokens_done,
                    "tokens_planned": r.tokens_planned,
                    "flops_planned": r.flops_planned,
                    "loss": _finite(r.latest.get("loss")),
                    "eval_loss": _finite(r.eval_loss),
                    "elapsed_s": r.elapsed_s,
                    "eta_s": r.eta_s,
                    "gpu_hours": r.gpu_hours,
                    "detail": r.detail,
                    "log_files": list(r.log_files),
                    "predicted_final_loss": (
                        _interval_dict(r.predicted_final) if r.predicted_final else None
                    ),
                }
            )
        fit = None
        if self.fit is not None:
            fit = {
                k: _interval_dict(v) if isinstance(v, Prediction) else v
                for k, v in dataclasses.asdict(self.fit).items()
            }
            fit.update(
                {q: _interval_dict(getattr(self.fit, q)) for q in ("n_opt", "d_opt", "loss_opt")}
            )
        return {
            "experiment": self.experiment,
            "read_unix_s": self.read_unix_s,
            "counts": {str(s): self.count(s) for s in RunState if self.count(s)},
            "runs": runs,
            "budget": dataclasses.asdict(self.budget) if self.budget is not None else None,
            "target_flops": self.target_flops,
            "axis": self.axis.describe() if self.axis is not None else None,
            "fit": fit,
            "fit_note": self.fit_note,
            "curve_note": self.curve_note,
        }


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _interval_dict(p: Prediction) -> dict[str, float | None]:
    return {"mean": _finite(p.mean), "lo": _finite(p.lo), "hi": _finite(p.hi), "level": p.level}


def read_status(
    store: Store, *, with_fit: bool = True, now: float | None = None
) -> ExperimentStatus:
    """The study's runs, budget and (with `with_fit`) the current fit's headline.

    Args:
        store: the experiment.
        with_fit: fit `AutoLaw` to the runs ended so far (about a second; repeated
            calls on unchanged runs reuse the last fit).
        now: the clock for elapsed times of running attempts (seconds since the epoch).
    """
    now = time.time() if now is None else now
    run_ids = store.run_ids()
    latest, last_eval = _latest_metrics(store, run_ids)
    rows = [_run_row(store, run_id, latest, last_eval, now) for run_id in run_ids]
    plan = _stored_plan(store)
    status = ExperimentStatus(
        store.uri,
        rows,
        budget=_budget(rows, plan),
        target_flops=_target_flops(plan, rows),
        read_unix_s=now,
        axis=compute_axis(plan) if plan is not None else None,
    )
    if with_fit:
        status.fit, status.fit_note = _headline(rows, status.target_flops, status.axis)
        status.curve_note = predict_running(store, rows)
    return status


def predict_running(store: Store, rows: list[RunStatusRow]) -> str:
    """Sets each running run's `predicted_final` from its partial curve: the annealing law
    fitted to the finished runs' curves, then `AnnealingLaw.predict_final` (which reads
    the run's own level from its points so far). Returns why no run got one, or "".
    """
    running = [r for r in rows if r.state is RunState.RUNNING]
    if not running:
        return ""
    done = tuple(r.run_id for r in rows if r.state is RunState.FINISHED)
    if not done:
        return "no curve law yet: no run has finished"
    try:
        law = _curve_law(store, done)
    except FitError as err:
        return f"no curve law yet: {err.message}"
    try:  # only the running runs' curves are read on each call; the finished ones once
        curves = read_curves(store, [r.run_id for r in running])
    except FitError:
        return _NO_RUNNING_CURVE
    by_id = {c.run_id: c for c in curves.runs}
    for row in running:
        curve = by_id.get(row.run_id)
        if curve is None or curve.finished:
            continue
        try:
            row.predicted_final = law.predict_final(curve, level=_PREDICTION_LEVEL)
        except FitError as err:
            log.info("no predicted final loss for %s: %s", row.run_id, err.message)
    return "" if any(r.predicted_final for r in running) else _NO_RUNNING_CURVE


def _latest_metrics(store: Store, run_ids: list[str]) -> tuple[dict, dict]:
    """Each run's last metrics row, and its last logged eval loss (null between evals)."""
    latest: dict[str, dict] = {}
    last_eval: dict[str, float] = {}
    metrics = store.metrics(run_ids, columns=_METRIC_COLUMNS)
    for row in metrics.to_pylist():  # sorted by (run_id, step): later rows overwrite
        latest[row["run_id"]] = row
        if row["eval_loss"] is not None and math.isfinite(row["eval_loss"]):
            last_eval[row["run_id"]] = row["eval_loss"]
    return latest, last_eval


def _run_row(store: Store, run_id: str, latest: dict, last_eval: dict, now: float):
    events = store.events(run_id).to_pylist()
    try:
        spec = RunSpec.from_dict(store.read_spec(run_id))
    except (OrchError, TypeError, ValueError, KeyError):
        spec = None  # an older or damaged spec: still listed
    summary = store.run_summary(run_id)
    state = RunState(events[-1]["state"]) if events else RunState.QUEUED
    row = RunStatusRow(
        run_id=run_id,
        spec=spec,
        state=state,
        attempts=sum(e["state"] == RunState.RUNNING for e in events),
        detail=(events[-1]["detail"] or "") if events else "",
        latest=latest.get(run_id, {}),
        summary=summary,
        log_files=store.log_files(run_id),
    )
    if summary is not None and summary.get("eval_loss") is not None:
        row.eval_loss = summary["eval_loss"]
    else:
        row.eval_loss = last_eval.get(run_id)
    row.tokens_done = int((summary or {}).get("tokens") or row.latest.get("tokens") or 0)
    row.n_params = (summary or {}).get("n_params")
    if spec is not None:
        if row.n_params is None:  # not ended yet: the count workers/model.py will reach
            row.n_params = count_params(spec.shape).non_embedding_params
        row.tokens_planned = spec.steps * spec.tokens_per_step
        row.flops_planned = _run_flops(spec, summary)
    row.elapsed_s = _elapsed_s(events, now)
    world = spec.world_size if spec is not None else 1
    row.gpu_hours = world * row.elapsed_s / 3600
    rate = row.latest.get("tokens_per_s")
    if state is RunState.RUNNING and rate and row.tokens_planned:
        row.eta_s = max(0.0, row.tokens_planned - row.tokens_done) / rate
    return row


def _run_flops(spec: RunSpec, summary: dict | None) -> float:
    """The run's planned training FLOPs: its spec's per-token count x tokens; a spec
    without one (6 N D, N known only to the worker) takes the summary's count."""
    if spec.flops_per_token:
        return spec.flops_per_token * spec.tokens
    if summary is not None and summary.get("flops") and summary.get("tokens"):
        return summary["flops"] / summary["tokens"] * spec.tokens
    return 0.0


def _elapsed_s(events: list[dict], now: float) -> float:
    """Wall seconds spent in `running` over all attempts (the open one up to `now`)."""
    total, started = 0.0, None
    for e in events:
        if e["state"] == RunState.RUNNING:
            started = e["time_unix_s"]
        elif started is not None:
            total += e["time_unix_s"] - started
            started = None
    if started is not None:
        total += max(0.0, now - started)
    return total


def _stored_plan(store: Store):
    """The experiment's plan, or None if it has none or it no longer parses. Only its
    budget and report settings are used, so where the plan says its store is matters not
    (an experiment copied elsewhere, or on S3 with options in its URI, still reads)."""
    text = read_bytes(store.fs, f"{store.root}/plan.yaml")
    if text is None:
        return None
    try:
        return parse_plan(text.decode(), path=f"{redact(store.uri)}/plan.yaml")
    except (OrchError, UnicodeDecodeError) as err:
        log.info("%s: plan.yaml unusable (%s); budget from the runs alone", store.uri, err)
        return None


def _budget(rows: list[RunStatusRow], plan) -> BudgetStatus:
    planned_flops = sum(r.flops_planned for r in rows)
    planned_gpu_hours = 0.0
    budget_flops = None
    if plan is not None:
        try:
            ledger = expand_plan(plan).ledger()
        except OrchError as err:  # a plan the planner now rejects: the runs still count
            log.info("cannot re-plan %s: %s", plan.name, err)
        else:
            budget_flops = ledger.budget_flops
            stages = ledger.stages.values()
            planned_flops = max(planned_flops, sum(s.planned_flops for s in stages))
            planned_gpu_hours = sum(s.planned_gpu_hours for s in stages)
    committed = sum(r.flops_planned for r in rows if r.state is RunState.RUNNING)
    spent = sum(
        r.flops_planned * r.progress
        for r in rows
        if r.state not in (RunState.RUNNING, RunState.QUEUED)
    )
    return BudgetStatus(
        budget_flops=budget_flops,
        planned_flops=planned_flops,
        committed_flops=committed,
        spent_flops=spent,
        planned_gpu_hours=planned_gpu_hours,
        spent_gpu_hours=sum(r.gpu_hours for r in rows),
    )


def _target_flops(plan, rows: list[RunStatusRow]) -> float | None:
    """The plan's largest `report.flops`, else the largest compute among the runs."""
    if plan is not None and plan.report_flops:
        return max(plan.report_flops)
    flops = [r.flops_planned for r in rows if r.flops_planned > 0]
    return max(flops) if flops else None


def summary_table(rows: list[RunStatusRow]) -> pa.Table:
    """The ended runs' summary rows (storage.schema.SUMMARY), as the fit reads them."""
    found = [r.summary for r in rows if r.summary is not None]
    return pa.Table.from_pylist(found, schema=schema.SUMMARY)


def _headline(
    rows: list[RunStatusRow], target: float | None, axis: ComputeAxis | None
) -> tuple[FitHeadline | None, str]:
    if target is None:
        return None, "no runs with a known compute yet"
    try:
        obs = observations_from_summary(summary_table(rows), Path(".")).on_axis(axis)
    except FitError as err:
        return None, f"no finished runs to fit yet ({err.message})"
    key = (tuple(obs.n_params), tuple(obs.tokens), tuple(obs.loss), float(target), obs.axis)
    try:
        return _fit_headline(key), ""
    except FitError as err:
        return None, f"no fit yet: {err.message}"


_CURVE_LAWS: dict[tuple, AnnealingLaw] = {}  # `--watch`: refit when a run finishes, not per read


def _curve_law(store: Store, done: tuple[str, ...]) -> AnnealingLaw:
    """The annealing law of the finished runs `done`, read and fitted once per set."""
    key = (store.uri, done)
    if key not in _CURVE_LAWS:
        if len(_CURVE_LAWS) >= 4:
            _CURVE_LAWS.pop(next(iter(_CURVE_LAWS)))
        curves = read_curves(store, list(done)).runs
        _CURVE_LAWS[key] = AnnealingLaw(n_bootstrap=_CURVE_BOOTSTRAP).fit(curves)
    return _CURVE_LAWS[key]


@functools.lru_cache(maxsize=8)  # `--watch` re-reads every few seconds; refit on change only
def _fit_headline(key: tuple) -> FitHeadline:
    n, d, loss, target, axis = key
    law = AutoLaw(flops_per_token=axis.per_token).fit(np.array(n), np.array(d), np.array(loss))
    frontier = law.frontier(target, level=_LEVEL)
    return FitHeadline(
        form=f"auto ({law.chosen_} weighs {law.weights_[law.chosen_]:.0%})",
        n_runs=len(n),
        target_flops=target,
        n_opt=frontier.n_opt,
        d_opt=frontier.d_opt,
        loss_opt=frontier.loss_opt,
        reliable=bool(law.reliable_),
        warnings=tuple(law.warnings_),
    )
