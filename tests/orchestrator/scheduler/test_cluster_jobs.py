"""The cluster path on this machine: `ray start` a head and a second node, submit the driver
through the Jobs API with `orch submit --address http://...`, follow it, cancel another."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.planning import load_plan
from orchestrator.planning.expand import expand_plan
from storage.store import Store
from tests.ports import free_ports
from tests.waiting import file_tail, run_child, wait_until

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.cluster]


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
    logs = tmp_path_factory.mktemp("ray-nodes")
    # Every port a node would otherwise take at a fixed default or at random from the
    # kernel's ephemeral range is given, from outside that range. An embedded Ray (a test
    # process's, `make run`'s) holds the default dashboard-agent port, and a head whose
    # agent cannot listen refuses every job ("No available agent"); and a job once had its
    # runtime env set up by another Ray's agent on this machine (a port both had taken).
    gcs, dash, client = free_ports(3)

    def agent_ports() -> list[str]:
        names = (
            "dashboard-agent-listen",
            "dashboard-agent-grpc",
            "runtime-env-agent",
            "metrics-export",
        )
        return [
            arg
            for name, port in zip(names, free_ports(len(names)), strict=True)
            for arg in (f"--{name}-port", str(port))
        ]

    common = ["--num-cpus", "2", "--block", "--disable-usage-stats"]

    def start(name: str, *args: str) -> subprocess.Popen:
        with (logs / f"{name}.log").open("w") as out:  # the child keeps its own descriptor
            return subprocess.Popen(
                [str(BIN / "ray"), "start", "--node-ip-address", "127.0.0.1", *args, *common],
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def nodes_seen() -> str:
        return "\n".join(
            f"--- ray start {name} (exit {proc.poll()}) ---\n{file_tail(logs / f'{name}.log')}"
            for name, proc in started.items()
        )

    started: dict[str, subprocess.Popen] = {}
    try:
        started["head"] = start(
            "head",
            "--head",
            "--port",
            str(gcs),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dash),
            "--include-dashboard",
            "true",
            "--ray-client-server-port",
            str(client),
            *agent_ports(),
        )
        _wait_nodes(f"127.0.0.1:{gcs}", 1, nodes_seen)
        started["worker"] = start(
            "worker",
            "--address",
            f"127.0.0.1:{gcs}",
            *agent_ports(),
        )
        _wait_nodes(f"127.0.0.1:{gcs}", 2, nodes_seen)
        _wait_jobs_api(f"http://127.0.0.1:{dash}", nodes_seen)
        yield f"http://127.0.0.1:{dash}"
    finally:
        for proc in reversed(started.values()):
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


# Bounds for "something is broken", not speed expectations: a loaded 2-core machine starts
# a Ray node in tens of seconds.
_START_S = 300


def _wait_nodes(address: str, n: int, nodes_seen) -> None:
    status: list[subprocess.CompletedProcess] = []

    def up() -> bool:
        out = run_child(
            [str(BIN / "ray"), "status", "--address", address],
            timeout_s=120,
            what="`ray status`",
            env=_env(),
        )
        status[:] = [out]
        return out.returncode == 0 and out.stdout.count("node_") >= n

    def seen() -> str:
        last = status[0] if status else None
        said = f"{last.stdout[-1500:]}{last.stderr[-1500:]}" if last else "nothing"
        return f"`ray status` said:\n{said}\n{nodes_seen()}"

    wait_until(up, timeout_s=_START_S, what=f"{n} Ray nodes", seen=seen, interval_s=1)


def _wait_jobs_api(address: str, nodes_seen) -> None:
    from ray.job_submission import JobSubmissionClient

    errors: list[str] = []

    def answers() -> bool:
        try:
            JobSubmissionClient(address).list_jobs()
            return True
        except Exception as err:  # noqa: BLE001 - the dashboard is still starting: wait
            errors[:] = [repr(err)]
            return False

    wait_until(
        answers,
        timeout_s=_START_S,
        what=f"the Jobs API at {address}",
        seen=lambda: f"last error {errors}\n{nodes_seen()}",
        interval_s=1,
    )


def _plan(tmp_path: Path, name: str, duration_flops_per_s: str) -> Path:
    text = (ROOT / "plans" / "local.yaml").read_text()
    text = text.replace("name: local", f"name: {name}")
    text = text.replace("store: ./experiments", f"store: {tmp_path / 'experiments'}")
    text += f"\nbackend:\n  kind: ray-simulated\n  flops_per_s: {duration_flops_per_s}\n"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _orch(*args: str) -> subprocess.CompletedProcess:
    return run_child(
        [sys.executable, "-m", "orchestrator.cli", *args],
        timeout_s=600,
        what=f"`orch {' '.join(args)}`",
        env=_env(),
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
    wait_until(
        lambda: _job_status(cluster, experiment) in ("SUCCEEDED", "FAILED", "STOPPED"),
        timeout_s=900,
        what="the submitted job to end",
        seen=lambda: _job_tail(cluster, experiment),
        interval_s=1,
    )
    assert _job_status(cluster, experiment) == "SUCCEEDED", _job_tail(cluster, experiment)
    store = Store(experiment)
    summary = store.summary()
    planned = len(expand_plan(load_plan(plan_path)).specs)
    assert summary.num_rows == planned
    assert set(summary.column("status").to_pylist()) == {"finished"}
    nodes = set()
    for run_id in store.run_ids():
        finished = [e for e in store.events(run_id).to_pylist() if e["state"] == "finished"]
        nodes.add(finished[-1]["detail"])
    assert len(nodes) == 2, nodes  # runs were placed on both nodes
    status = _orch("status", experiment, "--address", cluster)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    assert f"{planned} finished" in status.stdout


def test_cancel_from_outside_stops_the_job_and_marks_runs_cancelled(cluster, tmp_path):
    plan_path = _plan(tmp_path, "tocancel", "1e10")  # each run sleeps ~54 s: still running
    experiment = load_plan(plan_path).experiment_uri
    out = _orch("submit", str(plan_path), "--address", cluster)
    assert out.returncode == 0, out.stderr
    store = Store(experiment)
    wait_until(
        lambda: any((store.last_event(r) or {}).get("state") == "running" for r in store.run_ids()),
        timeout_s=600,
        what="a run of the submitted job to start",
        seen=lambda: _job_tail(cluster, experiment),
        interval_s=0.5,
    )
    out = _orch("cancel", experiment, "--address", cluster)
    assert out.returncode == 0, out.stderr
    wait_until(
        lambda: _job_status(cluster, experiment) not in ("PENDING", "RUNNING"),
        timeout_s=600,
        what="the cancelled job to stop",
        seen=lambda: _job_tail(cluster, experiment),
        interval_s=1,
    )
    # The driver wound down by itself.
    assert _job_status(cluster, experiment) == "SUCCEEDED", _job_tail(cluster, experiment)
    last = {store.last_event(r)["state"] for r in store.run_ids()}
    assert last == {"cancelled"}, last
    shutil.rmtree(tmp_path / "experiments", ignore_errors=True)
