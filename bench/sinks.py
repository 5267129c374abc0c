"""Benchmark: what TensorBoard, MLflow and W&B sinks cost a training run, per step and once.

Claim measured (issue 23): sending rank 0's metric rows to a sink (workers/sinks.py) costs
each logged step little next to a run without sinks, and opening and closing a sink costs
a bounded one-off.

Method. The same tiny model (2 layers, width 32, byte data, 1 rank, 1 thread) is trained
in this process by `workers.train.train` with `log_every_steps=1`, so every step writes a
row and every row goes to each sink: the worst case. Variants: no sinks; TensorBoard
(event files in the run directory); MLflow (`MlflowClient` on one SQLite tracking store in
the temp dir, shared by all runs as a study's runs share one); W&B offline (files in the
run directory); all three. Each repeat runs every variant once, in an order rotated per
repeat, so drifts in machine load reach all variants alike; every run gets its own seed
(its own run id, MLflow run and W&B run) and its own temp store. Figures are medians
over the repeats.

- Per step: the `on_log` callback marks the clock as rows 1 and S-1 are done (written to
  Parquet and sent to every sink); ms/step = (mark[S-1] - mark[1]) / (S-2). That is the
  mean over the steady steps, occasional flushes included; the DeepSpeed start-up, the
  final evaluation (row S) and the closing are outside it. CPU time is this process's
  plus its child processes' (W&B's `wandb-core` service does its work there, on the
  machine's other core, where wall time would not show it).
- One-off: start-up = mark[1] - (call of train()) - one step; wind-down = (return of
  train()) - mark[S-1] - one step (the last step, final eval, checkpoint, closing). A
  sink's open and close costs are these minus the same for no sinks.
- First in a process: before the timed repeats, each sink runs once alone for a few
  steps; its start-up minus the no-sink start-up is the cost of the first open in a fresh
  worker process, imports aside (W&B starts its service, MLflow creates and migrates the
  SQLite database). Imports are timed apart, in a fresh interpreter that has imported
  torch (as a worker has); a sink module that a no-sink run had already loaded is marked,
  since every worker pays for it, sink or not.

A sink that fails is dropped by the worker with a warning and the run goes on, which
would time nothing; so every run's sink output is checked afterwards (event file, MLflow
metric history, W&B run file) and any warning or missing output is reported. Sinks whose
package is not installed are skipped (`pip install '.[sinks]'`). Nothing is downloaded;
all files go to a temporary directory. Prints a Markdown section and exits 0.

    .venv/bin/python bench/sinks.py [--steps 200] [--repeats 3]
    .venv/bin/python bench/sinks.py --quick     # 50 steps, 1 repeat (smoke test)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core per rank, as in a worker
os.environ.setdefault("DS_ACCELERATOR", "cpu")  # no GPU probing noise

import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker_overhead import stdout_to_stderr  # noqa: E402

from storage.store import Store  # noqa: E402
from workers.spec import RunSpec, Shape, SinkSpec  # noqa: E402
from workers.train import train  # noqa: E402

SINKS = ("tensorboard", "mlflow", "wandb")
VARIANTS = ("none", *SINKS, "all")
EXPERIMENT = "bench-sinks"
WARMUP_STEPS = 5  # the untimed first-in-process runs
# Module each sink imports on first use (workers/sinks.py), and the packages it needs.
IMPORTS = {
    "tensorboard": ("torch.utils.tensorboard",),
    "mlflow": ("mlflow.tracking", "mlflow.entities"),
    "wandb": ("wandb",),
}
PACKAGES = {
    "tensorboard": ("tensorboard",),
    "mlflow": ("mlflow", "sqlalchemy", "alembic"),
    "wandb": ("wandb",),
}
SHAPE = Shape(n_layer=2, d_model=32, n_head=2)  # tests/specs.py's tiny model
BATCH = 16  # sequences of 64 bytes per step, one micro-batch


def _spec(steps: int, seed: int, sinks: tuple[SinkSpec, ...]) -> RunSpec:
    return RunSpec(
        shape=SHAPE,
        tokens=BATCH * SHAPE.seq_len * steps,
        global_batch=BATCH,
        micro_batch=BATCH,
        log_every_steps=1,
        eval_batches=2,
        seed=seed,
        sinks=sinks,
    )


def _sink_specs(kinds: tuple[str, ...], mlflow_uri: str) -> tuple[SinkSpec, ...]:
    specs = {
        "tensorboard": SinkSpec(kind="tensorboard"),
        "mlflow": SinkSpec(kind="mlflow", tracking_uri=mlflow_uri, experiment=EXPERIMENT),
        "wandb": SinkSpec(kind="wandb", mode="offline", experiment=EXPERIMENT),
    }
    return tuple(specs[k] for k in kinds)


@dataclasses.dataclass
class Sample:
    step_ms: float  # wall, mean over steps 2 .. S-1
    step_cpu_ms: float  # CPU of this process and its children, same steps
    startup_s: float  # call of train() to the end of step 1, less one step
    winddown_s: float  # end of step S-1 to the return of train(), less one step
    problem: str  # "" when every sink wrote what it should and none warned


def _cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of this process and its live children (W&B's service among them)."""
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a child that just ended
            total += sum(child.cpu_times()[:2])
    return total


