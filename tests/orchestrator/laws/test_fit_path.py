"""`fit_path`: what `orch fit PATH` calls, on experiment directories and tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from orchestrator.laws import FitError, FitReport, fit_path


def write_summary(directory, n, d, loss):
    """An experiment summary: 49 finished runs, plus a failed one and one without eval."""
    count = n.size
    eval_loss = list(loss) + [None, 3.0]
    eval_loss[0] = None  # the first run falls back to its final loss
    final_loss = list(loss) + [None, None]
    table = pa.table(
        {
            "run_id": [f"run{i:03d}" for i in range(count + 2)],
            "n_params": pa.array(np.r_[n, 1e8, 1e8].astype(np.int64)),
            "tokens": pa.array(np.r_[d, 1e9, 1e9].astype(np.int64)),
            "flops": pa.array(6 * np.r_[n, 1e8, 1e8] * np.r_[d, 1e9, 1e9]),
            "final_loss": pa.array(final_loss, pa.float64()),
            "eval_loss": pa.array(eval_loss, pa.float64()),
            "status": ["finished"] * count + ["failed", "running"],
        }
    )
    pq.write_table(table, directory / "summary.parquet")


def test_experiment_directory_fits_finished_runs_with_eval_loss_fallback(tmp_path, simulated_runs):
    n, d, loss = simulated_runs(seed=0)
    write_summary(tmp_path, n, d, loss)
    report = fit_path(tmp_path)
    assert isinstance(report, FitReport)
    assert report.n_obs == 49 and report.n_dropped == 2
    assert report.record.run_ids[0] == "run000" and len(report.record.run_ids) == 49
    assert report.record_path == tmp_path / "fits" / f"{report.record.fit_id}.json"
    assert {p.name for p in report.params} == {"E", "A", "B", "alpha", "beta"}
    alpha = next(p for p in report.params if p.name == "alpha")
    assert alpha.lo < alpha.value < alpha.hi


def test_a_run_written_twice_to_the_summary_counts_once(tmp_path, simulated_runs):
    n, d, loss = simulated_runs(seed=0)
    write_summary(tmp_path, n, d, loss)
    table = pq.read_table(tmp_path / "summary.parquet")
    pq.write_table(pa.concat_tables([table, table.slice(5, 1)]), tmp_path / "summary.parquet")
    assert fit_path(tmp_path).n_obs == 49


def test_frontier_table_spans_three_decades_above_the_data_plus_targets(tmp_path, simulated_runs):
    n, d, loss = simulated_runs(seed=0)
    write_summary(tmp_path, n, d, loss)
    report = fit_path(tmp_path, target_flops=5e25)
    budgets = [row.flops for row in report.frontier]
    top = float(np.max(6 * n.astype(np.int64) * d.astype(np.int64).astype(float)))
    assert budgets[0] == pytest.approx(top, rel=1e-6)
    assert budgets[-2] == pytest.approx(1000 * top, rel=1e-6) and budgets[-1] == 5e25
    for row in report.frontier:
        assert row.n_opt.lo < row.n_opt.mean < row.n_opt.hi
        assert row.loss_opt.level == 0.95


def test_csv_with_compute_column_and_parquet_with_tokens_give_the_same_fit(
    tmp_path, simulated_runs
):
    n, d, loss = simulated_runs(seed=2)
    pa_csv.write_csv(pa.table({"N": n, "C": 6 * n * d, "loss": loss}), tmp_path / "runs.csv")
    pq.write_table(pa.table({"N": n, "D": d, "loss": loss}), tmp_path / "runs.parquet")
    from_csv = fit_path(tmp_path / "runs.csv")
    from_parquet = fit_path(tmp_path / "runs.parquet")
    assert from_csv.record.run_ids == ()
    for a, b in zip(from_csv.params, from_parquet.params, strict=True):
        assert a.value == pytest.approx(b.value, rel=1e-6)
    assert from_csv.record_path.parent == tmp_path / "fits"


def test_bootstrap_option_switches_to_percentile_intervals(tmp_path, simulated_runs):
    n, d, loss = simulated_runs(seed=2)
    pq.write_table(pa.table({"N": n, "D": d, "loss": loss}), tmp_path / "runs.parquet")
    report = fit_path(tmp_path / "runs.parquet", bootstrap=50, seed=1, form="kaplan")
    assert report.form == "kaplan" and report.interval_method == "bootstrap"
    assert report.record.bootstrap["n_resamples"] == 50


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"N": [1.0], "loss": [2.0]}, r"missing column\(s\) \['C'\]"),
        ({"N": [1.0], "D": [1.0], "L": [2.0]}, r"missing column\(s\) \['loss'\]"),
    ],
)
def test_missing_columns_are_named(tmp_path, columns, message):
    pq.write_table(pa.table(columns), tmp_path / "bad.parquet")
    with pytest.raises(FitError, match=message):
        fit_path(tmp_path / "bad.parquet")


def test_bad_paths_and_forms_fail_with_one_clear_line(tmp_path):
    with pytest.raises(FitError, match="is not an experiment"):
        fit_path(tmp_path)
    with pytest.raises(FitError, match="no such file"):
        fit_path(tmp_path / "nope.csv")
    (tmp_path / "x.txt").write_text("N,D,loss\n")
    with pytest.raises(FitError, match="expected a .csv or .parquet"):
        fit_path(tmp_path / "x.txt")
    with pytest.raises(FitError, match="unknown form"):
        fit_path(tmp_path, form="gpt")


def test_non_positive_values_name_the_file_and_row(tmp_path):
    pa_csv.write_csv(
        pa.table({"N": [1e8, -1.0] * 3, "D": [1e9] * 6, "loss": [3.0] * 6}), tmp_path / "runs.csv"
    )
    with pytest.raises(FitError, match=r"runs.csv: n_params\[1\] = -1.0"):
        fit_path(tmp_path / "runs.csv")


def test_form_auto_reports_every_forms_backtest_and_prints_the_table(
    tmp_path, simulated_runs, capsys
):
    from orchestrator.cli import main

    n, d, loss = simulated_runs(seed=0)
    path = tmp_path / "runs.csv"
    pa_csv.write_csv(pa.table({"N": n, "D": d, "loss": loss}), path)
    report = fit_path(path, form="auto")
    forms = {"chinchilla", "farseer", "overtraining"}  # auto.DEFAULT_FORMS
    assert report.chosen in forms and {row.form for row in report.backtest} == forms
    assert abs(sum(row.weight for row in report.backtest) - 1) < 1e-9
    assert main(["fit", str(path), "--form", "auto"]) == 0
    out = capsys.readouterr().out
    assert "backtest" in out and f"auto ({report.chosen}) fit" in out


def test_the_fit_reads_n_opt_on_the_axis_the_runs_were_counted_on(tmp_path, simulated_runs):
    # Runs whose C is 3x 6ND at the smallest N and 1.2x at the largest (embeddings and
    # attention, as the appendix F count gives small models): the runs' own C sets the
    # frontier's budgets, N_opt and the record's axis, not 6ND.
    from orchestrator.laws.axis import SIX_ND, ComputeAxis

    n, d, loss = simulated_runs(seed=0)
    ratio = np.exp(np.interp(np.log(n), np.log([n.min(), n.max()]), np.log([3.0, 1.2])))
    c = 6 * n * d * ratio
    pq.write_table(pa.table({"N": n, "D": d, "C": c, "loss": loss}), tmp_path / "runs.parquet")
    on_runs = fit_path(tmp_path / "runs.parquet", form="chinchilla", target_flops=1e24)
    on_6nd = fit_path(tmp_path / "runs.parquet", form="chinchilla", target_flops=1e24, axis=SIX_ND)
    assert on_runs.axis.startswith("runs (C / 6ND 3") and on_runs.record.axis == on_runs.axis
    assert on_6nd.axis == "6nd"
    assert on_runs.frontier[0].flops == pytest.approx(c.max())
    at_runs = next(row for row in on_runs.frontier if row.flops == 1e24)
    at_6nd = next(row for row in on_6nd.frontier if row.flops == 1e24)
    axis = ComputeAxis.from_runs(n, d, c)
    # The same law, read on each axis: D_opt spends the budget on the runs' count.
    assert axis.flops(at_runs.n_opt.mean, at_runs.d_opt.mean) == pytest.approx(1e24, rel=1e-3)
    assert at_runs.n_opt.mean != pytest.approx(at_6nd.n_opt.mean, rel=0.01)


def test_orch_fit_on_an_experiment_counts_c_as_its_plan_does(tmp_path, capsys):
    # A simulated study of a plan that counts compute by the appendix F op count: `orch
    # fit` reads the stored plan and fits on its axis, and says so.
    from pathlib import Path

    from orchestrator.adaptive.submit import submit
    from orchestrator.cli import main
    from orchestrator.planning import load_plan
    from orchestrator.scheduler.simulated import SimulatedBackend

    text = (Path(__file__).resolve().parents[3] / "plans" / "simulated.yaml").read_text()
    text = text.replace("flops_method: 6nd", "flops_method: chinchilla")
    assert "flops_method: chinchilla" in text
    (tmp_path / "p.yaml").write_text(text.replace("store:", f"store: {tmp_path} #", 1))
    plan = load_plan(tmp_path / "p.yaml")
    result = submit(plan, backend=lambda store: SimulatedBackend(store), poll_s=0.01)
    assert result.fit is not None and result.fit.axis.startswith("chinchilla (C / 6ND")
    assert main(["fit", result.experiment_uri, "--form", "chinchilla"]) == 0
    out = capsys.readouterr().out
    assert "C counted as chinchilla" in out


def test_lineages_from_a_group_column_or_stored_specs_reach_the_fit_and_its_record(tmp_path):
    """A parent and its cooldown branches share seed noise: a table's `group` column, or
    an experiment's specs (`branch_from`), make `orch fit` count them as one lineage."""
    import json

    from tests.orchestrator.laws.branches import branch_study

    n, d, loss, labels = branch_study(seed=0)
    csv = tmp_path / "runs.csv"
    pa_csv.write_csv(pa.table({"N": n, "D": d, "loss": loss, "group": list(labels)}), csv)
    grouped = fit_path(csv, form="chinchilla")
    assert grouped.record.lineages["count"] == len(set(labels)) < n.size
    no_group = tmp_path / "plain.csv"
    pa_csv.write_csv(pa.table({"N": n, "D": d, "loss": loss}), no_group)
    plain = fit_path(no_group, form="chinchilla")
    assert plain.record.lineages is None

    exp = tmp_path / "exp"
    exp.mkdir()
    write_summary(exp, n, d, loss)
    run_ids = [f"run{i:03d}" for i in range(n.size)]
    first = {}
    for run_id, label in zip(run_ids, labels, strict=True):
        parent = first.setdefault(label, run_id)
        spec = {"branch_from": "" if parent == run_id else parent}
        (exp / "runs" / run_id).mkdir(parents=True)
        (exp / "runs" / run_id / "spec.json").write_text(json.dumps(spec))
    auto = fit_path(exp)  # form="auto": every form is fitted with the lineages
    assert auto.record.lineages["count"] == len(set(labels))


