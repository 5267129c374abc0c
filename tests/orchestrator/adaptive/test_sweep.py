"""Reading a finished sweep and its targets for replay: every table `orch fit` reads, and
one clear error, naming the file, for every bad one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.adaptive.sweep import SweepError, load_sweep, load_targets
from orchestrator.adaptive.targets import TargetRun

EPOCH = Path("/work/shared/data/chinchilla_epoch_svg_extracted.csv")
GADRE = Path(__file__).resolve().parents[3] / "bench" / "data" / "gadre2024_overtraining.csv"


def _csv(tmp_path: Path, text: str, name: str = "sweep.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.skipif(not EPOCH.is_file(), reason="the shared Epoch AI data is not here")
def test_the_epoch_csv_reads_as_orch_fit_reads_it():
    sweep = load_sweep(EPOCH)
    assert len(sweep) == 245 and sweep.run_ids[:2] == ("row1", "row2")
    # "Model Size" is N and "Training FLOP" is C; with no D column, D = C / 6N.
    assert sweep.n_params[0] == pytest.approx(6795600349.289497)
    assert sweep.flops[0] == pytest.approx(9.993852799709755e18)
    np.testing.assert_allclose(sweep.tokens, sweep.flops / (6 * sweep.n_params))
    assert sweep.groups == sweep.run_ids  # no group column: every run its own lineage


def test_c_beside_d_is_the_runs_own_count_and_groups_are_lineages(tmp_path):
    path = _csv(
        tmp_path,
        "run_id,N,D,C,loss,group\n"
        "a,1e8,2e9,1.5e18,3.1,\n"
        "b,1e8,4e9,3.0e18,3.0,a\n"
        "c,2e8,4e9,6.0e18,2.9,\n",
    )
    sweep = load_sweep(path)
    assert sweep.run_ids == ("a", "b", "c")
    np.testing.assert_array_equal(sweep.flops, [1.5e18, 3.0e18, 6.0e18])  # not 6 N D
    np.testing.assert_array_equal(sweep.tokens, [2e9, 4e9, 4e9])
    assert sweep.groups == ("a", "a", "c")


def test_an_experiment_directory_reads_its_finished_runs(tmp_path):
    rows = {
        "run_id": ["r1", "r2", "r3"],
        "n_params": [1e6, 2e6, 4e6],
        "tokens": [2e7, 4e7, 8e7],
        "flops": [1.3e14, 5.2e14, 2.1e15],
        "final_loss": [3.0, 2.9, 2.8],
        "eval_loss": [3.1, None, 2.7],
        "status": ["finished", "finished", "failed"],
    }
    pq.write_table(pa.table(rows), tmp_path / "summary.parquet")
    sweep = load_sweep(tmp_path)
    assert sweep.run_ids == ("r1", "r2")
    np.testing.assert_allclose(sweep.loss, [3.1, 2.9])  # eval loss, else the final loss
    np.testing.assert_allclose(sweep.flops, [1.3e14, 5.2e14])
    assert sweep.groups == ("r1", "r2")  # no specs stored: every run its own lineage

    # r2 is a cooldown branch of r1 (its stored spec says so): one lineage.
    for run_id, parent in (("r1", ""), ("r2", "r1")):
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        (tmp_path / "runs" / run_id / "spec.json").write_text(f'{{"branch_from": "{parent}"}}')
    assert load_sweep(tmp_path).groups == ("r1", "r1")


def test_targets_keep_their_losses_apart_where_the_table_has_them(tmp_path):
    path = _csv(tmp_path, "N,D,loss\n7e10,1.4e12,1.9\n1e9,2e10,\n", "targets.csv")
    targets = load_targets(path)
    assert targets.runs == (TargetRun(7e10, 1.4e12), TargetRun(1e9, 2e10))
    assert targets.loss == (1.9, None)
    no_loss = load_targets(_csv(tmp_path, "N,C\n1e9,1.2e20\n", "plain.csv"))
    assert no_loss.runs == (TargetRun(1e9, 2e10),) and no_loss.loss == (None,)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("N,D\n1e8,2e9\n", r"sweep.csv: missing column\(s\) loss; found N, D"),
        ("N,loss\n1e8,3.0\n", r"sweep.csv: missing column\(s\) D \(or C\); found N, loss"),
        ("N,D,loss\n1e8,2e9,3.0\n1e8,lots,3.0\n", r"sweep.csv: column 'D' is not numeric"),
        (
            "N,D,loss\n1e8,2e9,3.0\n-1e8,2e9,3.0\n0,2e9,3.0\n",
            r"sweep.csv: column 'N', data row 2: -1e\+08 is not a finite number > 0 "
            r"\(2 such rows\)",
        ),
        ("N,D,loss\n1e8,2e9,\n", r"sweep.csv: column 'loss', data row 1: nan is not a finite"),
        ("N,D,loss\n", r"sweep.csv: no rows"),
        (
            "run_id,N,D,loss\na,1e8,2e9,3.0\na,2e8,2e9,2.9\n",
            r"sweep.csv: column 'run_id': 'a' in data rows 1 and 2",
        ),
    ],
)
def test_a_bad_sweep_table_is_one_error_naming_the_file_and_the_problem(tmp_path, text, expected):
    path = _csv(tmp_path, text)
    with pytest.raises(SweepError, match=expected) as err:
        load_sweep(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_path_that_is_no_table_is_one_error(tmp_path):
    for path, expected in (
        (tmp_path / "missing.csv", "no such file or directory"),
        (_csv(tmp_path, "N,D,loss\n", "sweep.txt"), "expected a .csv or .parquet file"),
        (_csv(tmp_path, "PAR1 not parquet", "sweep.parquet"), "cannot read it as parquet"),
        (tmp_path, None),  # an empty directory: no experiment (in `orch fit`'s words)
    ):
        with pytest.raises(SweepError, match=expected) as err:
            load_sweep(path)
        assert str(path) in str(err.value)


def test_a_bad_targets_table_is_one_error(tmp_path):
    with pytest.raises(SweepError, match=r"targets.csv: missing column\(s\) N"):
        load_targets(_csv(tmp_path, "D,loss\n2e10,2.0\n", "targets.csv"))
    with pytest.raises(SweepError, match=r"column 'loss', data row 1: -2 is not a finite"):
        load_targets(_csv(tmp_path, "N,D,loss\n1e9,2e10,-2\n", "targets.csv"))
    with pytest.raises(SweepError, match="not a directory"):
        load_targets(tmp_path)


def test_one_sweep_of_a_table_of_several_is_selected_by_a_column(tmp_path):
    sweep = load_sweep(GADRE, where={"dataset": "rpj"})
    assert len(sweep) == 35  # the store's names: n_params is N, tokens is D
    assert sweep.n_params.min() == pytest.approx(10569312) and sweep.run_ids[0] != "row1"
    np.testing.assert_allclose(sweep.flops, 6 * sweep.n_params * sweep.tokens)
    with pytest.raises(SweepError, match=r"gadre2024_overtraining.csv: no row has dataset = "):
        load_sweep(GADRE, where={"dataset": "pile"})
    with pytest.raises(SweepError, match=r"no column 'corpus' to select rows by; found dataset"):
        load_sweep(GADRE, where={"corpus": "rpj"})


def test_a_bad_value_in_a_selected_row_names_its_row_in_the_file(tmp_path):
    path = _csv(tmp_path, "set,N,D,loss\na,1e8,2e9,3.0\nb,1e8,2e9,3.0\nb,-1,2e9,3.0\n")
    assert load_sweep(path, where={"set": "a"}).run_ids == ("row1",)
    with pytest.raises(SweepError, match=r"column 'N', data row 3: -1 is not a finite"):
        load_sweep(path, where={"set": "b"})
