"""The run loop on the SimulatedBackend: reuse, retries, resume, cancel, capacity, budget."""

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.adaptive.submit import resume, submit
from orchestrator.planning import load_experiment_plan, load_plan
from orchestrator.planning.expand import expand_plan
from orchestrator.planning.ledger import Ledger
from orchestrator.scheduler import control
from orchestrator.scheduler.base import RunState
from orchestrator.scheduler.execution import Retries, execute, prepare, run_flops, spent_flops
from orchestrator.scheduler.function import FunctionBackend
from orchestrator.scheduler.simulated import SimulatedBackend
from storage.store import Store

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def plan(tmp_path):
    text = (ROOT / "plans" / "simulated.yaml").read_text()
    text = text.replace("store: ./experiments", f"store: {tmp_path}")
    text = text.replace("levels: 5", "levels: 3").replace(
        "sizes_per_level: 7", "sizes_per_level: 4"
    )
    path = tmp_path / "sim.yaml"
    path.write_text(text)
    return load_plan(path)


def _run(store, specs, backend, **kw):
    execution = prepare(specs, store)
    return execute(execution, store, lambda: backend, poll_s=0, sleep=lambda s: None, **kw)


def _states(store, run_id):
    return store.events(run_id).column("state").to_pylist()


def test_simulated_study_finishes_every_run_and_fits(plan):
    result = submit(plan, poll_s=0)
    assert [v.state for v in result.execution.runs] == [RunState.FINISHED] * 12
    assert result.summary.num_rows == 12
    assert result.fit is not None and result.fit.form == "auto"
    # The N exponent of the chosen form: Chinchilla's alpha, or 2 eta for the over-training
    # form (its one exponent for both terms); the simulated truth's alpha is 0.34.
    params = {p.name: p.value for p in result.fit.params}
    exponent = params["alpha"] if "alpha" in params else 2 * params["eta"]
    assert 0.2 < exponent < 0.5, (result.fit.chosen, params)


def test_second_submit_reuses_every_finished_run_without_a_backend(plan):
    submit(plan, poll_s=0)
    again = submit(plan, backend=lambda store: pytest.fail("backend made for no work"))
    assert all(v.reused for v in again.execution.runs)


