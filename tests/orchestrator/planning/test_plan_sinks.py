"""`logging.sinks` in plans: where rank 0 also sends its rows, checked before any run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from orchestrator.planning import PlanError, load_plan, parse_plan
from orchestrator.planning.expand import expand_plan

_PLAN = """\
name: sinky
store: {store}
grid:
  compute_flops: [1e10, 3e10]
  sizes:
    - {{n_layer: 2, d_model: 32, n_head: 2}}
    - {{n_layer: 2, d_model: 64, n_head: 4}}
train:
  global_batch: 16
{logging}"""


def _load(tmp_path: Path, logging: str, store: str = "./exp"):
    path = tmp_path / "plan.yaml"
    path.write_text(_PLAN.format(store=store, logging=logging))
    return load_plan(path)


def test_every_run_carries_the_sinks_and_keeps_its_id(tmp_path):
    plain = expand_plan(_load(tmp_path, "")).specs
    plan = _load(
        tmp_path,
        "logging:\n"
        "  sinks:\n"
        "    - tensorboard\n"
        "    - {kind: mlflow, tracking_uri: sqlite:///runs/mlflow.db}\n"
        "    - {kind: wandb, project: scaling, dir: wandb-runs}\n",
    )
    specs = expand_plan(plan).specs
    assert [s.run_id for s in specs] == [s.run_id for s in plain]
    tb, ml, wb = specs[0].sinks
    assert (tb.kind, tb.dir, tb.experiment) == ("tensorboard", "", "sinky")
    # Relative paths are the plan's folder's, so every worker writes to the same place.
    assert ml.tracking_uri == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    assert (wb.project, wb.mode, wb.dir) == (
        "scaling",
        "offline",
        str(tmp_path.resolve() / "wandb-runs"),
    )
    assert all(s.sinks == specs[0].sinks for s in specs)


_BAD = [
    ("sinks: [neptune]", ":11 logging.sinks[0].kind: expected one of tensorboard"),
    ("sinks: [{kind: mlflow}]", ":11 logging.sinks[0]: an mlflow sink needs"),
    ("sinks: [tensorboard, tensorboard]", "sinks[1]: the tensorboard sink is named twice"),
    ("sinks: [{kind: tensorboard, project: p}]", "logging.sinks[0].project: unknown key"),
    ("sinks: [{kind: wandb, mode: sometimes}]", "sink mode must be offline or online"),
    ("sinks: tensorboard", "logging.sinks: expected"),
    ("sink: [tensorboard]", "logging.sink: unknown key"),
]


@pytest.mark.parametrize(("logging", "message"), _BAD)
def test_bad_sinks_name_the_file_line_and_key(tmp_path, logging, message):
    with pytest.raises(PlanError, match="plan.yaml") as err:
        _load(tmp_path, f"logging:\n  {logging}\n")
    assert message in str(err.value), str(err.value)


def test_a_sink_whose_package_is_missing_is_refused_before_any_run(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(PlanError) as err:
        _load(tmp_path, "logging:\n  sinks: [tensorboard, wandb]\n")
    assert "logging.sinks[1].kind: the wandb sink needs the 'wandb' package" in str(err.value)
    assert "pip install 'scaling-orch[wandb]'" in str(err.value)


def test_a_file_sink_on_object_storage_needs_a_dir(tmp_path):
    text = _PLAN.format(store="./exp", logging="logging:\n  sinks: [tensorboard]\n")
    with pytest.raises(PlanError, match=r"logging.sinks\[0\]: a tensorboard sink writes files"):
        parse_plan(text, path=str(tmp_path / "p.yaml"), store="s3://bucket/exps")


def test_the_experiments_copy_of_the_plan_sends_to_the_same_places(tmp_path):
    plan = _load(
        tmp_path,
        "logging:\n"
        "  sinks:\n"
        "    - {kind: mlflow, tracking_uri: sqlite:///runs/mlflow.db}\n"
        "    - {kind: wandb, project: scaling, dir: wandb-runs}\n",
    )
    assert f'"{tmp_path.resolve() / "wandb-runs"}"' in plan.text
    (tmp_path / "experiment").mkdir()  # where the copy is read back from
    again = parse_plan(plan.text, path=str(tmp_path / "experiment" / "plan.yaml"))
    assert again.sinks == plan.sinks and again.text == plan.text
