"""The driver's part of the metric sinks (workers/sinks.py): set up once, before runs.

An MLflow tracking store on SQLite is created on first use, and runs that start together
would race to create its tables and the study's experiment; the driver creates both
first. A failure here is logged and nothing more: each worker's sink then fails alone,
and a sink never fails a study.
"""

from __future__ import annotations

import logging

from workers.spec import SinkSpec

log = logging.getLogger(__name__)


def prepare_sinks(sinks: tuple[SinkSpec, ...]) -> None:
    for sink in sinks:
        if sink.kind != "mlflow":
            continue
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=sink.tracking_uri)
            if client.get_experiment_by_name(sink.experiment or "orch") is None:
                client.create_experiment(sink.experiment or "orch")
        except Exception as err:  # noqa: BLE001 - any failure of the tracking store
            log.warning("mlflow sink: cannot prepare %s (%s)", sink.tracking_uri, err)