def test_preemptions_and_failures_have_separate_budgets(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    specs = expand_plan(plan).specs[:3]
    preempting = SimulatedBackend(store, preempt_rate=1.0)
    ex = _run(store, specs, preempting, retries=Retries(preemption=2, failure=5))
    for view in ex.runs:
        assert view.state is RunState.PREEMPTED
        assert _states(store, view.spec.run_id).count("preempted") == 3  # 1 + 2 retries
        assert _states(store, view.spec.run_id).count("failed") == 0

    store2 = Store(str(tmp_path / "exp2"))
    failing = SimulatedBackend(store2, fail_rate=1.0)
    ex = _run(store2, specs, failing, retries=Retries(preemption=5, failure=1))
    for view in ex.runs:
        assert view.state is RunState.FAILED
        assert _states(store2, view.spec.run_id).count("failed") == 2  # 1 + 1 retry
        assert _states(store2, view.spec.run_id).count("preempted") == 0


def test_retried_run_gets_a_new_attempt_number(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    spec = expand_plan(plan).specs[0]
    # preempt_rate 0.5: the fault draw is per (run, attempt); find a run preempted once.
    backend = SimulatedBackend(store, preempt_rate=0.5)
    _run(store, [spec], backend, retries=Retries(preemption=10))
    events = store.events(spec.run_id).to_pylist()
    attempts = [e["attempt"] for e in events if e["state"] == "running"]
    assert attempts == list(range(len(attempts)))
    assert events[-1]["state"] == "finished"
    assert store.run_summary(spec.run_id)["attempt"] == attempts[-1]


def test_run_started_by_a_dead_driver_is_resumed_as_a_new_attempt(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    specs = expand_plan(plan).specs[:2]
    store.write_spec(specs[0].run_id, specs[0].to_json())
    store.append_event(specs[0].run_id, attempt=0, state="running")  # driver died here
    ex = prepare(specs, store)
    assert ex.runs[0].state is RunState.QUEUED and ex.runs[0].attempt == 1
    _run(store, specs, SimulatedBackend(store))
    assert store.run_summary(specs[0].run_id)["attempt"] == 1


def test_cancel_marker_stops_every_run_and_marks_it_cancelled(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    specs = expand_plan(plan).specs
    backend = SimulatedBackend(store, flops_per_s=1.0, slots=4)  # nothing ever ends by itself

    def cancel_on_first_poll(execution):
        control.request_cancel(store)

    ex = execute(
        prepare(specs, store),
        store,
        lambda: backend,
        poll_s=0,
        sleep=lambda s: None,
        on_progress=cancel_on_first_poll,
    )
    assert ex.cancelled
    assert all(v.state is RunState.CANCELLED for v in ex.runs)
    assert not control.cancel_requested(store)


def test_never_more_ranks_running_than_the_backend_has(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    specs = [replace(s, world_size=1, micro_batch=s.global_batch) for s in expand_plan(plan).specs]
    clock = iter(range(10**6))
    backend = SimulatedBackend(store, slots=3, flops_per_s=1e18, clock=lambda: next(clock))
    peak = []

    def watch(execution):
        peak.append(execution.count(RunState.RUNNING))

    execute(
        prepare(specs, store),
        store,
        lambda: backend,
        poll_s=0,
        sleep=lambda s: None,
        on_progress=watch,
    )
    assert max(peak) == 3


def test_ledger_stops_runs_the_budget_cannot_hold(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    study = expand_plan(plan)
    budget = study.seed_flops / 2
    ledger = Ledger(budget)
    ex = _run(store, study.specs, SimulatedBackend(store), ledger=ledger)
    finished = [v for v in ex.runs if v.state is RunState.FINISHED]
    assert 0 < len(finished) < len(ex.runs)
    assert sum(v.flops for v in finished) <= budget
    assert ledger.spent_flops + ledger.committed_flops <= budget
    refused = [v for v in ex.runs if v.state is RunState.CANCELLED]
    assert refused and all("exceeds the remaining budget" in v.detail for v in refused)


def test_resume_reads_the_plan_stored_in_the_experiment(plan):
    submit(plan, poll_s=0)
    stored = load_experiment_plan(plan.experiment_uri)
    assert stored.name == plan.name and stored.experiment_uri == plan.experiment_uri
    result = resume(plan.experiment_uri, poll_s=0)
    assert all(v.reused for v in result.execution.runs)


class _Reporting(SimulatedBackend):
    """Reports a new step at each poll until its runs end (a slow but live run)."""

    def poll(self, run_ids):
        out = super().poll(run_ids)
        return {
            k: replace(s, outcome={"step": self.clock()}) if s.state is RunState.RUNNING else s
            for k, s in out.items()
        }


def test_a_run_that_never_reports_is_stopped_and_counted_as_a_failure(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    specs = expand_plan(plan).specs[:2]
    ticks = iter(range(10**6))  # the loop's clock: one second per look
    backend = SimulatedBackend(store, flops_per_s=1e-9)  # silent, and never ends by itself
    ex = execute(
        prepare(specs, store),
        store,
        lambda: backend,
        poll_s=0,
        sleep=lambda s: None,
        retries=Retries(failure=1, stall_s=30),
        clock=lambda: next(ticks),
    )
    for view in ex.runs:
        assert view.state is RunState.FAILED
        assert view.detail == "stalled: no new step reported for 30 s"
        assert _states(store, view.spec.run_id) == ["running", "failed", "running", "failed"]
    assert not backend._pending  # each stalled attempt was cancelled on the backend


def test_a_slow_run_that_keeps_reporting_is_not_stopped(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    spec = expand_plan(plan).specs[0]
    ticks = iter(range(10**6))
    clock = lambda: next(ticks)  # noqa: E731 - shared by the backend and the loop
    flops = spec.flops_per_token * spec.tokens
    backend = _Reporting(store, flops_per_s=flops / 500, clock=clock)  # 500 s at one a tick
    ex = execute(
        prepare([spec], store),
        store,
        lambda: backend,
        poll_s=0,
        sleep=lambda s: None,
        retries=Retries(stall_s=30),
        clock=clock,
    )
    assert ex.runs[0].state is RunState.FINISHED
    assert _states(store, spec.run_id) == ["running", "finished"]


def test_instant_in_process_runs_never_wait_for_a_poll_interval(plan):
    # poll_s of an hour: any wait for it would hang the test; the backends say when a run
    # is due instead, and the loop's own sleep is never called.
    specs = [r.spec for r in expand_plan(plan).runs]
    slept = []
    for backend in (
        SimulatedBackend(Store(plan.experiment_uri), slots=64),
        FunctionBackend(Store(plan.experiment_uri + "-fn"), lambda spec: 3.0),
    ):
        execution = execute(
            prepare(specs, backend.store),
            backend.store,
            lambda b=backend: b,
            poll_s=3600,
            sleep=slept.append,
        )
        assert execution.count(RunState.FINISHED) == len(specs)
    assert slept == []


def test_the_study_books_simulated_runs_from_their_outcomes_without_reading_them_back(
    plan, monkeypatch
):
    from orchestrator.adaptive.study import Study
    from storage.summaries import Summaries

    # Counted where every summary reader of the store ends up (storage.summaries).
    reads, scans = [], []
    scan, read = Summaries.rows, Summaries.row

    def read_back(self, run_id):  # a summary that exists read again (a missing one is not)
        row = read(self, run_id)
        if row is not None:
            reads.append(run_id)
        return row

    monkeypatch.setattr(Summaries, "row", read_back)
    monkeypatch.setattr(Summaries, "rows", lambda self: scans.append(1) or scan(self))
    study = Study(plan)  # a new experiment: nothing to read yet
    reads.clear()
    result = study.run(poll_s=0)
    assert result.execution.count(RunState.FINISHED) == 12
    assert reads == [] and len(scans) == 1  # only the experiment summary's rebuild scans
    assert study.law is not None  # fitted to the booked rows: they carry the summary fields


def test_a_plan_may_ask_the_simulated_backend_for_summaries_only(plan, tmp_path):
    text = plan.text.replace("curves: true", "curves: false")
    assert text != plan.text
    path = tmp_path / "no-curves.yaml"
    path.write_text(text)
    quiet = load_plan(path)
    assert quiet.backend.curves is False and plan.backend.curves is True
    result = submit(quiet, poll_s=0)
    assert result.summary.num_rows == 12
    assert Store(quiet.experiment_uri).metrics().num_rows == 0


def test_a_summaries_only_backend_commits_the_ends_of_a_poll_as_one_summary_part(
    tmp_path, plan, monkeypatch
):
    store = Store(str(tmp_path / "exp"))
    specs = expand_plan(plan).specs
    # Every run whose end the loop records has its summary stored already, for any reader.
    told = []
    real_flush = store.flush_events

    def flush(**kw):
        reader = Store(store.uri)
        ended = [r for r, states in reader.event_states().items() if states[-1] == "finished"]
        assert all(reader.run_summary(r) is not None for r in ended), ended
        told.extend(ended)
        real_flush(**kw)

    monkeypatch.setattr(store, "flush_events", flush)
    ex = _run(store, specs, SimulatedBackend(store, write_curves=False))  # all end at one poll
    assert ex.count(RunState.FINISHED) == 12 and len(set(told)) == 12
    root = Path(store.root)
    assert list(root.glob("runs/*/summary.parquet")) == []  # no file per run
    assert len(list((root / "summaries").glob("*.parquet"))) == 1
    assert store.run_summaries().column("run_id").to_pylist() == sorted(s.run_id for s in specs)
    # A resume finds every run ended: none is run again, none is told ended twice.
    again = prepare(specs, Store(str(tmp_path / "exp")))
    assert all(v.reused and v.state is RunState.FINISHED for v in again.runs)
    assert all(_states(store, s.run_id) == ["running", "finished"] for s in specs)


def test_runs_that_end_at_different_polls_are_one_summary_part_per_poll(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    specs = expand_plan(plan).specs
    now = [0.0]
    backend = SimulatedBackend(
        store, write_curves=False, slots=8, flops_per_s=1e20, clock=lambda: now[0]
    )
    polls = []  # how many runs each poll ended
    real_poll = backend.poll

    def poll(run_ids):
        out = real_poll(run_ids)
        polls.append(sum(s.state.is_terminal for s in out.values()))
        return out

    backend.poll = poll
    ex = execute(
        prepare(specs, store),
        store,
        lambda: backend,
        poll_s=0.5,
        sleep=lambda s: now.__setitem__(0, now[0] + s),
        clock=lambda: now[0],
    )
    assert ex.count(RunState.FINISHED) == 12
    ending = [n for n in polls if n]
    assert len(ending) > 1 and max(ending) > 1  # several polls, some ending several runs
    parts = list((Path(store.root) / "summaries").glob("*.parquet"))
    assert len(parts) == len(ending) and sum(ending) == 12
    assert store.run_summaries().column("run_id").to_pylist() == sorted(s.run_id for s in specs)


def _stop_at(share: float, stopped: dict):
    """A `stop_early` hook that stops each running run once it reports `share` of its
    steps, noting the step it had reported."""

    def hook(execution):
        out = {}
        for v in execution.runs:
            step = v.latest.get("step") if v.state is RunState.RUNNING else None
            if step is not None and step >= share * v.spec.steps:
                stopped[v.spec.run_id] = step
                out[v.spec.run_id] = "its outcome is known"
        return out

    return hook


def _slow(store, specs, polls=20):
    """A SimulatedBackend on which the smallest of `specs` lasts `polls` looks (its clock
    ticks once per look), so that running runs report progress."""
    ticks = iter(range(10**6))
    smallest = min(s.flops_per_token * s.tokens for s in specs)
    return SimulatedBackend(store, flops_per_s=smallest / polls, clock=lambda: next(ticks))


def test_a_run_stopped_early_books_exactly_the_share_of_steps_it_reported(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    specs = expand_plan(plan).specs[:3]
    ledger, stopped = Ledger(1e30), {}
    ex = _run(store, specs, _slow(store, specs), ledger=ledger, stop_early=_stop_at(0.3, stopped))
    assert set(stopped) == {s.run_id for s in specs}
    expected = sum(run_flops(s) * (stopped[s.run_id] / s.steps) for s in specs)
    assert ledger.spent_flops == pytest.approx(expected, rel=1e-12)
    assert ledger.committed_flops == 0
    for view in ex.runs:
        run_id, step = view.spec.run_id, stopped[view.spec.run_id]
        assert 0.3 * view.spec.steps <= step < view.spec.steps
        assert view.state is RunState.STOPPED
        assert view.detail == "stopped early: its outcome is known"
        assert _states(store, run_id) == ["running", "stopped"]  # not retried
        summary = store.run_summary(run_id)
        assert (summary["status"], summary["steps"]) == ("stopped", step)
        assert summary["tokens"] == step * view.spec.tokens_per_step
        # Its curve up to the stop is in the store, and nothing after it.
        steps = store.metrics(run_id, columns=["step"])["step"].to_pylist()
        assert steps and max(steps) <= step


def test_a_stopped_run_is_not_run_again_nor_counted_as_a_failure(tmp_path, plan):
    store = Store(str(tmp_path / "exp"))
    specs = expand_plan(plan).specs[:2]
    _run(store, specs, _slow(store, specs), stop_early=_stop_at(0.5, {}))
    again = execute(
        prepare(specs, store),
        store,
        lambda: pytest.fail("a backend made for stopped runs"),
        poll_s=0,
        sleep=lambda s: None,
    )
    assert [v.state for v in again.runs] == [RunState.STOPPED] * 2
    assert all(v.reused and v.failures == 0 for v in again.runs)
    assert again.count(RunState.FAILED, RunState.PREEMPTED) == 0


def test_a_cooldown_branch_s_spend_counts_its_own_steps_only():
    from workers.spec import LrSchedule, RunSpec, Shape

    parent = RunSpec(
        shape=Shape(n_layer=2, d_model=64, n_head=2),
        tokens=1024 * 1000,
        global_batch=16,
        micro_batch=16,
        schedule=LrSchedule(kind="wsd", peak_lr=1e-2, cooldown_frac=0.2),
        flops_per_token=6e5,
        checkpoint_every_steps=100,
        keep_checkpoints=True,
    )
    branch = parent.wsd_branch(at_step=400, decay_steps=100)
    assert spent_flops(branch, 450) == run_flops(branch) * (50 / 100)
    assert spent_flops(parent, 450) == run_flops(parent) * (450 / 1000)
