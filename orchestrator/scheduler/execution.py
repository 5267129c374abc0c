"""Drive a set of runs through a backend until each has ended, keeping state in the store.

The store is the only state: a run whose summary says finished is never run again, and a
run that was started but never ended (a killed driver) is started again as a new attempt
that resumes from its checkpoint. Retries have two budgets, counted from the store's
events so they survive driver restarts: `preemption` (node or actor lost) and `failure`
(an exception in the run). A diverged run is not retried. `orch cancel` leaves a marker
in the store that the loop sees at its next poll.

A caller may also stop running runs early (`execute(stop_early=...)`, the adaptive
study's verdict that a run's outcome is already known from its curve): such a run ends
as `stopped`, with a summary row of what it trained, and is neither retried nor run
again by a resume; the ledger books the share of its steps it reported.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.planning.ledger import BudgetError, Ledger
from orchestrator.planning.plan import Retries
from orchestrator.scheduler import control
from orchestrator.scheduler.base import ENDED, Backend, RunState
from orchestrator.scheduler.function import summary_row
from storage.store import Store
from workers.spec import RunSpec

log = logging.getLogger(__name__)


@dataclass
class RunView:
    """What the driver knows of one run, for progress displays."""

    spec: RunSpec
    state: RunState
    attempt: int = 0  # the next attempt's number (attempts started so far)
    reused: bool = False  # finished in an earlier submission
    detail: str = ""
    preemptions: int = 0
    failures: int = 0
    latest: dict[str, Any] = field(default_factory=dict)  # last metrics row, or the outcome
    stage: str = "seed"

    @property
    def flops(self) -> float:
        return run_flops(self.spec)


def run_flops(spec: RunSpec) -> float:
    """The compute a run costs by the plan's count: a WSD cooldown branch starts from its
    parent's checkpoint, so only the steps after `branch_step` are new."""
    new_tokens = spec.tokens - spec.branch_step * spec.tokens_per_step
    return (spec.flops_per_token or 0.0) * new_tokens


def spent_flops(spec: RunSpec, step: int) -> float:
    """The share of `run_flops(spec)` a run has used after `step` updates: a cooldown
    branch counts its steps from its branch step, as its cost does."""
    start = spec.branch_step if spec.branch_from else 0
    share = (step - start) / max(1, spec.steps - start)
    return run_flops(spec) * min(1.0, max(0.0, share))


@dataclass
class Execution:
    runs: list[RunView]
    cancelled: bool = False

    def count(self, *states: RunState) -> int:
        return sum(v.state in states for v in self.runs)

    @property
    def done(self) -> bool:
        return all(v.state.is_terminal for v in self.runs)


_COUNTED = {RunState.FAILED, RunState.PREEMPTED, RunState.CANCELLED}
_UNREAD = object()


def prepare(specs: Sequence[RunSpec], store: Store) -> Execution:
    """Write every spec to the store and read back each run's state and retry counts."""
    unique = dict((s.run_id, s) for s in specs)  # the same spec twice is one run
    store.write_specs({r: s.to_json() for r, s in unique.items()})  # reconcile's, at once
    states = store.event_states()  # one read of the log for every run
    summaries = store.run_summaries_of(unique)
    views = [
        reconcile(
            spec,
            store,
            states.get(spec.run_id, []),
            summary=summaries.get(spec.run_id),
            spec_stored=True,  # just above: its JSON need not be made again
        )
        for spec in unique.values()
    ]
    store.flush_events()  # the end events reconcile wrote
    return Execution(views)


def reconcile(
    spec: RunSpec,
    store: Store,
    states: list[str] | None = None,
    *,
    summary: Any = _UNREAD,
    spec_stored: bool = False,
) -> RunView:
    """A run as the store has it: its spec written (a damaged copy replaced), its retry
    counts read from its events, and QUEUED unless its summary says it ended. A run whose
    summary ended but whose events do not say so (a driver killed between the worker's
    summary and its own end event) gets its end event now. `states` and `summary` (None:
    it has none) are read from the store unless the caller read them already, and the
    spec is not written again if the caller just stored it (`spec_stored`)."""
    if not spec_stored:
        store.write_spec(spec.run_id, spec.to_json())
    if states is None:
        states = store.events(spec.run_id).column("state").to_pylist()
    view = RunView(
        spec,
        RunState.QUEUED,
        attempt=states.count(RunState.RUNNING.value),
        preemptions=states.count(RunState.PREEMPTED.value),
        failures=states.count(RunState.FAILED.value),
    )
    if summary is _UNREAD:
        summary = store.run_summary(spec.run_id)
    if summary is not None and summary["status"] in ENDED:
        view.state, view.reused, view.latest = RunState(summary["status"]), True, summary
        if not states or states[-1] != summary["status"]:
            store.append_event(
                spec.run_id,
                attempt=summary.get("attempt") or 0,
                state=summary["status"],
                detail="end recorded at resume",
                durable=False,  # the summary says it already; prepare flushes once
            )
    return view


