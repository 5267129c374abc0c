"""`orch submit` and `orch resume`: a plan in, trained runs, a summary and a fitted law out.

There is one driver path: every plan is a `Study` (a grid plan is a study with zero
adaptive rounds), run through the plan's backend by `Study.run`, then fitted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from orchestrator.adaptive.study import Study
from orchestrator.laws.fit_report import FitReport, fit_observations, observations_from_summary
from orchestrator.planning import Plan, load_experiment_plan
from orchestrator.planning.axis import compute_axis
from orchestrator.planning.plan import FitLoss
from orchestrator.scheduler.base import Backend
from orchestrator.scheduler.execution import Execution
from storage.errors import OrchError
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
    stop_reason: str | None = None  # why the study stopped (None: interrupted, resumable)


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
        backend: makes the backend for the experiment's store instead of the plan's
            (e.g. `lambda store: SimulatedBackend(store)`).
        on_start: called with the Ray dashboard URL once Ray is up (not called when
            every run is already finished and no backend is needed).
        on_progress: called after each poll with the execution's current view.
    """
    store = Store(plan.experiment_uri)
    study = Study(plan, store=store)
    result = study.run(
        make_backend=backend,
        address=address,
        on_start=on_start,
        on_progress=on_progress,
        poll_s=poll_s,
    )
    summary = store.summary()
    target_flops = plan.adaptive.target_flops if plan.adaptive else None
    targets = (*plan.report_flops, *((target_flops,) if target_flops is not None else ()))
    fit, fit_error = _fit(plan, store, summary, targets)
    log.info("study %s stopped: %s", plan.name, result.stop_reason)
    return SubmitResult(
        plan, plan.experiment_uri, result.execution, summary, fit, fit_error, result.stop_reason
    )


def resume(experiment_uri: str, **options) -> SubmitResult:
    """Continue an experiment after any crash: finished runs are kept, started ones resume
    from their checkpoints, the rest are queued. Options as for `submit`."""
    return submit(load_experiment_plan(experiment_uri), **options)


def _fit(plan: Plan, store: Store, summary: pa.Table, target_flops) -> tuple:
    try:
        observations = observations_from_summary(
            losses_for_fit(summary, plan.fit_loss), Path(plan.experiment_uri)
        )
        observations = observations.on_axis(compute_axis(plan))
        fit = fit_observations(observations, target_flops=target_flops or None)
        store.write_fit(fit.record.fit_id, fit.record.to_dict())
    except OrchError as err:
        log.warning("no fit: %s", err)
        return None, str(err)
    return fit, None


def losses_for_fit(summary: pa.Table, loss: FitLoss) -> pa.Table:
    """The summary with its fitted loss in the plan's `fit.loss` unit.

    The fit reads `eval_loss`, falling back to the train loss (`final_loss`). For bits per
    byte, each run's `eval_bpb` takes `eval_loss`'s place and there is no fallback (the
    train loss is in nats per token): a run without `eval_bpb` is left out of the fit.
    On one corpus the two units differ by a constant factor, so the fitted exponents and
    the compute-optimal N and D are the same; E, A, B and the losses are in the unit.
    (The study's own fits, which choose its adaptive runs, stay in nats per token.)
    """
    if loss == "nats_per_token":
        return summary
    index = summary.schema.get_field_index
    nulls = pa.nulls(summary.num_rows, pa.float64())
    summary = summary.set_column(index("eval_loss"), "eval_loss", summary["eval_bpb"])
    return summary.set_column(index("final_loss"), "final_loss", nulls)
