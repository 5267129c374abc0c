"""`orch status` on a finished and on a running study: every run, plain when not a TTY."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

import tests.storage.conftest as storage_fixtures
from orchestrator.cli.status_cmd import render_text
from orchestrator.report.status import read_status
from orchestrator.scheduler.base import RunState
from storage.store import Store
from tests.orchestrator.report.conftest import QUEUED, REPO, RUNNING
from tests.waiting import run_child, tail, wait_for_exit


def _orch(*args: str) -> subprocess.CompletedProcess:
    """`orch ARGS` in a child process whose stdout is a pipe (not a terminal)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": "100"}
    return run_child(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        timeout_s=120,
        what=f"orch {' '.join(args)}",
    )


def test_status_of_finished_study_prints_every_run_plainly_without_a_tty(finished_study):
    run_ids = Store(str(finished_study)).run_ids()
    out = _orch("status", str(finished_study))
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout  # no ANSI escapes into a pipe
    assert out.stdout.isascii()
    for run_id in run_ids:
        assert run_id in out.stdout
    assert f"{len(run_ids)} finished" in out.stdout
    assert out.stdout.count("100%") == len(run_ids)
    # The fit headline at the plan's largest report.flops (plans/simulated.yaml: 1e23).
    assert "at C = 1e+23 FLOPs: N_opt" in out.stdout
    assert "of 5e+21 budget FLOPs" in out.stdout


def test_status_of_running_study_shows_progress_eta_and_logs(running_study):
    store = Store(str(running_study))
    run_ids = store.run_ids()
    out = _orch("status", str(running_study))
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout
    for run_id in run_ids:
        assert run_id in out.stdout
    assert f"{RUNNING} running" in out.stdout and f"{QUEUED} queued" in out.stdout
    running = [line for line in out.stdout.splitlines() if "| running " in line]
    assert len(running) == RUNNING
    for line in running:  # half the curve written: a partial bar and a time left
        assert "100%" not in line and "  0%" not in line
        assert line.split("|")[11].strip()  # the ETA column
    for run_id in run_ids[:RUNNING]:
        assert f"log {run_id}: {running_study}/runs/{run_id}/logs/attempt-0.rank0.log" in (
            out.stdout
        )


def test_running_budget_counts_running_runs_as_committed_not_spent(running_study):
    store = Store(str(running_study))
    before = time.time()
    status = read_status(store, now=None)  # the wall clock: read between before and after
    after = time.time()
    running = [r for r in status.runs if r.state == "running"]
    ended = [r for r in status.runs if r.state == "finished"]
    assert len(running) == RUNNING
    assert status.budget.committed_flops == pytest.approx(sum(r.flops_planned for r in running))
    assert status.budget.spent_flops == pytest.approx(sum(r.flops_planned for r in ended))
    for r in running:
        assert 0 < r.progress < 1
        # Wall time from its start (30 s before the fixture ran) to the read, whenever the
        # fixture ran: no assumption on how long the tests in between took.
        started = store.events(r.run_id).column("time_unix_s")[0].as_py()
        assert before - started <= r.elapsed_s <= after - started
        assert r.elapsed_s >= 30.0
        assert r.eta_s == pytest.approx((r.tokens_planned - r.tokens_done) / 1e6)
    queued = [r for r in status.runs if r.state == "queued"]
    assert len(queued) == QUEUED and queued[0].attempts == 0 and queued[0].progress == 0


def test_terminal_rendering_lists_every_run_in_colour(running_study):
    status = read_status(Store(str(running_study)))
    text = render_text(status, terminal=True, width=260)
    assert "\x1b[" in text
    for r in status.runs:
        assert r.run_id in text


def test_status_of_missing_experiment_is_one_line_error_exit_1(tmp_path):
    out = _orch("status", str(tmp_path / "nope"))
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("error: ") and "no such experiment" in out.stderr


def test_watch_into_a_pipe_prints_snapshots_and_ends_cleanly_on_sigterm(finished_study):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["status", str(finished_study), "--watch", "--interval", "0.2", "--no-fit"]
    child = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    printed, snapshots = [], 0
    # The deadline of the wait for two snapshots: a watch that stops printing is killed, so
    # the loop ends and the test fails (saying what the watch printed), rather than hangs.
    guard = threading.Timer(120, child.kill)
    guard.start()
    try:
        for line in child.stdout:  # each snapshot ends with its budget line
            printed.append(line)
            snapshots += line.startswith("budget ")
            if snapshots == 2:
                break
        child.send_signal(signal.SIGTERM)
        done = wait_for_exit(child, timeout_s=60, what="`orch status --watch` after SIGTERM")
    finally:
        guard.cancel()
        child.kill()  # a no-op once it exited
    assert snapshots == 2, (
        f"the watch stopped after {snapshots} snapshots (return code {child.returncode}); "
        f"it printed:\n{tail(''.join(printed))}\nstderr:\n{tail(done.stderr)}"
    )
    assert child.returncode == 0, done.stderr[-3000:]
    assert "\x1b[" not in done.stdout and "interrupted" not in done.stdout


s3_endpoint = storage_fixtures.s3_endpoint  # the session's moto server on 127.0.0.1


@pytest.mark.slow
def test_status_and_report_read_a_study_on_s3(finished_study, s3_endpoint, tmp_path):
    import pyarrow.fs as pafs

    from orchestrator.report import PLOTS, gather

    s3 = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http")
    prefix = f"{storage_fixtures.BUCKET}/{uuid.uuid4().hex[:12]}/{finished_study.name}"
    pafs.copy_files(
        str(finished_study),
        prefix,
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=s3,
    )
    store = Store(f"s3://{prefix}?endpoint_override={s3_endpoint}&scheme=http")
    status = read_status(store)
    assert len(status.runs) == len(Store(str(finished_study)).run_ids())
    assert status.budget.budget_flops == 5e21  # read from the stored plan, on S3 too
    assert status.fit is not None and status.fit.target_flops == 1e23
    data = gather(store)
    assert all(draw(data).svg is not None for draw in PLOTS)
    # `orch fit` and `orch export` read it there too.
    from orchestrator.cli import main
    from orchestrator.laws import fit_path

    fit = fit_path(store.uri)
    assert fit.n_obs == len(status.runs) and fit.record_path is None
    assert main(["export", store.uri, "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "runs.parquet").is_file()


def test_running_runs_show_a_predicted_final_loss_near_where_they_ended(
    running_study, finished_study
):
    status = read_status(Store(str(running_study)))
    final = {r["run_id"]: r["eval_loss"] for r in Store(str(finished_study)).summary().to_pylist()}
    running = [r for r in status.runs if r.state is RunState.RUNNING]
    assert len(running) == RUNNING and status.curve_note == ""
    for r in running:
        p = r.predicted_final
        assert p is not None and p.level == 0.9 and p.lo < p.mean < p.hi, (r.run_id, p)
        assert abs(p.mean / final[r.run_id] - 1) < 0.1, (p, final[r.run_id])
    assert all(r.predicted_final is None for r in status.runs if r.state is not RunState.RUNNING)
    out = _orch("status", str(running_study))
    for line in out.stdout.splitlines():
        if "| running " in line:
            assert re.search(r"\| \d\.\d{4} \[\d\.\d{4}, \d\.\d{4}\] \|", line), line
