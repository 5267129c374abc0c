"""What the metric sinks (workers/sinks.py) need set up, torch-free so that the driver
can call it too.

An MLflow tracking store on SQLite is created on first use, and runs that start together
would race to create its tables and the study's experiment; the driver creates both
first (`prepare_sinks`), and each worker finds or creates the experiment the same way
(`mlflow_experiment_id`). A failure in the driver is logged and nothing more: each
worker's sink then fails alone, and a sink never fails a study.
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

            mlflow_experiment_id(MlflowClient(tracking_uri=sink.tracking_uri), sink.experiment)
        except Exception as err:  # noqa: BLE001 - any failure of the tracking store
            log.warning("mlflow sink: cannot prepare %s (%s)", sink.tracking_uri, err)


def mlflow_experiment_id(client, name: str) -> str:
    """The id of MLflow experiment `name` ("" = "orch"), created if it does not exist yet."""
    from mlflow.exceptions import MlflowException

    name = name or "orch"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another process created it in between
        return client.get_experiment_by_name(name).experiment_id
