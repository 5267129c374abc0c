"""One conformance suite for every Backend, and the Ray gang pool (real local Ray)."""

import time
from pathlib import Path

import pytest

from orchestrator.planning import load_plan
from orchestrator.planning.expand import expand_plan
from orchestrator.scheduler.base import RunState
from orchestrator.scheduler.function import FunctionBackend
from orchestrator.scheduler.simulated import SimulatedBackend
from storage.store import Store

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


def _wait(backend, run_ids, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    seen = {}
    while time.monotonic() < deadline:
        for run_id, status in backend.poll(run_ids).items():
            if status.state.is_terminal:
                seen[run_id] = status
        if len(seen) == len(run_ids):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"runs did not end: {set(run_ids) - set(seen)}")


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
    deadline = time.monotonic() + 60  # Ray exports every few seconds
    while time.monotonic() < deadline:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        rows = {
            line.split('state="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("ray_orch_runs{") and wanted in line
        }
        if rows.get("finished") == 3:
            break
        time.sleep(1)
    assert rows.get("finished") == 3, rows
    assert rows.get("queued") == 0 and rows.get("running") == 0, rows


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
