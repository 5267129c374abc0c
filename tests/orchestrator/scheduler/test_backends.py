"""One conformance suite for every Backend, and the Ray gang pool (real local Ray)."""

from pathlib import Path

import pytest

from orchestrator.planning import load_plan
from orchestrator.planning.expand import expand_plan
from orchestrator.scheduler.base import RunState
from orchestrator.scheduler.function import FunctionBackend
from orchestrator.scheduler.simulated import SimulatedBackend
from storage.store import Store
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def specs():
    return expand_plan(load_plan(ROOT / "plans" / "local.yaml")).specs


def _ray_backend(store):
    from orchestrator.scheduler.ray_backend import RayBackend

    return RayBackend(store.uri, kind="simulate", options={"duration_s": 0.05})


BACKENDS = {
    "simulated": lambda store: SimulatedBackend(store, slots=2),
    "ray": _ray_backend,
    "function": lambda store: FunctionBackend(store, lambda spec: 2.5),  # a user's spec -> loss
}


@pytest.fixture(params=sorted(BACKENDS))
def backend_and_store(request, tmp_path):
    if request.param == "ray":
        request.getfixturevalue("ray_local")
    store = Store(str(tmp_path / "exp"))
    backend = BACKENDS[request.param](store)
    yield backend, store
    if hasattr(backend, "shutdown"):
        backend.shutdown()


def _wait(backend, run_ids, timeout_s=180):
    """Poll until every run has ended; their end statuses. The bound is generous: starting
    a Ray gang (a worker process) takes seconds, more beside busy processes."""
    latest, ended = {}, {}

    def all_ended() -> bool:
        for run_id, status in backend.poll(run_ids).items():
            latest[run_id] = status
            if status.state.is_terminal:
                ended[run_id] = status
        return len(ended) == len(run_ids)

    def not_ended() -> str:
        return "latest status of runs not ended: " + ", ".join(
            f"{r}: {latest[r].state} {latest[r].detail}" if r in latest else f"{r}: none yet"
            for r in run_ids
            if r not in ended
        )

    wait_until(all_ended, timeout_s=timeout_s, what="runs to end", seen=not_ended, interval_s=0.05)
    return ended


@pytest.mark.slow
def test_backend_runs_a_spec_to_finished_and_the_worker_writes_its_summary(
    backend_and_store, specs
):
    backend, store = backend_and_store
    spec = specs[0]
    free = backend.capacity()
    assert free is None or free >= 1
    backend.submit(spec, attempt=0)
    status = _wait(backend, [spec.run_id])[spec.run_id]
    assert status.state is RunState.FINISHED
    assert status.outcome["run_id"] == spec.run_id
    assert store.run_summary(spec.run_id)["status"] == "finished"
    assert backend.poll(["never-submitted"]) == {}


@pytest.mark.slow
def test_backend_poll_never_blocks_and_cancel_stops_a_run(backend_and_store, specs):
    backend, store = backend_and_store
    spec = specs[1]
    backend.submit(spec, attempt=0)
    backend.cancel(spec.run_id, reason="test")
    assert backend.poll([spec.run_id]) == {}


@pytest.mark.slow
def test_embedded_ray_trains_at_the_drivers_priority_not_rays_background_niceness(ray_local):
    # Ray's default worker niceness (15) starves training whenever anything else is busy.
    import os

    import ray

    @ray.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote(), timeout=120) == os.nice(0)


def test_ray_gangs_are_reused_across_runs_of_the_same_size(ray_local, tmp_path, specs):
    store = Store(str(tmp_path / "exp"))
    backend = _ray_backend(store)
    try:
        single = [s for s in specs if s.world_size == 1][:6]
        for spec in single:  # one at a time: each run may take the previous one's gang
            backend.submit(spec, attempt=0)
            assert _wait(backend, [spec.run_id])[spec.run_id].state is RunState.FINISHED
        assert backend.gangs_started == 1
        double = next(s for s in specs if s.world_size == 2)
        backend.submit(double, attempt=0)  # needs both CPUs: the idle 1-rank gang is evicted
        assert _wait(backend, [double.run_id])[double.run_id].state is RunState.FINISHED
        assert backend.gangs_started == 2
    finally:
        backend.shutdown()


