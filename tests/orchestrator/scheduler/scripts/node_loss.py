"""Run by tests/orchestrator/scheduler/test_node_loss.py in its own process (its own Ray cluster).

A 3-node ray.cluster_utils.Cluster (a CPU-less head and two 2-CPU workers); one 2-rank
ZeRO-2 DeepSpeed run; the node holding its ranks is removed once a checkpoint exists;
the loop must resume the run on the other node. Writes a JSON report to
the file its second argument names (not stdout, where Ray's processes print too).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from orchestrator.scheduler.execution import Retries, execute, prepare  # noqa: E402
from orchestrator.scheduler.ray_backend import RayBackend  # noqa: E402
from storage.store import Store  # noqa: E402
from tests.specs import tiny_spec  # noqa: E402
from workers.spec import Shape  # noqa: E402


def main(store_uri: str, report_path: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes(timeout=180)  # Ray's default 30 s is short on a busy machine
    ray.init(address=cluster.address, log_to_driver=False)
    store = Store(store_uri)
    spec = tiny_spec(
        shape=Shape(n_layer=2, d_model=64, n_head=4),
        tokens=16 * 64 * 160,
        micro_batch=8,
        world_size=2,
        zero_stage=2,
        log_every_steps=5,
        checkpoint_every_steps=20,
    )
    backend = RayBackend(store.uri)
    killed = {}

    def kill_when_checkpointed(execution):
        step = execution.runs[0].latest.get("step", 0)
        if killed or step < 45:
            return
        job = backend._jobs[spec.run_id]  # the test's own look inside: where do the ranks run?
        node_id = ray.get(job.gang.actors[0].node_id.remote())
        victim = next(n for n in workers if n.node_id == node_id)
        cluster.remove_node(victim, allow_graceful=False)
        killed.update(node_id=node_id, at_step=step)

    execution = execute(
        prepare([spec], store),
        store,
        lambda: backend,
        retries=Retries(preemption=2, failure=0),
        on_progress=kill_when_checkpointed,
        poll_s=0.2,
    )
    view = execution.runs[0]
    events = store.events(spec.run_id).to_pylist()
    metrics = store.metrics([spec.run_id], columns=["step", "attempt"]).to_pylist()
    report = {
        "state": view.state.value,
        "killed": killed,
        "events": [(e["attempt"], e["state"], e["detail"]) for e in events],
        "steps": [m["step"] for m in metrics],
        "attempt_of_step": {m["step"]: m["attempt"] for m in metrics},
        "expected_steps": list(range(5, spec.steps + 1, 5)),
        "summary_attempt": (store.run_summary(spec.run_id) or {}).get("attempt"),
    }
    backend.shutdown()
    ray.shutdown()
    cluster.shutdown()
    Path(report_path).write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
