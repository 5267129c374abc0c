"""Sinks: rank 0's metric rows also sent to TensorBoard, MLflow or Weights & Biases.

Researchers follow curves where they already look. Each sink named in the spec
(`RunSpec.sinks`, from a plan's `logging.sinks`) gets every row `MetricsLog` writes, as
it is written, and the run's end. The Parquet rows stay the record: a sink that raises
is logged once and dropped for the rest of the attempt, and the run goes on (a
tracking server that goes away must not cost a training run).

- tensorboard: `torch.utils.tensorboard.SummaryWriter` event files, one scalar per
  metric column, at the optimizer step (needs the `tensorboard` package);
- mlflow: one MLflow run per run id (a retried attempt continues it, found by its
  `orch.run_id` tag), the spec as params, tagged with the experiment (`MlflowClient`,
  so no global MLflow state is touched in the worker);
- wandb: one W&B run per run id (its id is the run id, so an attempt resumes it),
  grouped by the experiment, the spec as config; "offline" writes locally for
  `wandb sync`, "online" where the network allows.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from workers.sink_setup import mlflow_experiment_id
from workers.spec import RunSpec, SinkSpec

log = logging.getLogger(__name__)

# Metric columns sent, with the name each tool shows (TensorBoard groups by prefix).
SCALARS = {
    "loss": "loss/train",
    "eval_loss": "loss/eval",
    "lr": "lr",
    "grad_norm": "grad_norm",
    "tokens_per_s": "throughput/tokens_per_s",
    "mfu": "throughput/mfu",
}


class Sinks:
    """The run's sinks behind one guard: `log(row)` per metrics row, `close(status)`."""

    def __init__(self, spec: RunSpec, *, run_dir: Path | None, attempt: int):
        """run_dir: the run's directory in a local store (default place for files), or
        None for a store on object storage (a file sink then needs its `dir`)."""
        self._open: list[tuple[str, Any]] = []
        for sink in spec.sinks:
            opened = self._guard(sink.kind, _OPENERS[sink.kind], sink, spec, run_dir, attempt)
            if opened is not _FAILED:
                self._open.append((sink.kind, opened))

    def _guard(self, kind: str, fn, *args):
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - any failure of a sink's library
            log.warning(
                "%s sink failed (%s: %s); the run goes on without it, its rows are in Parquet",
                kind, type(err).__name__, err,
            )  # fmt: skip
            return _FAILED

    def log(self, row: dict[str, Any]) -> None:
        values = {
            name: float(row[col])
            for col, name in SCALARS.items()
            if row.get(col) is not None and math.isfinite(row[col])
        }
        self._each("log", values, int(row["step"]))

    def close(self, status: str) -> None:
        self._each("close", status)
        self._open = []

    def _each(self, method: str, *args) -> None:
        kept = []
        for kind, sink in self._open:
            if self._guard(kind, getattr(sink, method), *args) is not _FAILED:
                kept.append((kind, sink))
        self._open = kept


_FAILED = object()  # what `_guard` returns for a call that raised


class _TensorBoard:
    def __init__(self, sink: SinkSpec, spec: RunSpec, run_dir: Path | None, attempt: int):
        from torch.utils.tensorboard import SummaryWriter

        logdir = Path(sink.dir) / spec.run_id if sink.dir else _need(run_dir) / "tensorboard"
        # One writer per attempt; TensorBoard merges the event files of a directory.
        self.writer = SummaryWriter(log_dir=str(logdir), filename_suffix=f".attempt{attempt}")

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self, status: str) -> None:
        self.writer.add_text("status", status)
        self.writer.close()


class _MLflow:
    TAG = "orch.run_id"

    def __init__(self, sink: SinkSpec, spec: RunSpec, run_dir: Path | None, attempt: int):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = client = MlflowClient(tracking_uri=sink.tracking_uri)
        name = sink.experiment or "orch"
        experiment_id = mlflow_experiment_id(client, name)
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`{self.TAG}` = '{spec.run_id}'", max_results=1
        )
        if found:  # a later attempt of the same run continues it
            self.run_id = found[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
            return
        tags = {self.TAG: spec.run_id, "orch.experiment": name}
        self.run_id = client.create_run(experiment_id, run_name=spec.run_id, tags=tags).info.run_id
        params = [Param(k, str(v)[:500]) for k, v in _flat(spec.to_dict()).items()]
        client.log_batch(self.run_id, params=params)

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k.replace("/", "."), v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str) -> None:
        self.client.set_terminated(
            self.run_id, status="FINISHED" if status == "finished" else "FAILED"
        )


class _Wandb:
    def __init__(self, sink: SinkSpec, spec: RunSpec, run_dir: Path | None, attempt: int):
        import wandb

        directory = Path(sink.dir) if sink.dir else _need(run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=sink.project or sink.experiment or "orch",
            group=sink.experiment or None,
            name=spec.run_id,
            id=spec.run_id,
            resume="allow",
            mode=sink.mode,
            dir=str(directory),
            config=_flat(spec.to_dict()),
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


_OPENERS = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _Wandb}


def _need(run_dir: Path | None) -> Path:
    if run_dir is None:
        raise ValueError("the store is not a local directory: give the sink a `dir`")
    return run_dir


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested spec fields as dotted keys (shape.n_layer, schedule.kind, ...)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "sinks":
            continue
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
