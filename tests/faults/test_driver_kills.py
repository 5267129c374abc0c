"""SIGKILL of the driver (`orch submit` / `orch resume`) at seeded random moments, then
`orch resume`: no finished run is lost, no run is started again beyond what the kill
itself interrupted, and the final summary holds the same runs as an uninterrupted study.

tests/orchestrator/scheduler/test_driver_crash.py kills once, after 5 finished runs; here the
moments cover the whole life of the driver: start-up, planning, running, compaction,
the fit. The figures are printed (run pytest with -s to see them) for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import pytest
from _faults import child_env, orch, simulated_plan

from orchestrator.adaptive.submit import submit
from orchestrator.planning import load_plan
from storage.store import Store

pytestmark = pytest.mark.slow
SEED = 12
# 20 kills take ~3 min on 2 busy cores: `make test-faults-full` runs them
# (FAULTS_FULL=1); `make test` runs the first 8 of the same seeded moments.
KILLS = 20 if os.environ.get("FAULTS_FULL") == "1" else 8


@dataclass
class KillRecord:
    moment_s: float  # after the driver process started
    after_finished: int | None  # the kill waited for this many finished runs (else a time)
    killed: bool  # False: the driver had already ended
    plan_stored: bool  # False: killed before it stored anything (recovered by a new submit)
    finished_before: int
    running_at_kill: int  # runs whose last event was "running": the kill interrupted them
    finished_lost: int  # finished before the kill, but missing or run again after resume
    started_beyond_retries: int  # runs started more often than 1 + retries + interruptions
    same_run_set: bool  # the final summary holds the uninterrupted study's runs
    events_disagree: int  # runs whose last event is not the end their summary records


def _states(store: Store, run_id: str) -> list[str]:
    return store.events(run_id).column("state").to_pylist()


def _finished(store: Store) -> int:
    return sum(store.run_summary(r) is not None for r in store.run_ids())


@dataclass(frozen=True)
class Moment:
    """When to kill a driver: `seconds` after it starts, or once `finished` runs of its
    store have ended."""

    seconds: float | None = None
    finished: int | None = None


def _finished(store: Store) -> int:
    return sum(store.run_summary(r) is not None for r in store.run_ids())


def _kill_at(argv: list[str], store: Store, moment: Moment) -> tuple[bool, float]:
    """Start `argv`; SIGKILL it, and every process it started, at `moment`. Whether it was
    still running then, and the seconds since it started."""
    started = time.monotonic()
    driver = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env()
    )
    if moment.finished is None:
        try:
            driver.wait(timeout=moment.seconds)
        except subprocess.TimeoutExpired:
            pass
    else:
        while driver.poll() is None and _finished(store) < moment.finished:
            time.sleep(0.05)
    elapsed = time.monotonic() - started
    if driver.poll() is not None:
        return False, elapsed
    family = psutil.Process(driver.pid).children(recursive=True)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    for child in family:  # an embedded Ray's processes, when there are any
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    return True, elapsed


def kill_then_resume(
    plan_path: Path, first: list[str], moment: Moment, expected: list[str], *, timeout_s=600
) -> KillRecord:
    """Run `first` (a submit or resume of `plan_path`'s experiment), SIGKILL it at
    `moment`, then `orch resume` (or `orch submit` again if the driver died before it
    stored the plan: there is no experiment to resume yet), and measure."""
    experiment = load_plan(plan_path).experiment_uri
    store = Store(experiment)
    killed, moment_s = _kill_at(first, store, moment)
    stored = (Path(store.root) / "plan.yaml").exists()
    run_ids = store.run_ids()
    before = {r: _states(store, r) for r in run_ids}
    finished_before = {r for r in run_ids if store.run_summary(r) is not None}
    interrupted = {r for r, s in before.items() if s and s[-1] == "running"}
    done = subprocess.run(
        orch("resume", experiment) if stored else orch("submit", str(plan_path)),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    after = {r: _states(store, r) for r in store.run_ids()}
    lost = {
        r
        for r in finished_before
        if store.run_summary(r) is None or after[r].count("running") != before[r].count("running")
    }
    beyond = {
        r
        for r, s in after.items()
        if s.count("running") > 1 + s.count("preempted") + s.count("failed") + (r in interrupted)
    }
    return KillRecord(
        moment_s=round(moment_s, 2),
        after_finished=moment.finished,
        killed=killed,
        plan_stored=stored,
        finished_before=len(finished_before),
        running_at_kill=len(interrupted),
        finished_lost=len(lost),
        started_beyond_retries=len(beyond),
        same_run_set=sorted(store.summary().column("run_id").to_pylist()) == expected,
        events_disagree=sum(
            s[-1:] != [(store.run_summary(r) or {}).get("status")] for r, s in after.items()
        ),
    )


def _driver_timeline(plan_path: Path) -> tuple[float, float]:
    """Seconds from start until an uninterrupted `orch submit` of the plan stores its plan,
    and until it ends (successfully)."""
    plan_file = Path(load_plan(plan_path).experiment_uri) / "plan.yaml"
    started = time.monotonic()
    driver = subprocess.Popen(
        orch("submit", str(plan_path)), stdout=subprocess.DEVNULL, env=child_env()
    )
    while not plan_file.exists() and driver.poll() is None:
        time.sleep(0.01)
    stored_s = time.monotonic() - started
    assert driver.wait() == 0
    return stored_s, time.monotonic() - started


def test_driver_sigkilled_at_random_moments_loses_and_repeats_nothing(tmp_path, capsys):
    reference = submit(load_plan(simulated_plan(tmp_path, tmp_path / "ref")), poll_s=0.05)
    expected = sorted(reference.summary.column("run_id").to_pylist())
    # When an uninterrupted `orch submit` stores its plan, and when it ends: most of its
    # life is start-up (imports). Of every 4 kills, one lands in start-up, one between the
    # stored plan and the end (the study, compaction and the fit), and two once a random
    # number of runs (up to half) have ended. Those two are mid-study on any machine: the
    # runs' share of the driver's life varies with its load (and with how long the fit
    # takes), so kills timed by the clock alone were seen to miss the study on a busy one.
    stored_s, lifetime_s = _driver_timeline(simulated_plan(tmp_path, tmp_path / "timed"))

    rng = random.Random(SEED)
    records = []
    for i in range(KILLS):
        plan_path = simulated_plan(tmp_path, tmp_path / f"kill{i}")
        if i % 4 == 0:
            moment = Moment(seconds=rng.uniform(0.0, stored_s))
        elif i % 4 == 3:
            moment = Moment(seconds=rng.uniform(stored_s, lifetime_s))
        else:
            moment = Moment(finished=rng.randint(1, len(expected) // 2))
        records.append(
            kill_then_resume(plan_path, orch("submit", str(plan_path)), moment, expected)
        )
    with capsys.disabled():
        print(f"\ndriver stores its plan at {stored_s:.1f} s, ends at {lifetime_s:.1f} s; kills:")
        for record in records:
            print(json.dumps(asdict(record)))
    assert sum(r.killed for r in records) >= KILLS // 2, "most kills came after the end"
    # Some kill must land mid-study (runs finished, others not) for the figures to mean
    # anything; which ones do depends on the machine's speed.
    assert sum(r.killed and 0 < r.finished_before < len(expected) for r in records) >= 2
    assert [r.finished_lost for r in records] == [0] * KILLS
    assert [r.started_beyond_retries for r in records] == [0] * KILLS
    assert all(r.same_run_set for r in records)
    assert [r.events_disagree for r in records] == [0] * KILLS


def test_a_summaries_only_study_killed_at_random_moments_loses_and_repeats_nothing(
    tmp_path, capsys
):
    """As above, for a study without curves, whose simulated runs are group-committed: one
    summary part per poll holds the rows of every run the poll ended. A kill before the
    part is in place loses runs the driver was never told had ended (they run again); a
    kill after it loses none, and a resume runs none of them again."""

    def plan(store: Path) -> Path:
        path = simulated_plan(tmp_path, store)
        path.write_text(path.read_text().replace("curves: true", "curves: false"))
        return path

    reference = submit(load_plan(plan(tmp_path / "ref")), poll_s=0.05)
    expected = sorted(reference.summary.column("run_id").to_pylist())
    timed = plan(tmp_path / "timed")
    stored_s, lifetime_s = _driver_timeline(timed)
    assert list(Path(load_plan(timed).experiment_uri).glob("runs/*/summary.parquet")) == []

    rng = random.Random(SEED + 1)
    records = []
    for i in range(KILLS // 2):  # after the stored plan: half by the clock, half mid-study
        plan_path = plan(tmp_path / f"kill{i}")
        if i % 2:
            moment = Moment(seconds=rng.uniform(stored_s, lifetime_s))
        else:
            moment = Moment(finished=rng.randint(1, len(expected) // 2))
        records.append(
            kill_then_resume(plan_path, orch("submit", str(plan_path)), moment, expected)
        )
    with capsys.disabled():
        print(f"\nsummaries only: plan stored at {stored_s:.1f} s, end at {lifetime_s:.1f} s:")
        for record in records:
            print(json.dumps(asdict(record)))
    assert sum(r.killed and 0 < r.finished_before < len(expected) for r in records) >= 1
    assert [r.finished_lost for r in records] == [0] * len(records)
    assert [r.started_beyond_retries for r in records] == [0] * len(records)
    assert all(r.same_run_set for r in records)
    assert [r.events_disagree for r in records] == [0] * len(records)


def _run_states(store: Store) -> dict[str, str]:
    """Each run's last event, for a failure message: what the wait saw."""
    return {r: (store.last_event(r) or {}).get("state") for r in store.run_ids()}


def _kill_when(argv: list[str], store: Store, finished: int, timeout_s: float = 600) -> None:
    """Start `argv` and SIGKILL it once `finished` runs of `store` have a summary."""
    driver = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env()
    )
    deadline = time.monotonic() + timeout_s
    done = 0
    while driver.poll() is None:
        done = _finished(store)
        if done >= finished:
            break
        if time.monotonic() > deadline:
            driver.kill()
            pytest.fail(
                f"waited {timeout_s:.0f} s for {finished} finished runs; saw {done}, "
                f"runs {_run_states(store)}"
            )
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # A driver that ended by itself (an error, or the study done) is not the kill asked for.
    assert done >= finished, (
        f"the driver ended (exit {driver.returncode}) before {finished} runs finished "
        f"(saw {done}); stderr:\n{driver.stderr.read().decode()[-3000:]}"
    )


