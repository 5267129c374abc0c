"""`orch replay` through `main`: Hoffmann et al.'s runs replayed, the 5 largest held out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from orchestrator.cli import main

EPOCH = Path("/work/shared/data/chinchilla_epoch_svg_extracted.csv")
pytestmark = pytest.mark.skipif(not EPOCH.is_file(), reason="the shared Epoch AI data is not here")


def _largest_targets(path: Path, k: int = 5) -> tuple[Path, list[int]]:
    """A targets table of the k largest-compute runs of the Epoch CSV (N, C and loss, as
    the sweep gives them), and their 1-based data rows."""
    with EPOCH.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    top = sorted(range(len(rows)), key=lambda i: -float(rows[i]["Training FLOP"]))[:k]
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["N", "C", "loss"])
        for i in top:
            out.writerow([rows[i]["Model Size"], rows[i]["Training FLOP"], rows[i]["loss"]])
    return path, [i + 1 for i in top]


def test_orch_replay_on_the_epoch_csv_holding_out_the_five_largest_runs(tmp_path, capsys):
    targets, rows = _largest_targets(tmp_path / "targets.csv")
    out = tmp_path / "replay.json"
    argv = ["replay", str(EPOCH), "--targets", str(targets), "--strategy", "active,random"]
    assert main([*argv, "--budget-frac", "0.1", "--seed", "0", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    words = ("mean |error|", "90% interval covers", "mean interval width", "6.8e+09")
    for word in ("active", "random", "pool", *words):
        assert word in printed
    data = json.loads(out.read_text())
    assert data["pool_runs"] == 240 and data["budget_frac"] == 0.1
    held_out = {f"row{r}" for r in rows}
    outcomes = {o["strategy"]: o for o in data["outcomes"]}
    assert list(outcomes) == ["active", "random", "pool"]
    for name in ("active", "random"):
        o = outcomes[name]
        assert 0 < o["spent_frac"] <= 0.1 and o["runs"] == len(o["run_ids"]) >= 9
        assert not held_out & set(o["run_ids"])
        assert o["run_ids"][: len(data["seed_run_ids"])] == data["seed_run_ids"]
    assert outcomes["pool"]["spent_frac"] == 1.0 and outcomes["pool"]["runs"] == 240
    for o in outcomes.values():
        assert len(o["targets"]) == 5 and o["scored"] == 5
        errors = [t["error_pct"] for t in o["targets"]]
        assert o["mean_abs_error_pct"] == pytest.approx(sum(errors) / 5)
        assert o["covered"] == sum(t["lo"] <= t["observed"] <= t["hi"] for t in o["targets"])
        widths = [(t["hi"] - t["lo"]) / t["mean"] * 100 for t in o["targets"]]
        assert o["mean_width_pct"] == pytest.approx(sum(widths) / 5)
    # The fit to every pool run predicts the held-out runs within a few percent.
    assert outcomes["pool"]["mean_abs_error_pct"] < 5


def test_the_same_seed_gives_the_same_replay(tmp_path, capsys):
    targets, _ = _largest_targets(tmp_path / "targets.csv")
    runs = []  # (Chinchilla predicts: what matters here is the choice, which AutoLaw is not in)
    for k in range(2):
        out = tmp_path / f"r{k}.json"
        argv = ["replay", str(EPOCH), "--targets", str(targets), "--strategy", "random"]
        argv += ["--form", "chinchilla", "--seed", "2", "--json", str(out)]
        assert main([*argv, "--budget-frac", "0.05"]) == 0
        runs.append(json.loads(out.read_text())["outcomes"])
    assert runs[0] == runs[1] and runs[0][0]["fit"] == "chinchilla"


def test_orch_replay_selects_one_sweep_of_a_table_of_several(tmp_path, capsys):
    gadre = Path(__file__).resolve().parents[3] / "bench" / "data" / "gadre2024_overtraining.csv"
    with gadre.open(newline="") as fh:
        rpj = [r for r in csv.DictReader(fh) if r["dataset"] == "rpj"]
    rpj.sort(key=lambda r: -float(r["n_params"]) * float(r["tokens"]))
    targets = tmp_path / "targets.csv"  # rpj's 3 largest-compute runs
    targets.write_text(
        "N,D,loss\n" + "".join(f"{r['n_params']},{r['tokens']},{r['loss']}\n" for r in rpj[:3])
    )
    out = tmp_path / "replay.json"
    argv = ["replay", str(gadre), "--where", "dataset=rpj", "--targets", str(targets)]
    argv += ["--strategy", "random", "--budget-frac", "0.25", "--form", "chinchilla"]
    assert main([*argv, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["pool_runs"] == len(rpj) - 3 == 32 and data["outcomes"][0]["scored"] == 3


def test_a_bad_sweep_table_is_one_error_line_with_exit_1(tmp_path, capsys):
    bad = tmp_path / "sweep.csv"
    bad.write_text("N,D\n1e8,2e9\n")
    targets, _ = _largest_targets(tmp_path / "targets.csv")
    argv = ["replay", str(bad), "--targets", str(targets), "--strategy", "active"]
    assert main([*argv, "--budget-frac", "0.1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err == f"error: {bad}: missing column(s) loss; found N, D (a table needs N, D "
        "(or C) and loss, one row per run)\n"
    )


@pytest.mark.parametrize(
    "options,expected",
    [
        (["--strategy", "bayes", "--budget-frac", "0.1"], "expected some of active, isoflop"),
        (["--strategy", "active", "--budget-frac", "0"], "expected a fraction in (0, 1]"),
        (["--strategy", "grid", "--budget-frac", "0.1", "--overhead-flops", "-1"], ">= 0"),
        (["--budget-frac", "0.1"], "the following arguments are required: --strategy"),
        (["--strategy", "grid", "--budget-frac", "0.1", "--form-error-floor", "x"], ">= 0"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, options, expected):
    with pytest.raises(SystemExit) as exit_:
        main(["replay", str(EPOCH), "--targets", str(tmp_path / "t.csv"), *options])
    assert exit_.value.code == 2 and expected in capsys.readouterr().err