def test_orch_fit_leaves_out_an_under_trained_edge_and_can_be_told_not_to(tmp_path, capsys):
    from orchestrator.cli import main

    # Chinchilla's surface, 6 sizes x 7 ratios (2-128 tokens per parameter); the runs at 2
    # lose 6-10% more (an under-trained edge, as in Gadre et al.'s sweeps: domain.py).
    rng = np.random.default_rng(0)
    n = np.repeat(np.geomspace(1e7, 1e9, 6), 7)
    ratio = np.tile(2.0 ** np.arange(1, 8), 6)
    loss = (1.8 + 400 * n**-0.34 + 400 * (n * ratio) ** -0.28) * np.exp(
        0.005 * rng.standard_normal(n.size)
    )
    loss = np.where(ratio == 2, loss * rng.uniform(1.06, 1.10, n.size), loss)
    path = tmp_path / "runs.csv"
    pa_csv.write_csv(pa.table({"N": n, "D": n * ratio, "loss": loss}), path)

    assert main(["fit", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "6 runs with fewer than 4 tokens per parameter are left out" in out
    assert main(["fit", str(path), "--min-tokens-per-param", "none"]) == 0
    assert "left out" not in capsys.readouterr().out
    # A number applies to a single form as well: 18 runs under 10 tokens per parameter.
    report = fit_path(path, form="chinchilla", min_tokens_per_param=10)
    assert report.n_obs == n.size - 18 and report.n_dropped == 18
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        main(["fit", str(path), "--min-tokens-per-param", "0"])
    assert exit_info.value.code == 2
    assert "expected a number > 0" in capsys.readouterr().err


def test_a_chosen_form_fitted_at_a_bound_reports_its_bootstrap_intervals(tmp_path):
    # The synthetic Farseer truth's 21 smallest runs (tests/orchestrator/laws/test_auto.py):
    # the backtests choose Chinchilla, whose fit sits at a bound, so no covariance
    # interval; AutoLaw reads it off its bootstrap ensemble, and `orch fit` reports the
    # same intervals.
    sizes = np.repeat(np.geomspace(1e8, 4e9, 7), 6)
    tokens = sizes * np.tile(np.geomspace(2.5, 80, 6), 7)
    k = np.exp(-0.02 * sizes**0.1 - 1.0)
    truth = np.exp(100 * sizes**-0.3 + np.log(1.5)) + np.exp(0.5 * sizes**0.1 + 3.0) * tokens**-k
    loss = truth * np.exp(0.005 * np.random.default_rng(0).standard_normal(sizes.size))
    first = np.argsort(6 * sizes * tokens)[:21]
    path = tmp_path / "runs.csv"
    pa_csv.write_csv(pa.table({"N": sizes[first], "D": tokens[first], "loss": loss[first]}), path)
    report = fit_path(path)
    assert report.chosen == "chinchilla" and not report.reliable
    assert report.interval_method == "bootstrap"
    assert all(np.isfinite([p.lo, p.hi]).all() for p in report.params)


def test_a_frontier_with_no_optimum_says_so_instead_of_showing_inf_bare(tmp_path):
    # Runs whose loss does not depend on D: along every iso-FLOP line the fitted loss
    # falls as N grows, to the end of the optimum's search.
    flops = np.repeat(np.logspace(18, 20, 5), 9)
    n = np.sqrt(flops / 120) * np.tile(np.logspace(-0.6, 0.6, 9), 5)
    noise = np.exp(0.003 * np.random.default_rng(0).standard_normal(n.size))
    path = tmp_path / "runs.csv"
    pa_csv.write_csv(
        pa.table({"N": n, "D": flops / (6 * n), "loss": (1.7 + 400 / n**0.34) * noise}), path
    )
    report = fit_path(path, form="farseer")
    assert all(row.n_opt.mean == np.inf and np.isnan(row.loss_opt.mean) for row in report.frontier)
    (said,) = [w for w in report.warnings if w.startswith("no finite N_opt")]
    assert f"at {len(report.frontier)} of the {len(report.frontier)} frontier budgets" in said
