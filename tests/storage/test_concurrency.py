"""Many writers, a compacting driver and a polling reader at once, on local disk and S3."""

import threading

import pytest
from _metrics_child import Child, stream

from storage.parts import list_parts
from storage.store import Store
from tests.waiting import wait_until

WRITERS, FLUSH_ROWS = 16, 100


@pytest.mark.slow
def test_sixteen_writers_and_a_polling_reader_see_consistent_exact_counts(store_uri):
    store = Store(store_uri)
    rows = 600 if store_uri.startswith("s3://") else 1500  # moto takes ~30 ms a request
    runs = [f"run-{i:02d}" for i in range(WRITERS)]
    children = [Child(stream, store_uri, r, 0, 0, rows, FLUSH_ROWS, 4, None) for r in runs]

    failed: list[BaseException] = []

    def drive():  # the driver: when a run ends, compact it (readers keep reading)
        try:
            for run, child in zip(runs, children, strict=True):
                child.finish()
                store.compact_run(run)
        except BaseException as err:  # raised in the test below: a thread's would be lost
            failed.append(err)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    seen = dict.fromkeys(runs, 0)
    reads = 0

    def read_while_driving() -> bool:
        """One read and its checks while the driver runs; True once it has ended."""
        nonlocal reads
        if not driver.is_alive():
            return True
        table = store.metrics(columns=["run_id", "step"])
        reads += 1
        by_run: dict[str, list[int]] = {}
        for run, step in zip(table["run_id"].to_pylist(), table["step"].to_pylist(), strict=True):
            by_run.setdefault(run, []).append(step)
        assert set(by_run) <= set(runs)
        for run, steps in by_run.items():
            assert steps == list(range(len(steps)))  # a prefix: no gap, no step twice
            assert len(steps) % FLUSH_ROWS == 0 or len(steps) == rows  # whole parts only
            assert len(steps) >= seen[run]  # never fewer rows than an earlier read
            seen[run] = len(steps)
        return False

    wait_until(
        read_while_driving,
        timeout_s=900,  # a bound for a stuck writer or compaction, generous for a busy machine
        what="the writers to finish and the driver to compact every run",
        seen=lambda: f"{reads} reads; rows per run at the last: {seen}",
        interval_s=0,
    )
    if failed:
        raise failed[0]
    assert reads >= 2  # the reads above overlapped the writers
    final = store.metrics(columns=["run_id", "step"])
    assert final.num_rows == WRITERS * rows
    assert (
        final.group_by("run_id")
        .aggregate([("step", "count_distinct")])
        .column("step_count_distinct")
        .to_pylist()
        == [rows] * WRITERS
    )
    assert len(list_parts(store.fs, store.metrics_dir, None)) == WRITERS  # one file per run
