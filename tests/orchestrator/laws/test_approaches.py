"""`orch fit --approach envelope | isoflop` on a simulated experiment with curves."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from orchestrator.laws.approaches import fit_approach
from orchestrator.laws.base import FitError

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """plans/simulated.yaml's 35 runs on the SimulatedBackend, curves written."""
    from orchestrator.adaptive.submit import submit
    from orchestrator.planning import load_plan
    from orchestrator.scheduler.simulated import SimulatedBackend

    tmp = tmp_path_factory.mktemp("approaches")
    text = (ROOT / "plans" / "simulated.yaml").read_text()
    (tmp / "p.yaml").write_text(text.replace("store: ./experiments", f"store: {tmp}"))
    result = submit(load_plan(tmp / "p.yaml"), backend=SimulatedBackend, poll_s=0.01)
    return result.experiment_uri, result.fit


def test_all_three_approaches_agree_on_how_n_opt_scales(experiment):
    # The simulated truth is Hoffmann et al.'s law: N_opt ~ C^0.46 (beta / (alpha+beta)).
    path, parametric = experiment
    for approach in ("envelope", "isoflop"):
        fit = fit_approach(path, approach, target_flops=1e22)
        assert fit.n_exponent.lo < fit.n_exponent.mean < fit.n_exponent.hi
        assert 0.3 < fit.n_exponent.mean < 0.65, approach
        assert fit.n_exponent.mean + fit.d_exponent.mean == pytest.approx(1.0, abs=1e-6)
        row = next(r for r in fit.frontier if r.flops == 1e22)
        ours = next(r for r in parametric.frontier if r.flops == 1e22)
        # Within a factor of 3 of the parametric fit's N_opt three decades out.
        assert 1 / 3 < row.n_opt.mean / ours.n_opt.mean < 3, approach
        assert fit.axis == "runs (C = 6 N D)"  # the runs' own C, which is 6ND here


def test_orch_fit_prints_the_approach(experiment, capsys):
    from orchestrator.cli import main

    assert main(["fit", experiment[0], "--approach", "envelope"]) == 0
    out = capsys.readouterr().out
    assert "envelope fit on 35 runs" in out and "D_opt ~ C^b" in out


def test_the_envelope_needs_curves_and_says_so(tmp_path):
    path = tmp_path / "runs.csv"
    pa_csv.write_csv(pa.table({"N": [1e8, 2e8], "D": [1e9, 2e9], "loss": [3.0, 2.9]}), path)
    with pytest.raises(FitError, match="the envelope needs training curves"):
        fit_approach(path, "envelope")
    with pytest.raises(FitError, match="unknown approach"):
        fit_approach(path, "approach4")
