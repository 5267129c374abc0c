"""Experiment stores to watch: a finished simulated study, and one caught mid-run.

Both come from really running plans/simulated.yaml on the SimulatedBackend (35 runs,
seconds); the running one is that study rewound to how the store looks while the driver
is alive: some runs started with part of their curve written and no summary, one run
not started at all.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from storage.events import EventLog, encode
from storage.store import Store

REPO = Path(__file__).resolve().parents[3]
RUNNING = 3  # runs caught mid-training in the running fixture
QUEUED = 1  # runs not started yet


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory) -> Path:
    from orchestrator.adaptive.submit import submit
    from orchestrator.planning import parse_plan

    root = tmp_path_factory.mktemp("finished")
    text = (REPO / "plans" / "simulated.yaml").read_text()
    plan = parse_plan(text, path="plans/simulated.yaml", store=str(root))
    submit(plan, poll_s=0.0)
    return Path(plan.experiment_uri)


@pytest.fixture(scope="session")
def running_study(finished_study, tmp_path_factory) -> Path:
    """The finished study rewound: RUNNING runs half-way, QUEUED runs not started."""
    root = tmp_path_factory.mktemp("running") / finished_study.name
    shutil.copytree(finished_study, root)
    for name in ("summary.parquet", "ledger.parquet"):
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / "fits", ignore_errors=True)
    store = Store(str(root))
    run_ids = store.run_ids()
    now = time.time()
    for run_id in run_ids[:RUNNING]:
        rewind(store, run_id, started=now - 30.0)
        store.upload_log(run_id, attempt=0, rank=0, data=b"INFO workers.train: step 10\n")
    for run_id in run_ids[RUNNING : RUNNING + QUEUED]:
        replace_events(store, run_id, [])
        (root / "runs" / run_id / "summary.parquet").unlink()
        shutil.rmtree(root / "metrics" / f"run_id={run_id}")
    return root


def replace_events(store: Store, run_id: str, rows: list[dict]) -> None:
    """Rewrite the experiment's event log with `rows` as `run_id`'s only events (the log
    is append-only, so a test that rewinds history writes a new one)."""
    store.close_events()
    directory = Path(store.root) / "events"
    kept = [r for r in EventLog(store.fs, store.root).rows() if r["run_id"] != run_id]
    shutil.rmtree(directory)
    directory.mkdir()
    log = directory / f"{time.time_ns():019d}-{uuid.uuid4().hex[:8]}.log"
    log.write_bytes(b"".join(encode(r) for r in [*kept, *rows]))


def rewind(store: Store, run_id: str, *, started: float) -> None:
    """Make `run_id` look half-way through its first attempt."""
    run_dir = Path(store.root) / "runs" / run_id
    (run_dir / "summary.parquet").unlink()
    start = {"run_id": run_id, "attempt": 0, "state": "running", "time_unix_s": started}
    replace_events(store, run_id, [{**start, "detail": ""}])
    curve = store.metrics([run_id])
    half = curve.filter(pc.less_equal(curve["step"], curve["step"][curve.num_rows // 2 - 1]))
    half = half.set_column(
        half.schema.get_field_index("tokens_per_s"),
        "tokens_per_s",
        pa.array([1e6] * half.num_rows, pa.float64()),
    )
    shutil.rmtree(Path(store.metrics_dir) / f"run_id={run_id}")
    with store.metrics_writer(run_id, attempt=0) as writer:
        for row in half.to_pylist():
            writer.write({k: v for k, v in row.items() if k not in ("run_id", "attempt")})
