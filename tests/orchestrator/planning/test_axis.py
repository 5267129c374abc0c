"""The plan's compute axis: the fits count C as the plan budgets it."""

from pathlib import Path

import numpy as np
import pytest

from orchestrator.laws.axis import SIX_ND, ComputeAxis
from orchestrator.laws.base import FitError
from orchestrator.planning import load_plan
from orchestrator.planning.axis import compute_axis
from orchestrator.planning.expand import expand_plan
from tests.plans import plan_text

ROOT = Path(__file__).resolve().parents[3]


def _plan(tmp_path, name, method):
    text = plan_text(name)
    text = "\n".join(
        f"flops_method: {method}" if line.startswith("flops_method:") else line
        for line in text.splitlines()
    )
    path = tmp_path / name
    path.write_text(text + "\n")
    return load_plan(path)


def test_a_6nd_plan_fits_on_6nd():
    assert compute_axis(load_plan(ROOT / "plans" / "local.yaml")) == SIX_ND
    assert SIX_ND.per_token is None
    assert SIX_ND.flops(1e6, 2e7) == pytest.approx(6 * 1e6 * 2e7)


@pytest.mark.parametrize("method", ["chinchilla", "6nd_total"])
@pytest.mark.parametrize("name", ["chinchilla.yaml", "local.yaml"])
def test_the_axis_gives_every_planned_run_its_planned_flops(tmp_path, name, method):
    # Seed grids (chinchilla, adaptive) read the shape rule; explicit grids (local) their
    # own shapes. Either way the fit's C of a planned run is the C the planner budgeted.
    plan = _plan(tmp_path, name, method)
    axis = compute_axis(plan)
    assert axis.name == method and axis.per_token is not None
    runs = expand_plan(plan).runs
    n = np.array([r.n_params for r in runs], dtype=float)
    d = np.array([r.spec.tokens for r in runs], dtype=float)
    planned = np.array([r.flops for r in runs])
    # Exact where the axis sampled the run's own shape; between samples the ratio C / 6ND
    # is interpolated in log N (it steps with the rule's discrete widths).
    assert axis.flops(n, d) == pytest.approx(planned, rel=0.05)
    assert np.all(axis.flops(n, d) > 6 * n * d)  # both counts add to 6 N D
    assert axis.tokens(n, planned) == pytest.approx(d, rel=0.05)


def test_an_axis_from_runs_reproduces_their_flops_and_holds_beyond_them():
    n = np.array([1e4, 1e5, 1e6, 1e5])
    d = np.array([1e6, 1e7, 1e8, 3e7])
    ratio = np.array([4.0, 2.0, 1.5, 2.0])
    axis = ComputeAxis.from_runs(n, d, 6 * n * d * ratio)
    assert axis.flops(n, d) == pytest.approx(6 * n * d * ratio)
    assert axis.flops(1e9, 1.0) == pytest.approx(6e9 * 1.5)  # held at the largest run's
    assert axis.flops(3e3, 1.0) == pytest.approx(6 * 3e3 * 4.0)
    assert ComputeAxis.from_runs(n, d, 6 * n * d) == ComputeAxis("runs")  # exactly 6ND


def test_bad_runs_make_no_axis():
    with pytest.raises(FitError, match="flops must be"):
        ComputeAxis.from_runs([1e4, 1e5], [1e6, 1e7], [1e11, -1.0])
    with pytest.raises(FitError, match="increasing"):
        ComputeAxis("x", (2.0, 1.0), (0.0, 0.0))
