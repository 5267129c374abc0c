"""A SIGKILLed `orch submit` loses no finished run and runs nothing twice after `orch resume`."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.adaptive.submit import submit
from orchestrator.planning import load_plan
from storage.store import Store
from tests.waiting import file_tail, run_child, wait_for_exit, wait_until

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def _plan_file(tmp_path: Path, store: Path) -> Path:
    text = (ROOT / "plans" / "simulated.yaml").read_text()
    text = text.replace("store: ./experiments", f"store: {store}")
    # 35 runs on 16 slots, the largest "taking" 3 s: a study of several seconds to kill.
    text = text.replace("slots: 64", "slots: 16").replace("flops_per_s: 1e20", "flops_per_s: 1e20")
    text = text.replace("max_gpus_per_run: 64", "max_gpus_per_run: 4")
    path = tmp_path / f"plan-{store.name}.yaml"
    path.write_text(text)
    return path


def _finished(store: Store) -> set[str]:
    return {r for r in store.run_ids() if store.run_summary(r) is not None}


def _orch(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", *args]


def test_sigkilled_driver_resumes_without_losing_or_repeating_runs(tmp_path):
    reference = submit(load_plan(_plan_file(tmp_path, tmp_path / "ref")), poll_s=0.05)
    expected = sorted(reference.summary.column("run_id").to_pylist())

    plan_path = _plan_file(tmp_path, tmp_path / "crash")
    experiment = load_plan(plan_path).experiment_uri
    store = Store(experiment)
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(
            _orch("submit", str(plan_path)),
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:  # kill it once some runs have finished, not all
        wait_until(
            lambda: len(_finished(store)) >= 5,
            timeout_s=300,  # seconds when idle; a bound for a broken driver, not a speed
            what="5 runs to finish before the kill",
            seen=lambda: f"{len(_finished(store))} runs finished; driver log:\n{file_tail(log)}",
            proc=driver,
            interval_s=0.05,
        )
    finally:
        driver.send_signal(signal.SIGKILL)
        wait_for_exit(driver, timeout_s=60, what="the SIGKILLed driver")
    before = _finished(store)
    assert 5 <= len(before) < len(expected), (
        f"the kill came too late to test anything: {len(before)} of {len(expected)} finished"
    )

    done = run_child(
        _orch("resume", experiment),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout_s=300,
        what="orch resume",
    )
    assert done.returncode == 0, done.stdout + done.stderr

    summary = store.summary()
    assert sorted(summary.column("run_id").to_pylist()) == expected
    for run_id in expected:
        states = store.events(run_id).column("state").to_pylist()
        assert states.count("finished") == 1, (run_id, states)
        if run_id in before:  # finished before the kill: never started again
            assert states.count("running") == 1, (run_id, states)
