"""Worker faults on the real local Ray with real DeepSpeed CPU runs, in one small study:
a rank's actor is killed mid-run, a run raises, a run's loss spikes. The killed run
resumes from its checkpoint within its preemption budget, the raising run fails within
its failure budget, the spiking run ends diverged and is not retried, and the rest of
the study goes on. (A whole node lost: tests/orchestrator/scheduler/test_node_loss.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from ray.util.state import list_actors, list_tasks

from orchestrator.scheduler.base import RunState
from orchestrator.scheduler.execution import Retries, execute, prepare
from orchestrator.scheduler.ray_backend import RayBackend
from storage.store import Store
from tests.specs import tiny_spec
from workers.spec import DataSpec, LrSchedule

pytestmark = pytest.mark.slow

_TINY = dict(global_batch=8, micro_batch=8, log_every_steps=5)
STEPS = 120
KILLED = tiny_spec(tokens=8 * 64 * STEPS, checkpoint_every_steps=20, seed=1, **_TINY)
CALM = tiny_spec(tokens=8 * 64 * 40, seed=2, **_TINY)
RAISES = tiny_spec(  # the worker cannot open its data: an exception inside the run
    tokens=8 * 64 * 40, data=DataSpec(source="tokens", root="/nonexistent/shards"), **_TINY
)
SPIKES = tiny_spec(  # the learning rate blows the loss up: diverged
    tokens=8 * 64 * 40,
    schedule=LrSchedule(kind="constant", peak_lr=10.0, warmup_frac=0.0),
    **_TINY,
)


def _kill_rank_actor(dashboard: str, run_id: str, rank: int) -> str:
    """ray.kill the actor running task `run:<run_id>:rank<rank>`, found the way an
    operator would, through Ray's state API (the dashboard's view). Its actor name."""
    name = f"run:{run_id}:rank{rank}"
    tasks = list_tasks(address=dashboard, filters=[("name", "=", name)], detail=True)
    running = [t for t in tasks if t.state == "RUNNING"]
    assert running, tasks
    actor_id = running[0].actor_id
    (actor,) = list_actors(address=dashboard, filters=[("actor_id", "=", actor_id)])
    ray.kill(ray.get_actor(actor.name), no_restart=True)
    return actor.name


def test_killed_actor_resumes_raising_run_fails_in_budget_spike_diverges_rest_goes_on(
    ray_local, tmp_path
):
    store = Store(str(tmp_path / "exp"))
    backend = RayBackend(store.uri)
    killed: dict[str, object] = {}

    latest = Path(store.checkpoint_dir(KILLED.run_id), "latest")

    def kill_after_a_checkpoint(execution):
        # Watch the store, not the live progress (asked about once a second): a fast
        # machine runs the whole run in about that long.
        view = next(v for v in execution.runs if v.spec.run_id == KILLED.run_id)
        if killed or view.state is not RunState.RUNNING or not latest.is_file():
            return
        killed.update(
            actor=_kill_rank_actor(ray_local, KILLED.run_id, 0), at=latest.read_text().strip()
        )

    try:
        execution = execute(
            prepare([KILLED, CALM, RAISES, SPIKES], store),
            store,
            lambda: backend,
            retries=Retries(preemption=1, failure=1),
            on_progress=kill_after_a_checkpoint,
            poll_s=0.2,
        )
    finally:
        backend.shutdown()
    assert killed, "the run ended before its actor could be killed"
    states = {v.spec.run_id: v.state for v in execution.runs}
    assert states == {
        KILLED.run_id: RunState.FINISHED,
        CALM.run_id: RunState.FINISHED,
        RAISES.run_id: RunState.FAILED,
        SPIKES.run_id: RunState.DIVERGED,
    }

    def events(spec):
        return [e["state"] for e in store.events(spec.run_id).to_pylist()]

    assert events(KILLED) == ["running", "preempted", "running", "finished"]
    assert events(RAISES) == ["running", "failed", "running", "failed"]  # budget: 1 retry
    assert events(SPIKES) == ["running", "diverged"]  # never retried blindly
    assert events(CALM) == ["running", "finished"]
    # The killed run resumed from its checkpoint: the second attempt's first logged step
    # comes after a checkpoint, and every step is stored once.
    rows = store.metrics([KILLED.run_id], columns=["step", "attempt"]).to_pylist()
    assert [r["step"] for r in rows] == list(range(5, STEPS + 1, 5))
    resumed = [r["step"] for r in rows if r["attempt"] == 1]
    assert resumed and min(resumed) > 20 and (min(resumed) - 5) % 20 == 0, resumed
    detail = store.events(RAISES.run_id).to_pylist()[-1]["detail"]
    assert "nonexistent" in detail and "\n" not in detail
