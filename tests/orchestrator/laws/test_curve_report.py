"""`orch fit EXPERIMENT --curves`: the curve law on an experiment's stored loss curves."""

from __future__ import annotations

import re

import pytest

from orchestrator.cli import main
from orchestrator.laws.base import FitError
from orchestrator.laws.curve_report import fit_curves_path
from storage.store import Store
from tests.orchestrator.laws.test_curves import TRUTH, WIDTHS, simulate, spec


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Finished constant and cosine runs of every width, and one WSD run cut at 30%."""
    root = tmp_path_factory.mktemp("curve-report") / "exp"
    store = Store(str(root))
    simulate(store, [spec(w, kind) for w in WIDTHS for kind in ("constant", "cosine")])
    running = spec(32, "wsd")
    store.write_spec(running.run_id, running.to_json())
    cut = running.steps * 3 // 10 // 10 * 10  # its last logged step
    with store.metrics_writer(running.run_id, attempt=0) as writer:
        for step in range(10, cut + 1, 10):
            loss = float(TRUTH.curve(running)[step])
            writer.write(
                {"step": step, "loss": loss, "eval_loss": loss if step % 30 == 0 else None}
            )
    store.rebuild_summary()
    return root, running, cut


def test_orch_fit_curves_prints_the_law_each_runs_final_loss_and_the_frontier(experiment, capsys):
    root, running, cut = experiment
    assert main(["fit", str(root), "--curves", "--bootstrap", "40"]) == 0
    out = capsys.readouterr().out
    words = " ".join(out.split())  # titles wrap at their table's width
    assert "annealing law, lam 0.99: 11 runs (11 eval)" in words
    for name in ("E", "A_N", "a", "A", "alpha", "C", "gamma"):
        assert re.search(rf"^\|\s+{name} \|", out, re.MULTILINE), name
    assert re.search(rf"{running.run_id} .*\| +{cut}/{running.steps} \|", out)
    assert "compute-optimal frontier for cosine to 0.1 of peak lr 0.01" in words


def test_the_report_predicts_the_running_runs_final_loss(experiment):
    root, running, _ = experiment
    report = fit_curves_path(str(root), bootstrap=40)
    (row,) = report.running  # the finished runs are not listed
    assert row.run_id == running.run_id
    expected = TRUTH.expected_loss(running)  # its rows were written without noise
    assert row.final.mean == pytest.approx(expected, rel=0.01)
    assert row.final.lo <= expected <= row.final.hi and row.last_step < row.total_steps
    assert report.n_bootstrap == 40 and [p.name for p in report.params][-2:] == ["C", "gamma"]
    assert report.frontier[0].n_opt.lo < report.frontier[0].n_opt.mean < report.frontier[0].n_opt.hi


def test_curves_is_for_experiments_and_takes_no_form(tmp_path, experiment, capsys):
    root, _, _ = experiment
    assert main(["fit", str(root), "--curves", "--form", "kaplan"]) == 1
    assert "--curves takes no --form" in capsys.readouterr().err
    table = tmp_path / "points.csv"
    table.write_text("N,D,loss\n1,2,3\n")
    with pytest.raises(FitError):
        fit_curves_path(table)
