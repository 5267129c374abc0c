"""Ingest benchmark: metric rows per second into the store, where a row's time goes and
what a killed writer loses, against the usual peers; then reading a large experiment.

    python bench/ingest.py            # the full run (about 1-2 minutes on 2 cores)
    python bench/ingest.py --quick    # fewer rows, kills and runs: a smoke test (~25 s)

Measured in one run on this machine, printed as a Markdown section:

(a) the store's MetricsWriter: `write()` once per row (a dict of one training step's 11
    values, built before timing), default options (4,096-row parts, up to 4 waiting,
    fsync), from the first `write()` to the return of `close()`, so every row is durably
    in a part file; 300,000 rows (50,000 with --quick), median of 3 writers. Also the
    wall time of a `write()` call on the caller's thread and the CPU time per row of the
    process (both threads).
(a') the cost per row by stage: the writer's own code run stage by stage on one thread
    over (a)'s rows in whole 4,096-row parts (medians of 5): `write()` alone (the buffer
    never fills while timed, so no background work competes for the GIL); the buffer's
    row tuples to an Arrow table (`_to_table`); Parquet encoding in memory as
    `storage.fsio.write_table_atomic` does it (page checksums, only run_id
    dictionary-encoded); the temporary file's write, fsync and rename
    (`write_bytes_atomic`); a directory fsync per part (the writer's is once per drained
    queue: an upper bound). Shares are of (a)'s wall time per row; (a) minus the stages
    is what the two threads add (lock waits, GIL switches) or save (overlap).
(b) MLflow's `MlflowClient.log_batch` into a local SQLite tracking store, in its own
    process, after the database and run exist: the same ten values per step (eval_loss
    where not null), 100 steps per call (MLflow's limit is 1,000 metrics), for 15 s
    (5 s with --quick); skipped if mlflow is not installed (`pip install '.[bench]'`).
(c) pyarrow writing one Parquet file per row (the naive logger), no fsync, for 3 s.
(d) 8 (3 with --quick) writer processes, each logging as fast as it can with default
    options, SIGKILLed 0.05-1 s (seeded) after their first row. The rows whose `write()`
    returned are compared with the rows stored: steps 0..n-1, none twice, whole parts,
    and at most the rows the writer may hold unwritten (its buffer plus 4 waiting).

Then an experiment of 1,000 runs x 10,000 steps (100 x 1,000 with --quick), 10 parts per
run, is written, and reading one run's curve (step, loss) is timed before and after
compaction, as are reading the whole summary and rebuilding it from the runs.

Goals (issue 24), each with a PASS/FAIL line: (a) >= 200,000 rows/s; (a) >= 100x (b);
(d) every kill within its bound.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import io
import json
import mmap
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage import writer as writer_module
from storage.fsio import sync_dir, write_bytes_atomic
from storage.store import Store
from storage.writer import MetricsWriter

GOAL_ROWS_PER_S = 200_000
GOAL_VS_MLFLOW = 100
_DEFAULTS = inspect.signature(MetricsWriter).parameters  # what (a) and (d) run with
FLUSH_ROWS, MAX_PENDING = _DEFAULTS["flush_rows"].default, _DEFAULTS["max_pending"].default
LOSS_BOUND_ROWS = (MAX_PENDING + 1) * FLUSH_ROWS  # the buffer filling plus those waiting
STAGES = {  # (a') in the order a row goes through them
    "write": "`write()` on the caller's thread: key check, values snapshot, lock, append",
    "table": "the buffer's row tuples to an Arrow table (transpose, one array per column)",
    "encode": "Parquet encoding in memory (page checksums; run_id dictionary-encoded)",
    "file": "temporary file: write, fsync, rename",
    "dir": "directory fsync (at most once per part)",
}


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


METRIC_KEYS = tuple(k for k in _row(0) if k != "step")  # what MLflow logs per step


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


def bench_breakdown(root: Path, rows: int, repeats: int) -> dict[str, float]:
    """Microseconds per row of each of STAGES, timed one after another on this thread over
    `rows` rows (whole parts only); medians over `repeats`.

    The stages are the writer's own code, reached through its private names (a bench of
    its internals), except the Parquet encoding, done here as storage.fsio does it.
    """
    parts = rows // FLUSH_ROWS
    rows = parts * FLUSH_ROWS
    batch = [_row(s) for s in range(rows)]
    fs = pafs.LocalFileSystem()
    seconds: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for i in range(repeats):
        store = Store(str(root / f"stages-{i}"))
        # A buffer that neither fills nor ages while timed: write() alone, with no
        # background work competing with it for the GIL.
        writer = store.metrics_writer("run", attempt=0, flush_rows=rows + 1, flush_s=1e9)
        t0 = time.perf_counter()
        for row in batch:
            writer.write(row)
        seconds["write"].append(time.perf_counter() - t0)
        buffered = list(writer._rows)
        buffers = [buffered[j : j + FLUSH_ROWS] for j in range(0, rows, FLUSH_ROWS)]

        t0 = time.perf_counter()
        tables = [writer._to_table(buffer) for buffer in buffers]
        seconds["table"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        encoded = []
        for table in tables:
            sink = io.BytesIO()
            pq.write_table(
                table, sink, use_dictionary=writer_module._DICTIONARY, write_page_checksum=True
            )
            encoded.append(sink.getvalue())
        seconds["encode"].append(time.perf_counter() - t0)

        directory = str(root / f"stages-{i}" / "parts")
        os.makedirs(directory)
        file_s = dir_s = 0.0
        for j, data in enumerate(encoded):
            t0 = time.perf_counter()
            write_bytes_atomic(fs, f"{directory}/part-{j:06d}.parquet", data, fsync_dir=False)
            t1 = time.perf_counter()
            sync_dir(fs, directory)
            file_s, dir_s = file_s + t1 - t0, dir_s + time.perf_counter() - t1
        seconds["file"].append(file_s)
        seconds["dir"].append(dir_s)
        writer.close()  # writes the buffer once more, untimed
    return {stage: statistics.median(s) / rows * 1e6 for stage, s in seconds.items()}


def bench_kills(root: Path, kills: int, rng: random.Random) -> list[tuple[int, list[int]]]:
    """(rows handed over, steps stored) for each of `kills` writer processes SIGKILLed
    while logging at full speed, each its own run of one store; a kill lands 0.05-1 s
    after the process's first row."""
    uri = str(root / "kills")
    results = []
    for k in range(kills):
        counter = root / f"kill-{k}.count"
        counter.write_bytes(bytes(8))
        stderr_path = root / f"kill-{k}.stderr"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--kill-child", uri, f"run-{k}", str(counter)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            deadline = time.monotonic() + 120  # imports can take seconds on a busy machine
            while _handed(counter) == 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = stderr_path.read_text()[-2000:]
                    raise RuntimeError(f"the writer process did not start writing:\n{tail}")
                time.sleep(0.005)
            time.sleep(rng.uniform(0.05, 1.0))
        finally:
            proc.kill()
            proc.wait()
        handed = _handed(counter)
        steps = Store(uri).metrics([f"run-{k}"], columns=["step"]).column("step").to_pylist()
        results.append((handed, steps))
    return results


