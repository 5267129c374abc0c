"""`orch submit` and `orch resume`: a plan in, trained runs, a summary and a fitted law out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from orchestrator.hardware import ACCELERATORS
from orchestrator.laws import FitReport
from orchestrator.laws.report import fit_observations, observations_from_summary
from orchestrator.loop import Execution, execute, prepare
from orchestrator.plan import Plan, parse_plan
from orchestrator.planner import plan_runs
from orchestrator.scheduler.base import Backend, RunState
from storage.errors import OrchError, StoreError
from storage.fsio import join_uri, read_bytes, redact
from storage.store import Store

log = logging.getLogger(__name__)


@dataclass
class SubmitResult:
    plan: Plan
    experiment_uri: str
    execution: Execution
    summary: pa.Table  # one row per ended run (storage.schema.SUMMARY)
    fit: FitReport | None
    fit_error: str | None  # why there is no fit, if there is none
    stop_reason: str | None = None  # adaptive plans: why the study stopped (None: it did not)


def submit(
    plan: Plan,
    *,
    address: str | None = None,
    backend: Callable[[Store], Backend] | None = None,
    on_start: Callable[[str | None], None] | None = None,
    on_progress: Callable[[Execution], None] | None = None,
    poll_s: float = 0.5,
) -> SubmitResult:
    """Run every run of `plan` not already finished in its experiment, then fit the law.

    Args:
        address: Ray address; overrides the plan's; None and no plan address means an
            embedded local Ray.
        backend: makes the backend for the experiment's store instead of a RayBackend
            (e.g. `lambda store: SimulatedBackend(store)`).
        on_start: called with the Ray dashboard URL once Ray is up (not called when
            every run is already finished and no backend is needed).
        on_progress: called after each poll with the execution's current view.
    """
    if plan.adaptive is not None:
        return _submit_study(
            plan,
            address=address,
            backend=backend,
            on_start=on_start,
            on_progress=on_progress,
            poll_s=poll_s,
        )
    study = plan_runs(plan)
    store = Store(plan.experiment_uri)
    store.write_plan(plan.text)
    execution = prepare(study.specs, store)
    ledger = study.ledger()
    for view in execution.runs:
        if view.reused:  # spent in an earlier submission
            ledger.commit(view.stage, view.flops)
            ledger.settle(view.stage, view.flops, view.flops)
    made: list[Backend] = []

    def make_backend() -> Backend:
        if backend is not None:
            made.append(backend(store))
        else:
            slowest = max(v.flops for v in execution.runs)
            made.append(
                plan_backend(plan, store, address=address, on_start=on_start, slowest_flops=slowest)
            )
        return made[-1]

    if on_progress is not None:
        on_progress(execution)
    try:
        execute(
            execution,
            store,
            make_backend,
            retries=plan.retries,
            ledger=ledger,
            on_progress=on_progress,
            poll_s=poll_s,
        )
    finally:
        for b in made:  # pooled actors hold cluster resources until released
            if hasattr(b, "shutdown"):
                b.shutdown()
        store.write_ledger(ledger.rows())
    for view in execution.runs:
        if view.state is RunState.FINISHED and not view.reused:
            store.compact_run(view.spec.run_id)
    summary = store.rebuild_summary()
    fit, fit_error = _fit(plan, store, summary, plan.report_flops)
    return SubmitResult(plan, plan.experiment_uri, execution, summary, fit, fit_error)


def _submit_study(plan: Plan, *, address, backend, on_start, on_progress, poll_s) -> SubmitResult:
    """An adaptive plan: the seed grid, then rounds chosen by its strategy (Study.run)."""
    from orchestrator.study import Study

    store = Store(plan.experiment_uri)
    study = Study(plan, store=store)
    result = study.run(
        backend(store) if backend is not None else None,
        address=address,
        on_start=on_start,
        on_progress=on_progress,
        poll_s=poll_s,
    )
    summary = store.summary()
    targets = (*plan.report_flops, plan.adaptive.target_flops)
    fit, fit_error = _fit(plan, store, summary, targets)
    log.info("study %s stopped: %s", plan.name, result.stop_reason)
    return SubmitResult(
        plan, plan.experiment_uri, result.execution, summary, fit, fit_error, result.stop_reason
    )


def _fit(plan: Plan, store: Store, summary: pa.Table, target_flops) -> tuple:
    try:
        observations = observations_from_summary(summary, Path(plan.experiment_uri))
        fit = fit_observations(observations, target_flops=target_flops or None)
        store.write_fit(fit.record.fit_id, fit.record.to_dict())
    except OrchError as err:
        log.warning("no fit: %s", err)
        return None, str(err)
    return fit, None


def plan_backend(
    plan: Plan,
    store: Store,
    *,
    address: str | None = None,
    on_start: Callable[[str | None], None] | None = None,
    slowest_flops: float = 0.0,
) -> Backend:
    """The backend the plan names, for the experiment's store.

    Args:
        slowest_flops: FLOPs of the largest run (sets ray-simulated run durations).
    """
    if plan.backend.kind == "simulated":
        from orchestrator.scheduler.simulated import SimulatedBackend
        from workers.simulated import TrueLaw

        be = plan.backend
        return SimulatedBackend(
            store,
            law=TrueLaw(noise=be.noise),
            slots=be.slots,
            flops_per_s=be.flops_per_s,
            preempt_rate=be.preempt_rate,
            fail_rate=be.fail_rate,
        )
    from orchestrator.scheduler.ray_backend import RayBackend

    options = {"peak_flops_per_s": ACCELERATORS[plan.hardware.accelerator].peak_flops_per_s}
    if plan.backend.kind == "ray-simulated":
        # Each run sleeps its simulated duration; one uniform duration keeps it simple.
        options = {
            "law": {"noise": plan.backend.noise},
            "duration_s": min(60.0, slowest_flops / plan.backend.flops_per_s),
        }
    ray_backend = RayBackend(
        store.uri,
        address=address or plan.resources.address,
        cpus_per_rank=plan.resources.cpus_per_rank,
        gpus_per_rank=plan.resources.gpus_per_rank,
        kind="simulate" if plan.backend.kind == "ray-simulated" else "train",
        options=options,
    )
    if on_start is not None:
        on_start(ray_backend.dashboard_url)
    return ray_backend


def load_experiment_plan(experiment_uri: str) -> Plan:
    """The plan stored in an experiment, with its root set to where the experiment is."""
    store = Store(experiment_uri)
    text = read_bytes(store.fs, f"{store.root}/plan.yaml")
    if text is None:
        raise StoreError(
            f"{experiment_uri} is not an experiment (no plan.yaml)",
            hint="give the directory `orch submit` printed, e.g. experiments/local",
        )
    root, name = _split_experiment_uri(experiment_uri)
    plan = parse_plan(text.decode(), path=redact(join_uri(experiment_uri, "plan.yaml")), store=root)
    if plan.name != name:
        raise StoreError(
            f"{experiment_uri}/plan.yaml names experiment {plan.name!r}, "
            f"but it is stored under {name!r}"
        )
    return plan


def _split_experiment_uri(uri: str) -> tuple[str, str]:
    """(store URI, experiment name) of an experiment URI; an S3 URI keeps its query
    options (`s3://b/exps/x?endpoint_override=h:9000` -> `s3://b/exps?endpoint...`, `x`)."""
    if "://" not in uri:
        root, _, name = uri.rstrip("/").rpartition("/")
        return root or ".", name
    parts = urlsplit(uri)
    head, _, name = parts.path.rstrip("/").rpartition("/")
    return urlunsplit(parts._replace(path=head)), name


def resume(experiment_uri: str, **options) -> SubmitResult:
    """Continue an experiment after any crash: finished runs are kept, started ones resume
    from their checkpoints, the rest are queued. Options as for `submit`."""
    return submit(load_experiment_plan(experiment_uri), **options)
