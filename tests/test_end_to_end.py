"""The whole slice on real parts: plan -> local Ray -> DeepSpeed (one run on 2 gloo ranks,
ZeRO-2) -> Parquet -> summary -> Chinchilla fit; then a second submit reuses every run."""

import math
from pathlib import Path

import pyarrow.compute as pc
import pytest

from orchestrator.adaptive.submit import submit
from orchestrator.planning import load_plan
from orchestrator.planning.expand import expand_plan
from orchestrator.scheduler.base import RunState
from storage.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _tiny_plan(tmp_path: Path) -> Path:
    """plans/local.yaml shrunk: two compute levels, short runs, frequent logging."""
    text = (ROOT / "plans" / "local.yaml").read_text()
    text = text.replace("store: ./experiments", f"store: {tmp_path / 'experiments'}")
    text = text.replace("[6e10, 1.8e11, 5.4e11]", "[1.5e10, 3e10]")
    text = text.replace("log_every_steps: 10", "log_every_steps: 4")
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def test_submit_trains_stores_fits_and_then_reuses_every_run(tmp_path, ray_local):
    plan = load_plan(_tiny_plan(tmp_path))
    result = submit(plan)

    specs = expand_plan(plan).specs
    assert len(specs) == 6
    assert any(s.world_size == 2 and s.zero_stage == 2 for s in specs)
    assert [v.state for v in result.execution.runs] == [RunState.FINISHED] * 6, [
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
    assert set(params) == {"E", "A", "B", "alpha", "beta"}
    assert all(math.isfinite(v) for v in params.values())
    assert list((Path(plan.experiment_uri) / "fits").glob("*.json"))

    # The same plan again: every run is found finished in the store; nothing is started.
    again = submit(plan, on_start=lambda url: pytest.fail("Ray backend started for no work"))
    assert all(v.reused and v.state == RunState.FINISHED for v in again.execution.runs)
    assert again.summary.num_rows == 6
