"""Storage faults: a full disk, a read-only store, damaged files, an S3 server that fails.

Each fault must end in one clear error line (or a retry that succeeds), and must never
damage what the store already held: every file stays whole and readable, and an
`orch resume` once the fault is gone finishes the study with every planned run once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _faults import Rule, child_env, orch, remount, s3_uri, simulated_plan

from orchestrator.adaptive.submit import submit
from orchestrator.planning import load_plan
from orchestrator.planning.expand import expand_plan
from storage.fsio import TMP_PREFIX, list_files
from storage.store import Store
from tests.waiting import run_child

# Each test runs a study (or the CLI in a child process): several seconds each.
pytestmark = pytest.mark.slow


def _files(store: Store) -> dict[str, str]:
    """sha256 of every file in the experiment, by path."""
    return {
        i.path: hashlib.sha256(store.fs.open_input_stream(i.path).read()).hexdigest()
        for i in list_files(store.fs, store.root, recursive=True)
    }


def _assert_whole(store: Store) -> None:
    """No temporary file is left and every Parquet and JSON file in the store reads."""
    for info in list_files(store.fs, store.root, recursive=True):
        assert not info.base_name.startswith(TMP_PREFIX), info.path
        data = store.fs.open_input_stream(info.path).read()
        if info.base_name.endswith(".parquet"):
            pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
        elif info.base_name.endswith(".json"):
            json.loads(data)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    """The CLI's error: exactly one `error:` line on stderr and no traceback."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_child(orch(*args), env=child_env(), timeout_s=timeout, what=f"orch {args[0]}")


def _planned(plan_path: Path) -> list[str]:
    return sorted(s.run_id for s in expand_plan(load_plan(plan_path)).specs)


def _finished(store: Store) -> set[str]:
    return {r for r in store.run_ids() if store.run_summary(r) is not None}


# -- a full disk ----------------------------------------------------------------------------
def test_full_disk_stops_the_study_in_one_line_and_resume_finishes_it(tmp_path, small_tmpfs):
    plan_path = simulated_plan(tmp_path, small_tmpfs)
    # Leave ~100 KiB: plan, specs and a few runs fit, the whole study (~400 KiB) does not.
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (2 * 1024 * 1024 - 100 * 1024))
    done = _run("submit", str(plan_path))
    assert done.returncode == 1
    assert "No space left on device" in _one_error_line(done)
    store = Store(load_plan(plan_path).experiment_uri)
    before = _finished(store)
    _assert_whole(store)
    assert len(before) < len(_planned(plan_path)), "the disk never filled"

    filler.unlink()
    done = _run("resume", store.uri)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(store.summary().column("run_id").to_pylist()) == _planned(plan_path)
    for run_id in before:  # finished before the disk filled: kept, not run again
        assert store.events(run_id).column("state").to_pylist().count("running") == 1
    _assert_whole(store)


# -- a read-only store ------------------------------------------------------------------------
def test_read_only_store_is_read_but_never_changed(tmp_path, small_tmpfs):
    plan_path = simulated_plan(tmp_path, small_tmpfs)
    result = submit(load_plan(plan_path), poll_s=0.01)
    store = Store(result.experiment_uri)
    # Take away one run's summary so that resume has something to write.
    victim = sorted(_finished(store))[0]
    (Path(store.root) / "runs" / victim / "summary.parquet").unlink()
    before = _files(store)
    remount(small_tmpfs, "ro")
    try:
        done = _run("resume", store.uri)
        assert done.returncode == 1
        assert "Read-only file system" in _one_error_line(done)
        status = _run("status", store.uri)  # reading needs no write access
        assert status.returncode == 0, status.stderr[-3000:]
        fit = _run("fit", store.uri)
        assert fit.returncode == 0, fit.stderr[-3000:]
    finally:
        remount(small_tmpfs, "rw")
    assert _files(store) == before