def execute(
    execution: Execution,
    store: Store,
    backend_factory: Callable[[], Backend],
    *,
    retries: Retries = Retries(),
    ledger: Ledger | None = None,
    on_progress: Callable[[Execution], None] | None = None,
    stop_early: Callable[[Execution], Mapping[str, str]] | None = None,
    poll_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Execution:
    """Run every queued run to an end state. The backend is made only if there is work.

    Runs are fed largest-compute first while the backend has capacity (longest jobs first
    keeps the cluster busy to the end), and polled once every `poll_s` seconds. With a
    ledger, a run's FLOPs are committed before it is submitted (a run the budget cannot
    hold is not started) and settled when it ends. A run that reports no new step for
    `retries.stall_s` seconds is cancelled and counted as a failure. After each poll,
    `stop_early` (given the execution) names running runs to stop early, each with why.
    """
    queue = deque(
        sorted(
            (v for v in execution.runs if v.state == RunState.QUEUED),
            key=lambda v: v.flops,
            reverse=True,
        )
    )
    if not queue:
        return execution
    control.clear_cancel(store)
    backend = backend_factory()
    running: dict[str, RunView] = {}
    observed_at = -float("inf")
    moved: dict[str, tuple[Any, float]] = {}  # run_id -> (latest step, when it was seen)
    while queue or running:
        if control.cancel_requested(store):
            _cancel_all(execution, store, backend, queue, running, ledger)
            break
        _feed(queue, running, store, backend, ledger)
        for run_id, status in backend.poll(list(running)).items():
            view = running[run_id]
            view.latest = status.outcome or view.latest
            state, detail = status.state, status.detail
            if not state.is_terminal and _stalled(
                moved, run_id, view.latest.get("step"), clock(), retries.stall_s
            ):
                backend.cancel(run_id, reason="stalled")
                state = RunState.FAILED
                detail = f"stalled: no new step reported for {retries.stall_s:g} s"
            if state.is_terminal:
                del running[run_id]
                moved.pop(run_id, None)
                _ended(view, state, detail, store, ledger, retries, queue)
        if stop_early is not None and running:
            for run_id, why in stop_early(execution).items():
                if run_id in running:  # not one that ended at this very poll
                    moved.pop(run_id, None)
                    _stop(running.pop(run_id), why, store, backend, ledger)
        # Group commit: the ends of this poll reach the disk in one flush, before any of
        # them is acted on (a retried run restarted, a freed slot refilled).
        store.flush_events()
        # Refill the slots this poll freed before waiting: otherwise they idle until the
        # wait ends (bench/scheduler.py measured 70 -> 41 ms per 50 ms run on 2 slots).
        if queue and not control.cancel_requested(store):
            _feed(queue, running, store, backend, ledger)
        if on_progress is not None:
            on_progress(execution)
        observed_at = _observe(backend, execution, observed_at, clock())
        if queue or running:
            # A backend that can wait for its runs to change (Ray) wakes the loop early.
            if not backend.wait(poll_s):
                sleep(poll_s)
    _observe(backend, execution, -float("inf"), clock())  # the final counts, unthrottled
    store.close_events()  # on object stores, this session's event objects become one
    return execution


def _stalled(moved: dict, run_id: str, step: Any, now: float, stall_s: float) -> bool:
    """Whether a running run's step has stood still for `stall_s` (the clock starts at
    the first poll that sees it running)."""
    seen = moved.get(run_id)
    if seen is None or seen[0] != step:
        moved[run_id] = (step, now)
        return False
    return now - seen[1] > stall_s


def _observe(backend: Backend, execution: Execution, last: float, now: float) -> float:
    """Hand the runs-by-state counts to a backend that exports them (Ray: a dashboard
    gauge), at most once a second: counting is a pass over every run, and a study of
    thousands of short runs polls hundreds of times a second."""
    if now - last < 1.0:
        return last
    counts = Counter(v.state for v in execution.runs)
    backend.observe({state: counts.get(state, 0) for state in RunState})
    return now


def _feed(
    queue: deque, running: dict, store: Store, backend: Backend, ledger: Ledger | None
) -> None:
    free = backend.capacity()
    if queue and not running and free is not None and queue[0].spec.world_size > free:
        view = queue.popleft()  # would wait forever: the cluster can never hold it
        _set(
            view,
            RunState.FAILED,
            store,
            f"needs {view.spec.world_size} ranks, the cluster has {free} free",
        )
        return
    starting = []
    while queue and (free is None or queue[0].spec.world_size <= free):
        view = queue.popleft()
        if ledger is not None:
            try:
                ledger.commit(view.stage, view.flops)
            except BudgetError as err:
                _set(view, RunState.CANCELLED, store, str(err))
                continue
        view.detail = ""
        _set(view, RunState.RUNNING, store)
        starting.append(view)
        if free is not None:
            free -= view.spec.world_size
    # The starts are visible before any run does anything (a start need not survive a
    # power loss: the attempt is then simply started again; see `_set`).
    store.flush_events(durable=False)
    for view in starting:
        backend.submit(view.spec, attempt=view.attempt)
        running[view.spec.run_id] = view


def _ended(
    view: RunView,
    state: RunState,
    detail: str,
    store: Store,
    ledger: Ledger | None,
    retries: Retries,
    queue: deque,
) -> None:
    _set(view, state, store, detail)
    log.info("run %s attempt %d: %s %s", view.spec.run_id, view.attempt, state.value, detail)
    view.attempt += 1
    if ledger is not None:
        ledger.settle(view.stage, view.flops, _spent_flops(view, state))
    if state is RunState.PREEMPTED:
        view.preemptions += 1
        if view.preemptions <= retries.preemption:
            view.state = RunState.QUEUED
            queue.appendleft(view)  # resumes from its checkpoint
    elif state is RunState.FAILED:
        view.failures += 1
        if view.failures <= retries.failure:
            view.state = RunState.QUEUED
            queue.appendleft(view)


def _spent_flops(view: RunView, state: RunState) -> float:
    """Compute an attempt used: all of it if it finished, else the share of steps it
    reported (a resumed attempt re-spends from its checkpoint, so this errs high)."""
    if state is RunState.FINISHED:
        return view.flops
    step = view.latest.get("step")
    if step is not None and view.latest.get("steps_total", view.spec.steps):
        return spent_flops(view.spec, step)
    return view.flops  # no progress seen: assume the worst


def _stop(view: RunView, why: str, store: Store, backend: Backend, ledger: Ledger | None) -> None:
    """End a running run early. Its summary is written first, durably: it is what tells a
    resume that the run ended (a crash before it means the run is simply resumed)."""
    detail = f"stopped early: {why}"
    row = stopped_summary(view.spec, view.latest, attempt=view.attempt)
    store.write_run_summary(row)
    backend.cancel(view.spec.run_id, reason=detail)
    _ended(view, RunState.STOPPED, detail, store, ledger, Retries(), deque())
    view.latest = row  # the outcome, as for a run that finished


def stopped_summary(spec: RunSpec, latest: Mapping[str, Any], *, attempt: int) -> dict:
    """The summary row of a run stopped early after `latest` (its last reported metrics
    row): what it trained and measured by then. Its predicted final loss is not here
    (the study keeps it, with its interval, in study.json): a summary row is measured."""
    step = int(latest.get("step") or 0)
    tokens = step * spec.tokens_per_step
    row = summary_row(spec, math.nan, attempt=attempt, wall_s=float(latest.get("wall_s") or 0.0))
    per_token = row["flops"] / spec.tokens
    row.update(
        status=RunState.STOPPED.value,
        steps=step,
        tokens=tokens,
        flops=per_token * tokens,
        flops_6nd=6.0 * row["n_params"] * tokens,
        final_loss=_finite(latest.get("loss")),
        eval_loss=_finite(latest.get("eval_loss")),
    )
    return row


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _cancel_all(execution, store, backend, queue, running, ledger) -> None:
    for view in list(running.values()):
        backend.cancel(view.spec.run_id, reason="orch cancel")
        if ledger is not None:
            ledger.settle(view.stage, view.flops, 0.0)
    for view in [*running.values(), *queue]:
        _set(view, RunState.CANCELLED, store, "orch cancel")
    store.flush_events()
    running.clear()
    queue.clear()
    execution.cancelled = True
    control.clear_cancel(store)


def _set(view: RunView, state: RunState, store: Store, detail: str = "") -> None:
    """Record a transition; the caller flushes the log before acting on it. What retries
    count (failures, preemptions, cancels) is flushed to disk by `store.flush_events()`;
    a start, a finish or a divergence need not be: after a power loss a lost start means
    the attempt is started again, and the run's summary (flushed by the worker) is what
    says it ended."""
    view.state, view.detail = state, detail
    store.append_event(
        view.spec.run_id,
        attempt=view.attempt,
        state=state.value,
        detail=detail,
        durable=False,
        must_survive_power_loss=state in _COUNTED,
    )
