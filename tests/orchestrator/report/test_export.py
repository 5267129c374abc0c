"""Machine-readable reads of a study: `orch status --json`, `orch export`, and one clear
line (exit 1) for a directory that is not an experiment."""

from __future__ import annotations

import json
import shutil

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main
from storage.store import Store
from tests.orchestrator.report.conftest import QUEUED, REPO, RUNNING


def _validated(text: str) -> dict:
    """The JSON `orch status --json` printed, checked against docs/status.schema.json."""
    import jsonschema

    data = json.loads(text)
    schema = json.loads((REPO / "docs" / "status.schema.json").read_text())
    jsonschema.validate(data, schema, format_checker=jsonschema.FormatChecker())
    return data


def test_status_json_has_every_run_the_budget_and_the_fit(finished_study, capsys):
    assert main(["status", str(finished_study), "--json"]) == 0
    data = _validated(capsys.readouterr().out)
    runs = Store(str(finished_study)).run_ids()
    assert sorted(r["run_id"] for r in data["runs"]) == sorted(runs)
    assert data["counts"] == {"finished": len(runs)}
    assert all(r["eval_loss"] > 0 and r["n_params"] > 0 for r in data["runs"])
    assert data["budget"]["spent_flops"] > 0 and data["axis"] == "6nd"
    n_opt = data["fit"]["n_opt"]
    assert n_opt["lo"] < n_opt["mean"] < n_opt["hi"] and n_opt["level"] == 0.95


def test_status_json_of_a_running_study_says_which_runs_run(running_study, capsys):
    assert main(["status", str(running_study), "--json", "--no-fit"]) == 0
    data = _validated(capsys.readouterr().out)
    assert data["counts"]["running"] == RUNNING and data["counts"]["queued"] == QUEUED
    assert data["fit"] is None
    running = [r for r in data["runs"] if r["state"] == "running"]
    assert all(0 < r["progress"] < 1 and r["eta_s"] is not None for r in running)


@pytest.mark.parametrize("command", [["status"], ["report"], ["fit"], ["export", "--out", "x"]])
def test_a_directory_that_is_not_an_experiment_is_one_line_exit_1(command, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an experiment")
    argv = [command[0], str(tmp_path), *command[1:]]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "is not an experiment" in err and err.strip().count("\n") == 0


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_writes_runs_and_curves_deduplicated_across_attempts(finished_study, tmp_path, fmt):
    # A copy of the study in which one run's attempt 1 logged its first steps again.
    root = tmp_path / finished_study.name
    shutil.copytree(finished_study, root)
    store = Store(str(root))
    run_id = store.run_ids()[0]
    first = store.metrics(run_id).slice(0, 3).to_pylist()
    with store.metrics_writer(run_id, attempt=1) as writer:
        for row in first:
            writer.write({k: v for k, v in row.items() if k not in ("run_id", "attempt")})
    assert main(["export", str(root), "--out", str(tmp_path / "out"), "--format", fmt]) == 0
    read = pq.read_table if fmt == "parquet" else pa_csv.read_csv
    runs = read(tmp_path / "out" / f"runs.{fmt}")
    curves = read(tmp_path / "out" / f"curves.{fmt}")
    assert runs.num_rows == len(store.run_ids())
    row = next(r for r in runs.to_pylist() if r["run_id"] == run_id)
    assert row["state"] == "finished" and row["N"] > 0 and row["C"] == pytest.approx(row["C_6nd"])
    assert row["loss"] == row["eval_loss"]
    mine = [r for r in curves.to_pylist() if r["run_id"] == run_id]
    steps = [r["step"] for r in mine]
    assert len(steps) == len(set(steps)) == store.metrics(run_id).num_rows
    assert {r["attempt"] for r in mine if r["step"] in {f["step"] for f in first}} == {1}
