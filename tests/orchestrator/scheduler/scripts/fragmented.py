"""Run by tests/orchestrator/scheduler/test_node_loss.py in its own process (its own Ray cluster).

Two 2-CPU nodes; four 1-rank runs leave four idle pooled gangs holding every CPU; the
pool is ordered so that making room for a 2-rank run evicts one idle gang on each node.
The free slots then add up to 2 but no node has 2, so the 2-rank gang (STRICT_PACK)
can only be placed if the backend also frees the other idle gangs. Writes a JSON report
to the file its second argument names (not stdout, where Ray's processes print too).
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from orchestrator.scheduler.execution import execute, prepare  # noqa: E402
from orchestrator.scheduler.ray_backend import RayBackend  # noqa: E402
from storage.store import Store  # noqa: E402
from tests.specs import tiny_spec  # noqa: E402
from workers.spec import RunSpec  # noqa: E402


def _spec(i: int, world_size: int = 1) -> RunSpec:
    return tiny_spec(tokens=1024 * (i + 1), micro_batch=16 // world_size, world_size=world_size)


def main(store_uri: str, report_path: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes(timeout=180)  # Ray's default 30 s is short on a busy machine
    ray.init(address=cluster.address, log_to_driver=False)
    store = Store(store_uri)
    backend = RayBackend(store.uri, kind="simulate", options={"duration_s": 1.0})
    singles = [_spec(i) for i in range(4)]
    execute(prepare(singles, store), store, lambda: backend, poll_s=0.1)
    # The test's own look inside: order the idle pool so the two oldest sit on different
    # nodes (which gangs Ray put where is its choice).
    nodes = {id(g): ray.get(g.actors[0].node_id.remote()) for g in backend._idle}
    by_node: dict[str, list] = {}
    for gang in backend._idle:
        by_node.setdefault(nodes[id(gang)], []).append(gang)
    a, b = by_node.values()
    backend._idle = [a[0], b[0], a[1], b[1]]
    pair = _spec(10, world_size=2)
    t0 = time.monotonic()
    execution = execute(prepare([pair], store), store, lambda: backend, poll_s=0.1)
    # Without the fix the loop would wait for ever; a stall timeout is not in play here.
    report = {
        "idle_nodes": len(by_node),
        "state": execution.runs[0].state.value,
        "seconds": time.monotonic() - t0,
    }
    backend.shutdown()
    Path(report_path).write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
