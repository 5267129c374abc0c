"""Bad numbers: NaN/inf losses, runs that report nothing, and law fits on degenerate data.

The rule: a clear error, or a fit flagged unreliable with the reason; never a confident
fit of nonsense. Divergence of a real training run (a loss spike) is proven in
tests/workers/test_train.py and, inside a study, in test_ray_faults.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from _faults import child_env, orch

from orchestrator.laws import fit_path
from orchestrator.laws.base import FitError
from orchestrator.laws.fit_report import fit_observations, observations_from_summary
from storage import schema
from storage.store import Store
from tests.waiting import run_child

# Hoffmann et al. (2022) Approach 3 estimates: the ground truth of the clean points below.
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28


def _loss(n, d):
    return E + A / np.asarray(n, float) ** ALPHA + B / np.asarray(d, float) ** BETA


def _write_csv(path, n, d, loss):
    lines = ["N,D,loss"] + [
        f"{float(a)!r},{float(b)!r},{float(c)!r}" for a, b, c in zip(n, d, loss, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _grid(levels=(1e18, 1e19, 1e20), sizes=5, *, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    n, d = [], []
    for c in levels:
        for x in np.logspace(-0.8, 0.8, sizes):
            n_opt = 0.1 * c**0.5 * x
            n.append(n_opt)
            d.append(c / (6 * n_opt))
    n, d = np.array(n), np.array(d)
    return n, d, _loss(n, d) * np.exp(noise * rng.standard_normal(n.size))


def test_the_clean_grid_is_fitted_reliably_so_the_flags_below_mean_something(tmp_path):
    n, d, loss = _grid(noise=0.005)
    report = fit_path(_write_csv(tmp_path / "good.csv", n, d, loss), form="chinchilla")
    assert report.reliable, report.warnings
    assert abs(dict((p.name, p.value) for p in report.params)["alpha"] - ALPHA) < 0.1


@pytest.mark.parametrize(
    "case",
    ["one_compute_level", "all_losses_equal", "one_model_size", "one_token_count"],
)
def test_degenerate_data_gives_a_fit_flagged_unreliable_with_the_reason(tmp_path, case):
    n, d, loss = _grid(noise=0.005)
    if case == "one_compute_level":
        n, d, loss = _grid(levels=(1e19,), sizes=8, noise=0.005)
    elif case == "all_losses_equal":
        loss = np.full_like(loss, 3.0)
    elif case == "one_model_size":
        d = np.logspace(9, 11, 8)
        n = np.full_like(d, 1e8)
        loss = _loss(n, d)
    else:
        n = np.logspace(7, 9, 8)
        d = np.full_like(n, 1e10)
        loss = _loss(n, d)
    report = fit_path(_write_csv(tmp_path / f"{case}.csv", n, d, loss))
    assert not report.reliable, [(p.name, p.value) for p in report.params]
    assert report.warnings and not report.record.reliable
    assert all(math.isfinite(p.value) for p in report.params)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("single_run", "too few"),
        ("two_runs", "too few"),
        ("nan_loss", "finite"),
        ("inf_loss", "finite"),
        ("negative_tokens", "> 0"),
        ("nan_everywhere", "finite"),
    ],
)
def test_unusable_data_is_one_fit_error_naming_the_problem(tmp_path, case, message):
    n, d, loss = _grid()
    if case == "single_run":
        n, d, loss = n[:1], d[:1], loss[:1]
    elif case == "two_runs":
        n, d, loss = n[:2], d[:2], loss[:2]
    elif case == "nan_loss":
        loss[3] = math.nan
    elif case == "inf_loss":
        loss[0] = math.inf
    elif case == "negative_tokens":
        d[2] = -d[2]
    else:
        loss[:] = math.nan
    with pytest.raises(FitError, match=message) as err:
        fit_path(_write_csv(tmp_path / f"{case}.csv", n, d, loss))
    assert "\n" not in str(err.value)


def _summary(rows):
    full = [
        {name: row.get(name) for name in schema.SUMMARY.names} | {"attempt": 0, **row}
        for row in rows
    ]
    return pa.Table.from_pylist(full, schema=schema.SUMMARY)


def test_runs_that_never_reported_a_loss_or_diverged_are_left_out_of_the_fit(tmp_path):
    n, d, loss = _grid(noise=0.005)
    rows = [
        {
            "run_id": f"r{i:02d}",
            "n_params": int(a),
            "tokens": int(b),
            "flops": 6 * a * b,
            "final_loss": float(c),
            "eval_loss": float(c),
            "status": "finished",
        }
        for i, (a, b, c) in enumerate(zip(n, d, loss, strict=True))
    ]
    rows[0] |= {"final_loss": None, "eval_loss": None}  # finished but never reported a loss
    rows[1] |= {"final_loss": math.nan, "eval_loss": math.nan}
    rows[2] |= {"status": "diverged", "final_loss": math.inf, "eval_loss": math.inf}
    obs = observations_from_summary(_summary(rows), tmp_path)
    assert obs.n_dropped == 3
    assert "r00" not in obs.run_ids and "r02" not in obs.run_ids
    report = fit_observations(obs)
    assert report.n_obs == len(rows) - 3 and report.reliable


@pytest.mark.slow  # the CLI in a child process
def test_an_experiment_with_too_few_good_runs_ends_with_no_fit_and_says_why(tmp_path):
    # The store of a study whose runs all diverged: `orch fit` is one clear line.
    store = Store(str(tmp_path / "exp"))
    for i in range(6):
        store.write_run_summary(
            {
                "run_id": f"r{i}",
                "attempt": 0,
                "n_params": 10**6 * (i + 1),
                "tokens": 10**8,
                "flops": 6e14,
                "final_loss": math.nan,
                "eval_loss": math.nan,
                "status": "diverged",
            }
        )
    store.rebuild_summary()
    done = run_child(orch("fit", store.uri), env=child_env(), timeout_s=120, what="orch fit")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()][0].startswith("error: ")


@pytest.mark.slow  # the CLI in a child process
def test_a_fit_record_of_a_flagged_fit_says_so_in_its_json(tmp_path):
    n, d, loss = _grid(levels=(1e19,), sizes=8, noise=0.005)
    out = tmp_path / "fit.json"
    done = run_child(
        orch("fit", str(_write_csv(tmp_path / "one.csv", n, d, loss)), "--json", str(out)),
        env=child_env(),
        timeout_s=120,
        what="orch fit --json",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning:" in done.stdout
    record = json.loads(out.read_text())
    assert record["reliable"] is False and record["warnings"]
