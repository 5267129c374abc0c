"""Sinks: a real training run's rows read back with each tool's own reader, and a sink
that fails costing the run nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from storage.store import Store
from workers.sinks import SCALARS
from workers.spec import RunSpec, SinkSpec, SpecError
from workers.train import train

pytestmark = pytest.mark.slow

STEPS = 12


def _spec(tiny_spec, sinks) -> RunSpec:
    return tiny_spec(tokens=16 * 64 * STEPS, log_every_steps=3, sinks=tuple(sinks))


def _rows(store: Store, spec: RunSpec) -> list[dict]:
    return store.metrics([spec.run_id], columns=["step", *SCALARS]).to_pylist()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run with all three sinks: TensorBoard and W&B (offline) in the run's
    directory, MLflow on a SQLite tracking store."""
    from tests.specs import tiny_spec

    root = tmp_path_factory.mktemp("sinks")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    sinks = [
        SinkSpec(kind="tensorboard"),
        SinkSpec(kind="mlflow", tracking_uri=uri, experiment="sinks-test"),
        SinkSpec(kind="wandb", experiment="sinks-test", mode="offline"),
    ]
    spec = _spec(tiny_spec, sinks)
    store = Store(str(root / "exp"))
    outcome = train(spec, store, threads=1)
    assert outcome.status == "finished"
    return spec, store, uri, Path(store.root) / "runs" / spec.run_id


def test_sinks_do_not_change_the_run_id(tiny_spec):
    plain = _spec(tiny_spec, [])
    with_sinks = _spec(tiny_spec, [SinkSpec(kind="tensorboard")])
    assert plain.run_id == with_sinks.run_id
    assert RunSpec.from_json(with_sinks.to_json()) == with_sinks


def test_tensorboard_event_files_hold_every_row(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec, store, _, run_dir = trained
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    rows = _rows(store, spec)
    for column, tag in SCALARS.items():
        want = [(r["step"], r[column]) for r in rows if r[column] is not None]
        got = [(e.step, e.value) for e in events.Scalars(tag)] if want else []
        assert [s for s, _ in got] == [s for s, _ in want], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), tag


def test_mlflow_has_one_run_with_the_spec_as_params_and_every_row(trained):
    from mlflow.tracking import MlflowClient

    spec, store, uri, _ = trained
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("sinks-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == spec.run_id
    assert run.data.tags["orch.run_id"] == spec.run_id
    assert run.data.params["shape.n_layer"] == str(spec.shape.n_layer)
    rows = _rows(store, spec)
    history = client.get_metric_history(run.info.run_id, "loss.train")
    assert [m.step for m in history] == [r["step"] for r in rows]
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in rows], rel=1e-9)


def test_wandb_offline_run_holds_the_config_and_every_row(trained):
    from tests.workers.wandb_records import history, records, run_record

    spec, store, _, run_dir = trained
    (path,) = run_dir.glob(f"wandb/offline-run-*/run-{spec.run_id}.wandb")
    run = run_record(path)
    assert (run.run_id, run.run_group, run.project) == (spec.run_id, "sinks-test", "sinks-test")
    config = {item.key: item.value_json for item in run.config.update}
    assert config["shape.n_layer"] == str(spec.shape.n_layer)
    logged = history(path)
    rows = _rows(store, spec)
    assert [h["_step"] for h in logged] == [r["step"] for r in rows]
    assert [h["loss/train"] for h in logged] == pytest.approx([r["loss"] for r in rows])
    kinds = [r.WhichOneof("record_type") for r in records(path)]
    assert kinds[-1] == "exit"


def test_a_sink_that_fails_costs_the_run_nothing_and_warns_once(
    tmp_path, tiny_spec, monkeypatch, caplog
):
    """TensorBoard raising on every scalar, and an MLflow store that cannot be opened:
    the run finishes with every row in Parquet, and each failure is logged once."""
    from torch.utils.tensorboard import SummaryWriter

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    sinks = [
        SinkSpec(kind="tensorboard"),
        SinkSpec(kind="mlflow", tracking_uri=f"sqlite:///{not_a_dir}/sub/mlflow.db"),
    ]
    spec = _spec(tiny_spec, sinks)
    store = Store(str(tmp_path / "exp"))
    with caplog.at_level(logging.WARNING, logger="workers.sinks"):
        outcome = train(spec, store, threads=1)
    assert outcome.status == "finished"
    assert [r["step"] for r in _rows(store, spec)] == list(range(3, STEPS + 1, 3))
    failures = [r.getMessage() for r in caplog.records if "sink failed" in r.getMessage()]
    assert len(failures) == 2, failures
    assert failures[0].startswith("mlflow sink failed") or failures[1].startswith("mlflow")
    assert any("disk full" in f for f in failures)


def test_bad_sink_specs_are_refused(tiny_spec):
    with pytest.raises(SpecError, match="sink kind must be one of"):
        _spec(tiny_spec, [SinkSpec(kind="neptune")])
    with pytest.raises(SpecError, match="needs a tracking_uri"):
        _spec(tiny_spec, [SinkSpec(kind="mlflow")])
