"""The cluster path on this machine: `ray start` a head and a second node, submit the driver
through the Jobs API with `orch submit --address http://...`, follow it, cancel another."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.planning import load_plan
from storage.store import Store

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    # Not RAY_ADDRESS: a Ray this test process may have started must not leak into the
    # cluster's processes or the submitting CLI.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {
        **env,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes started by `ray start --block` (killing the command stops its node)."""
    gcs, dash = _port(), _port()
    common = ["--num-cpus", "2", "--block", "--disable-usage-stats"]
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(gcs),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dash),
            "--include-dashboard",
            "true",
            *common,
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    worker = None
    try:
        _wait_nodes(f"127.0.0.1:{gcs}", 1)
        worker = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--address",
                f"127.0.0.1:{gcs}",
                "--node-ip-address",
                "127.0.0.1",
                *common,
            ],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_nodes(f"127.0.0.1:{gcs}", 2)
        _wait_jobs_api(f"http://127.0.0.1:{dash}")
        yield f"http://127.0.0.1:{dash}"
    finally:
        for proc in (worker, head):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)


def _wait_nodes(address: str, n: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(
            [str(BIN / "ray"), "status", "--address", address],
            capture_output=True,
            text=True,
            env=_env(),
        )
        if out.returncode == 0 and out.stdout.count("node_") >= n:
            return
        time.sleep(1)
    raise AssertionError(f"{n} Ray nodes did not come up: {out.stdout} {out.stderr}")


def _wait_jobs_api(address: str, timeout_s: float = 60) -> None:
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            JobSubmissionClient(address).list_jobs()
            return
        except Exception:  # noqa: BLE001 - the dashboard is still starting; any error means wait
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _plan(tmp_path: Path, name: str, duration_flops_per_s: str) -> Path:
    text = (ROOT / "plans" / "local.yaml").read_text()
    text = text.replace("name: local", f"name: {name}")
    text = text.replace("store: ./experiments", f"store: {tmp_path / 'experiments'}")
    text += f"\nbackend:\n  kind: ray-simulated\n  flops_per_s: {duration_flops_per_s}\n"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _orch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )


def _job_status(address: str, experiment: str) -> str:
    from orchestrator.scheduler.jobs import experiment_jobs

    jobs = experiment_jobs(address, experiment)
    return jobs[-1].status if jobs else "NONE"


def _job_tail(address: str, experiment: str, lines: int = 40) -> str:
    """The experiment's newest job: its status, the end of its driver log, and the last
    event of each run, for a failure message (a job that hangs says nothing otherwise)."""
    from orchestrator.scheduler.jobs import experiment_jobs, job_logs

    jobs = experiment_jobs(address, experiment)
    if not jobs:
        return "no job found"
    log_tail = "\n".join(job_logs(address, jobs[-1].job_id).splitlines()[-lines:])
    store = Store(experiment)
    states = {r: (store.last_event(r) or {}).get("state") for r in store.run_ids()}
    return f"job {jobs[-1].status}; runs {states}\ndriver log tail:\n{log_tail}"


def test_submitted_driver_runs_the_study_on_both_nodes(cluster, tmp_path):
    plan_path = _plan(tmp_path, "clustered", "5.4e11")  # each run sleeps ~1 s
    experiment = load_plan(plan_path).experiment_uri
    out = _orch("submit", str(plan_path), "--address", cluster)
    assert out.returncode == 0, out.stderr
    assert "submitted job" in out.stdout and "ray job logs" in out.stdout
    deadline = time.monotonic() + 240
    while _job_status(cluster, experiment) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        if time.monotonic() > deadline:
            raise AssertionError(f"the job did not end:\n{_job_tail(cluster, experiment)}")
        time.sleep(1)
    assert _job_status(cluster, experiment) == "SUCCEEDED"
    store = Store(experiment)
    summary = store.summary()
    assert summary.num_rows == 9 and set(summary.column("status").to_pylist()) == {"finished"}
    nodes = set()
    for run_id in store.run_ids():
        finished = [e for e in store.events(run_id).to_pylist() if e["state"] == "finished"]
        nodes.add(finished[-1]["detail"])
    assert len(nodes) == 2, nodes  # runs were placed on both nodes
    status = _orch("status", experiment, "--address", cluster)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout and "9 finished" in status.stdout


def test_cancel_from_outside_stops_the_job_and_marks_runs_cancelled(cluster, tmp_path):
    plan_path = _plan(tmp_path, "tocancel", "1e10")  # each run sleeps ~54 s: still running
    experiment = load_plan(plan_path).experiment_uri
    assert _orch("submit", str(plan_path), "--address", cluster).returncode == 0
    store = Store(experiment)
    deadline = time.monotonic() + 120
    while not any(
        store.last_event(r) and store.last_event(r)["state"] == "running" for r in store.run_ids()
    ):
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.5)
    out = _orch("cancel", experiment, "--address", cluster)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 120
    while _job_status(cluster, experiment) in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, "the job was not stopped"
        time.sleep(1)
    assert _job_status(cluster, experiment) == "SUCCEEDED"  # the driver wound down by itself
    last = {store.last_event(r)["state"] for r in store.run_ids()}
    assert last == {"cancelled"}, last
    shutil.rmtree(tmp_path / "experiments", ignore_errors=True)