def _handed(counter: Path) -> int:
    return int.from_bytes(counter.read_bytes(), "little")


def _kill_child(uri: str, run_id: str, counter: str) -> None:
    # After each write() returns, the rows handed over so far go into a shared 8-byte
    # mapping: what the parent compares with the rows stored once this process is killed.
    with open(counter, "r+b") as f:
        shared = mmap.mmap(f.fileno(), 8)
    writer = Store(uri).metrics_writer(run_id, attempt=0)
    step = 0
    while True:
        writer.write(_row(step))
        step += 1
        struct.pack_into("<q", shared, 0, step)


def _kill_verdict(results: list[tuple[int, list[int]]]) -> tuple[bool, str]:
    """(every kill kept the rules, the range of rows lost and each kill that did not)."""
    losses, bad = [], []
    for k, (handed, steps) in enumerate(results):
        stored = len(steps)
        lost = handed - stored  # -1: killed after a write() returned, before the count
        losses.append(lost)
        if steps != list(range(stored)):
            bad.append(f"kill {k}: stored steps are not 0..{stored - 1}, each once")
        elif stored % FLUSH_ROWS:
            bad.append(f"kill {k}: {stored:,} rows stored, not whole parts")
        elif not -1 <= lost <= LOSS_BOUND_ROWS:
            bad.append(f"kill {k}: {lost:,} rows lost of {handed:,}")
    handed = [h for h, _ in results]
    summary = (
        f"{len(results)} kills after {min(handed):,}-{max(handed):,} rows: "
        f"{min(losses):,}-{max(losses):,} rows lost (bound {LOSS_BOUND_ROWS:,})"
    )
    return not bad, "; ".join([summary, *bad])


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
    parser.add_argument("--kill-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mlflow_child:
        _mlflow_child(args.mlflow_child[0], float(args.mlflow_child[1]))
        return 0
    if args.kill_child:
        _kill_child(*args.kill_child)
        return 0
    runs, steps = (100, 1000) if args.quick else (1000, 10_000)
    writer_rows = 50_000 if args.quick else 300_000
    n_kills = 3 if args.quick else 8
    root = Path(tempfile.mkdtemp(prefix="orch-bench-ingest-"))
    try:
        load_1min = os.getloadavg()[0]
        writer_rate, call_us, cpu_us = bench_writer(root, writer_rows, repeats=3)
        stage_us = bench_breakdown(root, writer_rows, repeats=5)
        naive_rate = bench_one_row_per_file(root, seconds=3.0)
        mlflow_rate, mlflow_note = bench_mlflow(root, seconds=5.0 if args.quick else 15.0)
        kills = _kill_verdict(bench_kills(root, n_kills, random.Random(24)))
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

    cpus = os.cpu_count()
    print("## Ingest: metric rows per second, and reading them back\n")
    print("`python bench/ingest.py" + (" --quick`" if args.quick else "`"))
    print(
        f"on {cpus} CPUs (load average {load_1min:.1f} at the start: other work shares "
        f"them), Python {platform.python_version()}, pyarrow {pa.__version__}; one run; "
        "a row is one training step's 11 values.\n"
    )
    print("| measurement | result |")
    print("| --- | --- |")
    print(
        f"| (a) store `MetricsWriter.write` per row, to durable (`close()` returned), "
        f"default options ({FLUSH_ROWS:,}-row parts, fsync) | **{writer_rate:,.0f} rows/s** |"
    )
    print(f"| (a) wall time of one `write()` call on the training thread | {call_us:.1f} us |")
    print(
        f"| (a) CPU time per row, all threads (conversion, Parquet, I/O) | {cpu_us:.1f} us "
        f"= {1e6 / cpu_us:,.0f} rows per CPU-second |"
    )
    mlflow_cell = f"{mlflow_rate:,.0f} rows/s ({mlflow_note})" if mlflow_rate else mlflow_note
    print(f"| (b) MLflow `log_batch`, SQLite tracking store, own process | {mlflow_cell} |")
    print(f"| (c) pyarrow, one Parquet file per row | {naive_rate:,.0f} rows/s |")
    print(f"| (a) / (b) | **{ratio(mlflow_rate)}** |")
    print(f"| (a) / (c) | {ratio(naive_rate)} |")
    print(f"| (d) writer processes SIGKILLed while logging | {kills[1]} |")
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
    _print_breakdown(stage_us, total_us=1e6 / writer_rate)
    _print_goals(writer_rate, mlflow_rate, kills)
    return 0


def _print_breakdown(stage_us: dict[str, float], *, total_us: float) -> None:
    stages_us = sum(stage_us.values())
    rows = [(STAGES[stage], us) for stage, us in stage_us.items()]
    rows += [
        ("sum of the stages, one after another on one thread", stages_us),
        (
            "(a) minus the stages: the two threads' hand-offs (+) or overlap (-)",
            total_us - stages_us,
        ),
        ("(a) end to end, wall time per row", total_us),
    ]
    print("### (a') Where a row's time goes\n")
    print("| stage | us per row | share of (a) |\n| --- | ---: | ---: |")
    for what, us in rows:
        print(f"| {what} | {us:.2f} | {us / total_us:.0%} |")
    print()


def _print_goals(writer_rate: float, mlflow_rate: float | None, kills: tuple[bool, str]) -> None:
    vs_mlflow = writer_rate / mlflow_rate if mlflow_rate else 0.0
    goals = [
        (
            writer_rate >= GOAL_ROWS_PER_S,
            f"(a) >= {GOAL_ROWS_PER_S:,} rows/s per writer: {writer_rate:,.0f} rows/s",
        ),
        (
            vs_mlflow >= GOAL_VS_MLFLOW,
            f"(a) >= {GOAL_VS_MLFLOW}x MLflow's `log_batch` (b) in the same run: "
            + (f"{vs_mlflow:,.0f}x" if mlflow_rate else "not measured"),
        ),
        (
            kills[0],
            "(d) a killed writer loses at most its unflushed rows (its buffer and up to "
            f"{MAX_PENDING} waiting), in whole parts, no step twice: {kills[1]}",
        ),
    ]
    print("### Goals (issue 24)\n")
    for ok, what in goals:
        print(f"- **{'PASS' if ok else 'FAIL'}** {what}.")
    print()


if __name__ == "__main__":
    sys.exit(main())
