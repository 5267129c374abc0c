"""Ingest benchmark: how fast metric rows go into the store, against the usual peers,
and how fast they come back out of a large experiment.

    python bench/ingest.py            # the full run (about 2-4 minutes on 2 cores)
    python bench/ingest.py --quick    # a smaller experiment, for a smoke test

Measured in one run on this machine, printed as a Markdown section:

(a) the store's MetricsWriter: `write()` once per row, as the training loop calls it,
    default options (4,096-row parts, fsync on), timed from the first write to the
    return of `close()`, so every row is durably in a part file;
(b) MLflow's `MlflowClient.log_batch` into a local SQLite tracking store, the same ten
    values per step as (a) (MLflow's limit is 1,000 metrics per call: 100 steps), in its
    own process; skipped if mlflow is not installed (`pip install '.[bench]'`);
(c) pyarrow writing one Parquet file per row (the naive logger), no fsync.

Then an experiment of 1,000 runs x 10,000 steps (10 parts per run) is written and the
time to read one run's curve (step, loss) is measured before and after compaction, as
are reading the whole summary and rebuilding it from the runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.store import Store

METRIC_KEYS = (
    "tokens",
    "flops",
    "wall_s",
    "loss",
    "eval_loss",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "mfu",
    "peak_mem_bytes",
)
GOAL_ROWS_PER_S = 100_000
GOAL_VS_MLFLOW = 50


def _row(step: int) -> dict:
    """One logged step as the training loop writes it."""
    return {
        "step": step,
        "tokens": step * 65536,
        "flops": 6.0e9 * step * 65536,
        "wall_s": step * 0.25,
        "loss": 10.0 / (1.0 + 0.01 * step),
        "eval_loss": None if step % 100 else 10.0 / (1.0 + 0.01 * step),
        "lr": 3e-4,
        "grad_norm": 1.0,
        "tokens_per_s": 262144.0,
        "mfu": 0.41,
        "peak_mem_bytes": 12 * 2**30,
    }


def bench_writer(root: Path, rows: int, repeats: int) -> tuple[float, float, float]:
    """Medians over `repeats` of: rows/s to durable, microseconds per write() call on the
    caller's thread, and CPU microseconds per row over all threads (load-independent)."""
    batch = [_row(s) for s in range(rows)]
    rates, call_us, cpu_us = [], [], []
    for i in range(repeats):
        store = Store(str(root / f"writer-{i}"))
        writer = store.metrics_writer("run", attempt=0)
        c0, t0 = time.process_time(), time.perf_counter()
        for row in batch:
            writer.write(row)
        t1 = time.perf_counter()
        writer.close()
        c2, t2 = time.process_time(), time.perf_counter()
        rates.append(rows / (t2 - t0))
        call_us.append((t1 - t0) / rows * 1e6)
        cpu_us.append((c2 - c0) / rows * 1e6)
        assert store.metrics(["run"], columns=["step"]).num_rows == rows
    return statistics.median(rates), statistics.median(call_us), statistics.median(cpu_us)


def bench_one_row_per_file(root: Path, seconds: float) -> float:
    """Rows/s writing each row as its own Parquet file."""
    out = root / "naive"
    out.mkdir()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        table = pa.Table.from_pylist([{"run_id": "run", "attempt": 0, **_row(n)}])
        pq.write_table(table, out / f"row-{n:09d}.parquet")
        n += 1
    return n / (time.perf_counter() - t0)