def test_a_driver_killed_again_during_each_resume_still_converges(tmp_path):
    # Kill the submit after 3 finished runs and two resumes after 6 and 8: the third
    # resume finishes the study. On 4 slots (the largest run needs them all) runs end a
    # few at a time, so some are still unfinished when the last kill lands; on 8 slots the
    # last ones were seen to end together, before it.
    plan_path = simulated_plan(tmp_path, tmp_path / "chain", slots=4)
    experiment = load_plan(plan_path).experiment_uri
    reference = submit(load_plan(simulated_plan(tmp_path, tmp_path / "ref")), poll_s=0.05)
    expected = sorted(reference.summary.column("run_id").to_pylist())
    store = Store(experiment)
    _kill_when(orch("submit", str(plan_path)), store, 3)
    for finished in (6, 8):
        _kill_when(orch("resume", experiment), store, finished)
    assert sum(store.run_summary(r) is not None for r in store.run_ids()) < len(expected)
    record = kill_then_resume(plan_path, orch("resume", experiment), Moment(600.0), expected)
    assert not record.killed and record.finished_lost == 0 and record.same_run_set
    assert record.events_disagree == 0
    for run_id in expected:
        states = _states(store, run_id)
        assert states.count("finished") == 1, (run_id, states)
        # At most one extra start per kill (three kills), and only after an interrupted one.
        assert states.count("running") <= 1 + 3, (run_id, states)
        assert all(
            b != "running" or a in ("running", "preempted", "failed")
            for a, b in zip(states, states[1:], strict=False)
        ), (run_id, states)


