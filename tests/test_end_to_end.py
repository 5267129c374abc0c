"""The whole slice on real parts: plan -> local Ray -> DeepSpeed (runs on 2 gloo ranks,
ZeRO-2) -> Parquet -> summary -> Chinchilla fit; then a second submit reuses every run."""

import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from orchestrator.adaptive.submit import submit
from orchestrator.laws.compare import LAWS
from orchestrator.laws.isoflop import isoflop_profiles
from orchestrator.planning import load_plan
from orchestrator.planning.expand import expand_plan
from orchestrator.scheduler.base import RunState
from storage.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


# plans/local.yaml's grid one step down in compute: the sizes around each level's optimum
# (measured on this corpus: about 3K parameters at 2e10 FLOPs, 6K at 6e10).
_SMALL_GRID = """grid:
  compute_flops: [2e10, 6e10]
  sizes:
    - {n_layer: 1, d_model: 12, n_head: 2, levels: [2e10]}
    - {n_layer: 1, d_model: 16, n_head: 2}
    - {n_layer: 2, d_model: 16, n_head: 2}
    - {n_layer: 2, d_model: 24, n_head: 2, world_size: 2, zero_stage: 2}
    - {n_layer: 3, d_model: 32, n_head: 2, levels: [6e10]}

"""


def _tiny_plan(tmp_path: Path) -> Path:
    """plans/local.yaml shrunk: two smaller compute levels, frequent logging."""
    text = (ROOT / "plans" / "local.yaml").read_text()
    text = text.replace("store: ./experiments", f"store: {tmp_path / 'experiments'}")
    text = re.sub(r"(?ms)^grid:.*?(?=^train:)", _SMALL_GRID, text)
    text = text.replace("log_every_steps: 10", "log_every_steps: 4")
    # Every sink, fed from rank 0 inside the Ray actors (read back in the test).
    text += (
        "logging:\n  sinks:\n    - tensorboard\n"
        f"    - {{kind: mlflow, tracking_uri: 'sqlite:///{tmp_path}/mlflow.db'}}\n"
        "    - {kind: wandb, mode: offline}\n"
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def test_submit_trains_stores_fits_and_then_reuses_every_run(tmp_path, ray_local):
    plan = load_plan(_tiny_plan(tmp_path))
    result = submit(plan)

    specs = expand_plan(plan).specs
    assert len(specs) == 8
    assert any(s.world_size == 2 and s.zero_stage == 2 for s in specs)
    assert [v.state for v in result.execution.runs] == [RunState.FINISHED] * 8, [
        v.detail for v in result.execution.runs
    ]

    store = Store(plan.experiment_uri)
    summary = store.summary()
    assert sorted(summary.column("run_id").to_pylist()) == sorted(s.run_id for s in specs)
    assert pc.all(pc.equal(summary["status"], "finished")).as_py()
    two_rank = [r for r in summary.to_pylist() if r["world_size"] == 2]
    assert two_rank and all(r["zero_stage"] == 2 for r in two_rank)

    for spec in specs:
        curve = store.metrics([spec.run_id], columns=["step", "loss"]).to_pylist()
        assert curve[-1]["step"] == spec.steps
        assert curve[-1]["loss"] < curve[0]["loss"], f"run {spec.run_id} did not learn"

    assert result.fit is not None, result.fit_error
    params = {p.name: p.value for p in result.fit.params}
    # AutoLaw's chosen form, whichever its backtests of 8 tiny runs favour: its parameters.
    assert result.fit.form == "auto" and result.fit.chosen in LAWS
    assert set(params) == set(LAWS[result.fit.chosen].form_class.public_names)
    assert all(math.isfinite(v) for v in params.values())
    # A result worth reading: no parameter at a bound, nothing that makes the fit unreliable
    # (8 runs for 5 parameters only earns the caution that covariance intervals are rough).
    assert result.fit.reliable, result.fit.warnings
    assert not [w for w in result.fit.warnings if "bound" in w], result.fit.warnings
    # Each level's IsoFLOP minimum lies inside its sampled sizes: the grid straddles it.
    rows = summary.to_pylist()
    profiles = isoflop_profiles(
        np.array([r["n_params"] for r in rows], float),
        np.array([r["tokens"] for r in rows], float),
        np.array([r["eval_loss"] for r in rows], float),
    )
    assert len(profiles) == 2
    for p in profiles:
        assert p.used and p.n_params.min() < p.n_opt < p.n_params.max(), (p.flops, p.n_opt)
    assert list((Path(plan.experiment_uri) / "fits").glob("*.json"))

    # The same plan again: every run is found finished in the store; nothing is started.
    again = submit(plan, on_start=lambda url: pytest.fail("Ray backend started for no work"))
    assert all(v.reused and v.state == RunState.FINISHED for v in again.execution.runs)
    assert again.summary.num_rows == 8

    _every_run_reached_every_sink(plan, tmp_path)

    # Caught mid-run: one run rewound to half its curve, as the store looks while it
    # trains. `orch status` predicts its final loss from that half and the finished runs.
    _status_predicts_the_final_loss_of_a_running_run(Path(plan.experiment_uri), tmp_path)


def _every_run_reached_every_sink(plan, tmp_path: Path):
    from mlflow.tracking import MlflowClient

    specs = expand_plan(plan).specs
    runs = Path(plan.experiment_uri) / "runs"
    for spec in specs:
        assert list((runs / spec.run_id / "tensorboard").glob("events.out.tfevents.*"))
        assert list((runs / spec.run_id).glob(f"wandb/offline-run-*/run-{spec.run_id}.wandb"))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name(plan.name)
    found = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in found) == sorted(s.run_id for s in specs)
    assert {r.info.status for r in found} == {"FINISHED"}


def _status_predicts_the_final_loss_of_a_running_run(experiment: Path, tmp_path: Path):
    from orchestrator.report.status import read_status
    from tests.orchestrator.report.conftest import rewind

    copy = tmp_path / "caught" / experiment.name
    shutil.copytree(experiment, copy)
    (copy / "summary.parquet").unlink()
    store = Store(str(copy))
    final = {r["run_id"]: r["eval_loss"] for r in Store(str(experiment)).summary().to_pylist()}
    # The largest run: the one whose end a user most wants before it comes.
    run_id = max(final, key=lambda i: store.run_summary(i)["n_params"])
    rewind(store, run_id, started=time.time() - 30.0)
    status = read_status(store)
    (row,) = [r for r in status.runs if r.state is RunState.RUNNING]
    assert row.run_id == run_id and status.curve_note == ""
    p = row.predicted_final
    assert p is not None and p.lo < p.mean < p.hi, p
    # Within a few percent of the loss the run really ended at (bench/curves.py measures
    # the accuracy; this checks the prediction is of this run, in its own units).
    assert abs(p.mean / final[run_id] - 1) < 0.1, (p, final[run_id])
    assert all(r.predicted_final is None for r in status.runs if r.run_id != run_id)