# -- damaged files ----------------------------------------------------------------------------
def test_damaged_parts_summary_and_spec_are_skipped_or_redone_and_nothing_else_changes(
    tmp_path, caplog
):
    plan_path = simulated_plan(tmp_path, tmp_path / "store")
    result = submit(load_plan(plan_path), poll_s=0.01)
    store = Store(result.experiment_uri)
    runs = sorted(_finished(store))
    root = Path(store.root)
    # Run 0: its compacted metrics cut in half. Run 1: garbage instead of its metrics.
    # Run 2: its summary is garbage (so it counts as unfinished and runs again).
    # Run 3: its spec.json was half written (e.g. a copy of the experiment cut short).
    part0 = next((root / "metrics" / f"run_id={runs[0]}").glob("*.parquet"))
    part0.write_bytes(part0.read_bytes()[: part0.stat().st_size // 2])
    part1 = next((root / "metrics" / f"run_id={runs[1]}").glob("*.parquet"))
    part1.write_bytes(b"PAR1 not parquet at all" * 40)
    (root / "runs" / runs[2] / "summary.parquet").write_bytes(b"garbage")
    spec3 = root / "runs" / runs[3] / "spec.json"
    whole_spec = spec3.read_text()
    spec3.write_text(whole_spec[: len(whole_spec) // 2])
    # The other runs' files (specs, events, summaries, metrics) must come through as they are.
    untouched = {
        p: h
        for p, h in _files(store).items()
        if ("/runs/" in p or "/metrics/" in p) and all(r not in p for r in runs[:4])
    }

    with caplog.at_level(logging.WARNING):
        metrics = store.metrics()
    # Each run's metrics are one compacted file: the two damaged runs read as empty.
    assert set(metrics.column("run_id").to_pylist()) == set(runs) - {runs[0], runs[1]}
    assert str(part0) in caplog.text and str(part1) in caplog.text

    done = _run("status", store.uri)
    assert done.returncode == 0, done.stderr[-3000:]
    done = _run("resume", store.uri)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(store.summary().column("run_id").to_pylist()) == runs
    # Only the run whose summary was lost was started again.
    again = [r for r in runs if store.events(r).column("state").to_pylist().count("running") > 1]
    assert again == [runs[2]]
    assert json.loads(spec3.read_text()) == json.loads(whole_spec)  # repaired
    after = _files(store)
    assert [p for p, h in untouched.items() if after.get(p) != h] == []


def test_corrupt_experiment_summary_is_one_error_line_for_fit(tmp_path):
    plan_path = simulated_plan(tmp_path, tmp_path / "store")
    result = submit(load_plan(plan_path), poll_s=0.01)
    summary = Path(Store(result.experiment_uri).root) / "summary.parquet"
    summary.write_bytes(summary.read_bytes()[:100])
    done = _run("fit", result.experiment_uri)
    assert done.returncode == 1
    assert "summary.parquet" in _one_error_line(done)


# -- S3 that fails, drops and stalls requests ------------------------------------------------
def _s3_plan(tmp_path: Path, endpoint: str) -> tuple[Path, str]:
    uri = s3_uri(endpoint, name="simulated")
    store_uri = uri.replace("/simulated?", "?")
    return simulated_plan(tmp_path, store_uri), uri


def test_s3_errors_and_dropped_connections_are_retried_and_the_study_finishes(
    tmp_path, fault_proxy
):
    plan_path, uri = _s3_plan(tmp_path, fault_proxy.address)
    prefix = uri.split("?")[0].removeprefix("s3:/")
    fault_proxy.rules += [
        Rule("PUT", f"{prefix}/runs/", "500", times=3),
        Rule("PUT", f"{prefix}/metrics/", "drop", times=3),
        Rule("GET", f"{prefix}/runs/", "503", times=3),
        Rule("PUT", f"{prefix}/summary.parquet", "stall:1.5", times=1),
    ]
    result = submit(load_plan(plan_path), poll_s=0.01)
    assert all(rule.hits == rule.times for rule in fault_proxy.rules), fault_proxy.rules
    store = Store(result.experiment_uri)
    assert sorted(store.summary().column("run_id").to_pylist()) == _planned(plan_path)
    for run_id in store.run_ids():  # a retried request never turned into a second attempt
        assert store.events(run_id).column("state").to_pylist() == ["running", "finished"]
    _assert_whole(store)


def test_s3_that_keeps_failing_is_one_error_line_and_stored_objects_stay_whole(
    tmp_path, fault_proxy
):
    plan_path, uri = _s3_plan(tmp_path, fault_proxy.address)
    first = submit(load_plan(plan_path), poll_s=0.01)
    store = Store(first.experiment_uri)
    victim = sorted(_finished(store))[0]
    store.fs.delete_file(f"{store.root}/runs/{victim}/summary.parquet")
    before = _files(store)
    prefix = uri.split("?")[0].removeprefix("s3:/")
    fault_proxy.rules.append(Rule("PUT", prefix, "503", times=10**6))  # every write fails
    done = _run("resume", uri, timeout=600)
    assert done.returncode == 1
    assert "cannot write" in _one_error_line(done)
    fault_proxy.rules.clear()
    assert _files(store) == before
    _assert_whole(store)


def test_a_stalled_s3_read_is_waited_for_and_returns_the_same_data(fault_proxy):
    uri = s3_uri(fault_proxy.address)
    store = Store(uri)
    store.write_ledger([{"stage": "seed", "planned_flops": 1e18}])
    expected = store.ledger()
    prefix = uri.split("?")[0].removeprefix("s3:/")
    fault_proxy.rules.append(Rule("GET", f"{prefix}/ledger.parquet", "stall:2", times=1))
    assert store.ledger().equals(expected)
    assert fault_proxy.rules[0].hits == 1


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    # A developer's AWS_ENDPOINT_URL would send pyarrow past the proxy.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