def test_a_new_gangs_actor_imports_what_its_runs_need_before_any_run_reaches_it(
    ray_local, tmp_path
):
    # A fresh worker process pays these imports once; begun when the actor is made, they
    # overlap Ray reporting it alive and delivering the first run instead of following.
    import ray

    from orchestrator.scheduler.ray_actor import RankActor

    def loaded(actor) -> list[str]:  # runs inside the actor (Ray's __ray_call__)
        import sys

        actor._imported.join()
        return [m for m in ("storage.store", "workers.simulated") if m in sys.modules]

    actor = RankActor.options(num_cpus=0).remote("simulate", str(tmp_path / "exp"), 1, {})
    try:
        assert ray.get(actor.__ray_call__.remote(loaded), timeout=120) == [
            "storage.store",
            "workers.simulated",
        ]
    finally:
        ray.kill(actor, no_restart=True)


def test_a_summary_only_simulated_run_loads_no_scipy(tmp_path):
    # scipy.signal (the curves' filter) cost each fresh Ray worker about 0.7 s before its
    # first summary-only run, which never uses it. A fresh interpreter, so nothing this
    # test session imported counts.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from storage.store import Store\n"
        "from tests.specs import tiny_spec\n"
        "from workers.simulated import TrueLaw, simulate_run\n"
        f"simulate_run(tiny_spec(), Store({str(tmp_path / 'exp')!r}), attempt=0, law=TrueLaw(),"
        " write_curve=False)\n"
        "print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_ray_dashboard_metrics_show_the_studys_runs_by_state(ray_local, tmp_path, specs):
    """The loop's counts reach Ray's Prometheus endpoint (the dashboard's Metrics view)."""
    import urllib.request

    import ray

    from orchestrator.scheduler.execution import execute, prepare

    store = Store(str(tmp_path / "gauged"))
    made = []

    def factory():
        made.append(_ray_backend(store))
        return made[-1]

    single = [s for s in specs if s.world_size == 1][:3]
    execute(prepare(single, store), store, factory, poll_s=0.05)
    made[0].shutdown()
    port = ray._private.worker._global_node.metrics_export_port
    wanted = 'experiment="gauged"'
    rows = {}

    def three_finished() -> bool:
        url = f"http://127.0.0.1:{port}/metrics"
        body = urllib.request.urlopen(url, timeout=60).read().decode()
        rows.clear()
        rows.update(
            (line.split('state="')[1].split('"')[0], float(line.rsplit(" ", 1)[1]))
            for line in body.splitlines()
            if line.startswith("ray_orch_runs{") and wanted in line
        )
        return rows.get("finished") == 3

    # Ray exports every few seconds; its metrics agent is slower beside busy processes.
    wait_until(
        three_finished,
        timeout_s=180,
        what=f"Ray's metrics endpoint to count 3 finished runs of {wanted}",
        seen=lambda: f"ray_orch_runs by state: {rows}",
        interval_s=1,
    )
    assert rows.get("queued") == 0 and rows.get("running") == 0, rows
    assert "ray_orch_runs" in dashboard_metrics()


def dashboard_metrics() -> set[str]:
    """The metric names deploy/grafana/orch-dashboard.json's queries use."""
    import json
    import re

    path = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "orch-dashboard.json"
    board = json.loads(path.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return {m for e in exprs for m in re.findall(r"\bray_orch_\w+", e)}


def test_the_grafana_dashboard_is_grafana_json_on_the_orch_gauges():
    import json

    path = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "orch-dashboard.json"
    board = json.loads(path.read_text())
    assert board["uid"] and board["panels"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in board["panels"])
    # Exactly the gauges the code exports (Ray prefixes application metrics with ray_;
    # the endpoint test above sees ray_orch_runs served).
    from orchestrator.scheduler.ray_actor import RUN_GAUGES
    from orchestrator.scheduler.ray_backend import RUNS_GAUGE

    exported = {f"ray_{g}" for g in (RUNS_GAUGE, *(gauge for gauge, _ in RUN_GAUGES.values()))}
    assert dashboard_metrics() == exported


@pytest.mark.slow
def test_ray_run_that_never_reports_is_stopped_by_the_stall_timeout(ray_local, tmp_path, specs):
    from orchestrator.scheduler.execution import Retries, execute, prepare

    store = Store(str(tmp_path / "stalled"))
    made = []

    def factory():  # a run that would sit silent for two minutes, then finish
        from orchestrator.scheduler.ray_backend import RayBackend

        made.append(RayBackend(store.uri, kind="simulate", options={"duration_s": 120.0}))
        return made[-1]

    spec = next(s for s in specs if s.world_size == 1)
    ex = execute(
        prepare([spec], store), store, factory, poll_s=0.2, retries=Retries(failure=0, stall_s=2)
    )
    made[0].shutdown()
    assert ex.runs[0].state is RunState.FAILED
    assert ex.runs[0].detail.startswith("stalled")
    assert store.run_summary(spec.run_id) is None  # stopped, not left to finish
    assert store.events(spec.run_id).column("state").to_pylist() == ["running", "failed"]