def bench_mlflow(root: Path, seconds: float) -> tuple[float | None, str]:
    """(rows/s, note) of MLflow's log_batch, measured in a process of its own."""
    if importlib.util.find_spec("mlflow") is None:
        return None, "skipped: mlflow is not installed (pip install '.[bench]')"
    cmd = [sys.executable, __file__, "--mlflow-child", str(root / "mlflow"), str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"skipped: the MLflow process failed ({last})"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    import mlflow  # the full package or mlflow-skinny (the bench extra), one module

    return result["rows_per_s"], f"MLflow {mlflow.__version__}, {result['rows']:,} rows"


def _mlflow_child(directory: str, seconds: float) -> None:
    import logging

    logging.disable(logging.WARNING)
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    os.makedirs(directory, exist_ok=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{directory}/mlflow.db")
    # Creating the database (schema migrations) and the run is setup, not ingest.
    experiment = client.create_experiment("bench", artifact_location=f"{directory}/artifacts")
    run_id = client.create_run(experiment).info.run_id
    steps_per_call = 1000 // len(METRIC_KEYS)
    t0, step = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        metrics = []
        now_ms = int(time.time() * 1000)
        for s in range(step, step + steps_per_call):
            row = _row(s)
            metrics += [
                Metric(k, float(row[k]), now_ms, s) for k in METRIC_KEYS if row[k] is not None
            ]
        client.log_batch(run_id, metrics=metrics)
        step += steps_per_call
    elapsed = time.perf_counter() - t0
    client.set_terminated(run_id)
    print(json.dumps({"rows": step, "rows_per_s": step / elapsed}))


def build_experiment(root: Path, runs: int, steps: int, parts: int) -> tuple[Store, float]:
    """An experiment of `runs` finished runs, `parts` part files each; (store, seconds)."""
    store = Store(str(root / "experiment"))
    t0 = time.perf_counter()
    step = np.arange(steps, dtype=np.int64)
    chunk = steps // parts
    for i in range(runs):
        run_id = f"run-{i:04d}"
        loss = 2.0 + 8.0 / (1.0 + 0.01 * step) + 0.01 * i
        curve = pa.table(
            {"step": step, "tokens": step * 65536, "loss": loss, "lr": np.full(steps, 3e-4)}
        )
        with store.metrics_writer(run_id, attempt=0, fsync=False) as writer:
            for p in range(parts):
                writer.write_batch(curve.slice(p * chunk, chunk))
        store.write_spec(run_id, "{}")
        store.write_run_summary(
            {"run_id": run_id, "status": "finished", "steps": steps, "final_loss": float(loss[-1])}
        )
    return store, time.perf_counter() - t0


def _median_s(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small experiment (smoke test)")
    parser.add_argument("--mlflow-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mlflow_child:
        _mlflow_child(args.mlflow_child[0], float(args.mlflow_child[1]))
        return 0
    runs, steps = (100, 1000) if args.quick else (1000, 10_000)
    writer_rows = 50_000 if args.quick else 300_000
    root = Path(tempfile.mkdtemp(prefix="orch-bench-ingest-"))
    try:
        load_1min = os.getloadavg()[0]
        writer_rate, call_us, cpu_us = bench_writer(root, writer_rows, repeats=3)
        naive_rate = bench_one_row_per_file(root, seconds=3.0)
        mlflow_rate, mlflow_note = bench_mlflow(root, seconds=5.0 if args.quick else 15.0)
        store, build_s = build_experiment(root, runs, steps, parts=10)
        pick = [f"run-{i:04d}" for i in (runs // 7, runs // 3, runs // 2, runs - 5, 11)]
        picks = iter(pick * 2)

        def read_curve():
            table = Store(store.uri).metrics([next(picks)], columns=["step", "loss"])
            assert table.num_rows == steps

        curve_parts_s = _median_s(read_curve)
        t0 = time.perf_counter()
        for i in range(runs):
            store.compact_run(f"run-{i:04d}")
        compact_s = (time.perf_counter() - t0) / runs
        picks = iter(pick * 2)
        curve_compact_s = _median_s(read_curve)
        t0 = time.perf_counter()
        rebuilt = store.rebuild_summary()
        rebuild_s = time.perf_counter() - t0
        assert rebuilt.num_rows == runs
        summary_s = _median_s(lambda: Store(store.uri).summary())
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def ratio(x: float | None) -> str:
        return f"{writer_rate / x:,.0f}x" if x else "n/a"

    met = "met" if writer_rate >= GOAL_ROWS_PER_S else "NOT met"
    vs_mlflow = "n/a (MLflow skipped)"
    if mlflow_rate:
        met_ml = "met" if writer_rate / mlflow_rate >= GOAL_VS_MLFLOW else "NOT met"
        vs_mlflow = f"{ratio(mlflow_rate)} (goal >= {GOAL_VS_MLFLOW}x: {met_ml})"
    cpus = os.cpu_count()
    print("## Ingest: metric rows per second, and reading them back\n")
    print("`python bench/ingest.py`" + (" --quick" if args.quick else ""))
    print(
        f"on {cpus} CPUs (load average {load_1min:.1f} at the start: other work shares "
        f"them), Python {platform.python_version()}, pyarrow {pa.__version__}; one run; "
        "a row is one training step's 11 values.\n"
    )
    print("| measurement | result |")
    print("| --- | --- |")
    print(
        f"| (a) store `MetricsWriter.write` per row, to durable (`close()` returned), "
        f"default options (4,096-row parts, fsync) | **{writer_rate:,.0f} rows/s** "
        f"(goal >= {GOAL_ROWS_PER_S:,}: {met}) |"
    )
    print(f"| (a) wall time of one `write()` call on the training thread | {call_us:.1f} us |")
    print(
        f"| (a) CPU time per row, all threads (conversion, Parquet, I/O) | {cpu_us:.1f} us "
        f"= {1e6 / cpu_us:,.0f} rows per CPU-second |"
    )
    mlflow_cell = f"{mlflow_rate:,.0f} rows/s ({mlflow_note})" if mlflow_rate else mlflow_note
    print(f"| (b) MLflow `log_batch`, SQLite tracking store, own process | {mlflow_cell} |")
    print(f"| (c) pyarrow, one Parquet file per row | {naive_rate:,.0f} rows/s |")
    print(f"| (a) / (b) | {vs_mlflow} |")
    print(f"| (a) / (c) | {ratio(naive_rate)} |")
    print(
        f"| experiment written: {runs:,} runs x {steps:,} steps, 10 parts per run | "
        f"{build_s:.1f} s |"
    )
    print(f"| read one run's curve (step, loss), 10 parts | {curve_parts_s * 1e3:.1f} ms |")
    print(f"| compact one run (10 parts into 1) | {compact_s * 1e3:.1f} ms |")
    print(f"| read one run's curve (step, loss), compacted | {curve_compact_s * 1e3:.1f} ms |")
    print(f"| read the whole summary ({runs:,} rows) | {summary_s * 1e3:.1f} ms |")
    print(f"| rebuild the summary from {runs:,} runs' own rows | {rebuild_s * 1e3:.0f} ms |")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
