"""The driver creates each MLflow sink's store and experiment before runs start."""

from __future__ import annotations

import logging

from workers.sink_setup import prepare_sinks
from workers.spec import SinkSpec


def test_the_experiment_exists_before_any_worker_and_preparing_twice_is_harmless(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sinks = (
        SinkSpec(kind="tensorboard"),
        SinkSpec(kind="mlflow", tracking_uri=uri, experiment="e"),
    )
    prepare_sinks(sinks)
    prepare_sinks(sinks)
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment_by_name("e") is not None
    assert [e.name for e in client.search_experiments()].count("e") == 1


def test_a_store_that_cannot_be_opened_is_a_warning_not_an_error(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = SinkSpec(kind="mlflow", tracking_uri=f"sqlite:///{blocker}/sub/mlflow.db")
    with caplog.at_level(logging.WARNING, logger="workers.sink_setup"):
        prepare_sinks((sink,))
    assert any("cannot prepare" in r.getMessage() for r in caplog.records)