_REAL_PLAN = """
name: tiny
store: {store}
flops_method: 6nd
data: {{source: bytes, root: stdlib}}
model: {{vocab: 256, seq_len: 64, pos: rope, tied: true}}
grid:
  compute_flops: [2e10, 5e10]
  sizes:
    - {{n_layer: 2, d_model: 32, n_head: 2}}
    - {{n_layer: 2, d_model: 48, n_head: 3}}
train:
  global_batch: 16
  schedule: {{kind: cosine, peak_lr: 3e-3, warmup_frac: 0.05, min_lr_frac: 0.1}}
  precision: fp32
  eval_batches: 2
  log_every_steps: 10
  checkpoint_every_steps: 20
hardware: {{accelerator: cpu, mfu: 0.2}}
resources: {{cpus_per_rank: 1}}
"""


def _kill_when_seen(argv: list[str], seen, describe, timeout_s: float = 900) -> bool:
    """Start `argv`; SIGKILL it, and every process it started (its embedded Ray), as soon
    as `seen()` is true. Whether it was still running then. `describe()` says what the
    store holds, for the message when `seen()` is not true within `timeout_s`."""
    driver = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env()
    )
    me = psutil.Process(driver.pid)
    family: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + timeout_s
    while driver.poll() is None and not seen():
        try:  # Ray's processes, gathered while the driver lives (they outlive it otherwise)
            family.update({p.pid: p for p in me.children(recursive=True)})
        except psutil.NoSuchProcess:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    alive = driver.poll() is None
    expired = alive and not seen()
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    for child in family.values():
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    if expired:
        pytest.fail(f"waited {timeout_s:.0f} s for {seen.__name__}; saw {describe()}")
    return alive