class _Warnings(logging.Handler):
    """Collects the worker's sink warnings (a failed sink is dropped, not raised)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_once(kinds, *, steps: int, seed: int, root: Path, mlflow_uri: str) -> Sample:
    """Train one run with the sinks `kinds`, in a fresh store under `root`."""
    spec = _spec(steps, seed, _sink_specs(kinds, mlflow_uri))
    store = Store(str(root / f"store-{'-'.join(kinds) or 'none'}-{seed}"))
    proc = psutil.Process()
    marks: dict[int, tuple[float, float]] = {}

    def on_log(row: dict) -> None:  # after the row is in Parquet and every sink
        if row["step"] in (1, steps - 1):
            marks[row["step"]] = (time.perf_counter(), _cpu_s(proc))

    warned = _Warnings()
    logging.getLogger("workers").addHandler(warned)
    try:
        t0 = time.perf_counter()
        outcome = train(spec, store, threads=1, on_log=on_log)
        t1 = time.perf_counter()
    finally:
        logging.getLogger("workers").removeHandler(warned)
    (w1, c1), (w2, c2) = marks[1], marks[steps - 1]
    step_s = (w2 - w1) / (steps - 2)
    problems = [*warned.messages]
    if outcome.status != "finished" or outcome.steps != steps:
        problems.append(f"run {outcome.status} after {outcome.steps} steps")
    problems += _check_outputs(kinds, spec, store, mlflow_uri)
    return Sample(
        step_ms=step_s * 1e3,
        step_cpu_ms=(c2 - c1) / (steps - 2) * 1e3,
        startup_s=w1 - t0 - step_s,
        winddown_s=t1 - w2 - step_s,
        problem="; ".join(problems),
    )


def _check_outputs(kinds, spec: RunSpec, store: Store, mlflow_uri: str) -> list[str]:
    """What each sink should have left: a row per step in Parquet and in MLflow, an
    event file, a W&B run file. Returns what is missing."""
    problems = []
    rows = store.metrics([spec.run_id], columns=["step"]).num_rows
    if rows != spec.steps:
        problems.append(f"{rows} Parquet rows, not {spec.steps}")
    run_dir = Path(store.root) / "runs" / spec.run_id
    if "tensorboard" in kinds and not list((run_dir / "tensorboard").glob("events.out.*")):
        problems.append("no TensorBoard event file")
    if "wandb" in kinds and not list(run_dir.glob(f"wandb/offline-run-*/run-{spec.run_id}.wandb")):
        problems.append("no W&B offline run file")
    if "mlflow" in kinds:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        found = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`orch.run_id` = '{spec.run_id}'"
        )
        logged = len(client.get_metric_history(found[0].info.run_id, "loss.train")) if found else 0
        if logged != spec.steps:
            problems.append(f"MLflow has {logged} loss rows, not {spec.steps}")
    return problems


def import_s(kind: str) -> float:
    """Seconds to import a sink's modules in a fresh interpreter that has imported torch."""
    names = ", ".join(IMPORTS[kind])
    code = (
        "import time, torch\n"
        "t0 = time.perf_counter()\n"
        f"import {names}\n"
        "print(time.perf_counter() - t0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return float(proc.stdout.strip().splitlines()[-1])


@dataclasses.dataclass
class Results:
    installed: tuple[str, ...]
    imports: dict[str, float]  # seconds, fresh interpreter
    preloaded: tuple[str, ...]  # sinks whose modules a no-sink run had already loaded
    first: dict[str, Sample]  # the untimed first run of each sink alone
    samples: dict[str, list[Sample]]


def measure(steps: int, repeats: int) -> Results:
    installed = tuple(k for k in SINKS if all(importlib.util.find_spec(p) for p in PACKAGES[k]))
    kinds = {"none": (), **{k: (k,) for k in installed}, "all": installed}
    variants = [v for v in VARIANTS if v in kinds and not (v == "all" and len(installed) < 2)]
    seeds = iter(range(10**6))
    with tempfile.TemporaryDirectory(prefix="orch-bench-sinks-") as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        one = dict(root=root, mlflow_uri=uri)
        # DeepSpeed's and torch's first-use costs, before anything is compared.
        run_once((), steps=WARMUP_STEPS, seed=next(seeds), **one)
        preloaded = tuple(k for k in installed if IMPORTS[k][0] in sys.modules)
        imports = {k: import_s(k) for k in installed}
        first = {k: run_once((k,), steps=WARMUP_STEPS, seed=next(seeds), **one) for k in installed}
        samples: dict[str, list[Sample]] = {v: [] for v in variants}
        for r in range(repeats):
            for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
                samples[v].append(run_once(kinds[v], steps=steps, seed=next(seeds), **one))
    return Results(installed, imports, preloaded, first, samples)


def _versions(*dists: str) -> list[str]:
    """'name version' of each installed distribution (mlflow may be the -skinny one)."""
    out = []
    for dist in dists:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out.append(f"{dist} {importlib.metadata.version(dist)}")
    return out


def _med(samples: list[Sample], field: str) -> float:
    return statistics.median(getattr(s, field) for s in samples)


def report(
    res: Results,
    *,
    steps: int,
    repeats: int,
    argv: list[str],
    elapsed_s: float,
    load: tuple[float, float],
) -> str:
    names = {
        "none": "no sinks",
        "tensorboard": "TensorBoard (event files)",
        "mlflow": "MLflow (SQLite store)",
        "wandb": "W&B (offline)",
        "all": "all three" if len(res.installed) == 3 else "all installed",
    }
    base = res.samples["none"]
    b_ms, b_cpu = _med(base, "step_ms"), _med(base, "step_cpu_ms")
    b_up, b_down = _med(base, "startup_s"), _med(base, "winddown_s")
    versions = ", ".join(
        _versions("torch", "deepspeed", "tensorboard", "mlflow", "mlflow-skinny", "wandb")
    )
    command = " ".join(["`.venv/bin/python bench/sinks.py", *argv]).rstrip() + "`"
    lines = [
        "## Sinks: what TensorBoard, MLflow and W&B cost a training run (CPU)",
        "",
        f"Command: {command}",
        "",
        f"Model: {SHAPE.n_layer} layers, d_model {SHAPE.d_model}, byte data, {BATCH} x "
        f"{SHAPE.seq_len} tokens/step, DeepSpeed ZeRO-0, 1 rank, 1 thread, in-process "
        f"`workers.train.train`. A metrics row every step (`log_every_steps=1`, the worst "
        f"case), {steps} steps per run; steps 2 to {steps - 1} timed. Median of {repeats} "
        f"interleaved repeat(s). Python {platform.python_version()}; {versions}. Load "
        f"average {load[0]:.1f} at start, {load[1]:.1f} at end, on {os.cpu_count()} cores.",
        "",
        "| sinks | ms/step (wall) | min-max | extra ms/step | x no sinks "
        "| CPU ms/step (+children) | extra CPU ms/step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v, samples in res.samples.items():
        ms, cpu = _med(samples, "step_ms"), _med(samples, "step_cpu_ms")
        lo, hi = min(s.step_ms for s in samples), max(s.step_ms for s in samples)
        extra = "" if v == "none" else f"{ms - b_ms:+.2f}"
        extra_cpu = "" if v == "none" else f"{cpu - b_cpu:+.2f}"
        lines.append(
            f"| {names[v]} | {ms:.2f} | {lo:.2f}-{hi:.2f} | {extra} | {ms / b_ms:.2f} "
            f"| {cpu:.2f} | {extra_cpu} |"
        )
    lines += [
        "",
        "One-off costs, seconds (start-up: train() called to step 1 done, less a step; "
        "wind-down: step S-1 done to train() returned, less a step; a sink's open and close "
        "are these less the same for no sinks; first open: a sink's first run in this "
        "process, its start-up less the no-sink one; import: its modules, in a fresh "
        "interpreter that has imported torch):",
        "",
        "| sinks | start-up | open | wind-down | close | first open in a process | import |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v, samples in res.samples.items():
        up, down = _med(samples, "startup_s"), _med(samples, "winddown_s")
        opened = "" if v == "none" else f"{up - b_up:+.2f}"
        closed = "" if v == "none" else f"{down - b_down:+.2f}"
        first = f"{res.first[v].startup_s - b_up:+.2f}" if v in res.first else ""
        imported = f"{res.imports[v]:.2f}" if v in res.imports else ""
        imported += " (paid without it too)" if v in res.preloaded else ""
        lines.append(
            f"| {names[v]} | {up:.2f} | {opened} | {down:.2f} | {closed} | {first} | {imported} |"
        )
    problems = [
        f"{names[v]}: {s.problem}"
        for v, samples in res.samples.items()
        for s in samples
        if s.problem
    ] + [f"{names[k]} (first run): {s.problem}" for k, s in res.first.items() if s.problem]
    missing = [k for k in SINKS if k not in res.installed]
    lines.append("")
    if res.preloaded:
        lines.append(
            f"- Loaded by a run without sinks already: {', '.join(res.preloaded)} (its "
            "import is paid by every worker where it is installed, sink or not)."
        )
    if missing:
        lines.append(f"- Skipped, not installed: {', '.join(missing)} (`pip install '.[sinks]'`).")
    if problems:
        lines += [f"- Problem: {p}" for p in problems]
    else:
        lines.append(
            "- Every sink wrote every row (event file, MLflow metric history, W&B run file "
            "checked after each run) and none warned."
        )
    lines += [f"- Wall time of this benchmark: {elapsed_s:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    parser.add_argument("--quick", action="store_true", help="50 steps, 1 repeat (smoke test)")
    args = parser.parse_args(argv)
    steps, repeats = (50, 1) if args.quick else (args.steps, args.repeats)
    if steps < 4 or repeats < 1:
        parser.error("--steps must be at least 4 and --repeats at least 1")
    logging.basicConfig(level=logging.WARNING)
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    with stdout_to_stderr():
        res = measure(steps, repeats)
    argv = sys.argv[1:] if argv is None else argv
    print(
        report(
            res,
            steps=steps,
            repeats=repeats,
            argv=argv,
            elapsed_s=time.monotonic() - t0,
            load=(load0, os.getloadavg()[0]),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