def test_real_cpu_study_killed_at_three_moments_resumes_to_the_planned_runs(tmp_path, capsys):
    from orchestrator.planning.expand import expand_plan

    plan_path = tmp_path / "tiny.yaml"
    plan_path.write_text(_REAL_PLAN.format(store=tmp_path / "store"))
    plan = load_plan(plan_path)
    expected = sorted(s.run_id for s in expand_plan(plan).specs)
    store = Store(plan.experiment_uri)
    root = Path(store.root)

    def started():  # moment 1: the first run is training (Ray up, actors started)
        return (
            any((root / "metrics").glob("run_id=*/part-*.parquet"))
            if (root / "metrics").exists()
            else False
        )

    def checkpointed() -> dict[str, int]:
        """Unfinished runs with a whole checkpoint (`latest` written last) -> its step."""
        out = {}
        for r in store.run_ids():
            latest = root / "checkpoints" / r / "latest"
            if store.run_summary(r) is None and latest.is_file():
                out[r] = int(latest.read_text().strip().removeprefix("step"))
        return out

    def one_done_one_checkpointed():  # moment 2: a run finished, another has a checkpoint
        done = [r for r in store.run_ids() if store.run_summary(r) is not None]
        return len(done) >= 1 and bool(checkpointed())

    def all_summaries():  # moment 3: every run ended; compaction, summary and fit remain
        return sum(store.run_summary(r) is not None for r in expected) == len(expected)

    def describe() -> str:
        return f"runs {_run_states(store)}, checkpointed {checkpointed()}"

    figures = []
    interrupted: dict[str, tuple[int, int]] = {}  # run -> (attempt killed, its checkpoint step)
    argv = orch("submit", str(plan_path))
    for moment in (started, one_done_one_checkpointed, all_summaries):
        before = {r: _states(store, r) for r in store.run_ids()}
        finished_before = {r for r in before if store.run_summary(r) is not None}
        killed = _kill_when_seen(argv, moment, describe)
        after = {r: _states(store, r) for r in store.run_ids()}
        if moment is one_done_one_checkpointed:
            interrupted = {
                r: (after[r].count("running") - 1, step) for r, step in checkpointed().items()
            }
        figures.append(
            {
                "moment": moment.__name__,
                "killed": killed,
                "finished": sum(store.run_summary(r) is not None for r in after),
                "finished_lost": sum(
                    store.run_summary(r) is None or after[r].count("running") != s.count("running")
                    for r, s in before.items()
                    if r in finished_before
                ),
            }
        )
        argv = orch("resume", store.uri)
    done = subprocess.run(argv, capture_output=True, text=True, env=child_env(), timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with capsys.disabled():
        print("\nreal CPU study kills:", json.dumps(figures))
    assert [f["killed"] for f in figures] == [True, True, True], figures
    assert [f["finished_lost"] for f in figures] == [0, 0, 0], figures
    assert sorted(store.summary().column("run_id").to_pylist()) == expected
    for run_id in expected:
        states = _states(store, run_id)
        assert states.count("finished") == 1, (run_id, states)
        assert states.count("running") <= 1 + 3, (run_id, states)  # one per kill at most
    # Every run's metrics hold each step once; a run killed (at moment 2) with a whole
    # checkpoint resumed from it: its next attempt's first step comes after that checkpoint.
    assert interrupted, "moment 2 is a kill with a checkpointed run"
    for run_id in expected:
        rows = store.metrics([run_id], columns=["step", "attempt"]).to_pylist()
        steps = [r["step"] for r in rows]
        assert steps == sorted(set(steps)), run_id
        if run_id in interrupted:
            attempt, step = interrupted[run_id]
            resumed = [r["step"] for r in rows if r["attempt"] == attempt + 1]
            assert resumed and min(resumed) > step, (run_id, attempt, step, rows)
