"""`orch submit`, `orch resume`, `orch cancel`: run a study and show its progress."""

from __future__ import annotations

import argparse
import time

from rich.live import Live
from rich.table import Table

from orchestrator.cli.command import command
from orchestrator.cli.fit_cmd import render_fit
from orchestrator.cli.output import console, num, table
from orchestrator.planning import load_plan
from orchestrator.scheduler.base import RunState
from orchestrator.scheduler.execution import Execution

EPILOG_SUBMIT = """examples:
  orch submit plans/local.yaml                                  # embedded local Ray, this machine
  orch submit plans/chinchilla.yaml --address http://head:8265  # the driver runs on the cluster
  orch submit plans/chinchilla.yaml --address ray://head:10001  # the driver runs here
"""
EPILOG_RESUME = """example:
  orch resume experiments/local       # after a crash: keep finished runs, resume the rest
"""
EPILOG_CANCEL = """examples:
  orch cancel experiments/local                         # the driver stops all runs at its next poll
  orch cancel s3://bucket/exp/chinchilla --address http://head:8265   # also stops the cluster job
"""
_SHOWN_ROWS = 40  # the live table shows running runs first, then at most this many rows
_CANCEL_GRACE_S = 60  # how long `orch cancel --address` waits for the driver to wind down


def add_parsers(sub) -> None:
    p = command(
        sub,
        "submit",
        run_submit,
        help="run a plan's runs not yet finished, then fit the law",
        epilog=EPILOG_SUBMIT,
    )
    p.add_argument("plan", help="plan YAML file")
    p.add_argument(
        "--address",
        help="Ray address: http(s)://HEAD:8265 submits the driver as a "
        "Ray job; ray://... or HOST:PORT connects this driver (default: the plan's, "
        "else RAY_ADDRESS, else an embedded local Ray)",
    )
    p = command(
        sub,
        "resume",
        run_resume,
        help="continue an experiment after a crash or a cancel",
        epilog=EPILOG_RESUME,
    )
    p.add_argument("experiment", help="experiment directory or URI (contains plan.yaml)")
    p.add_argument("--address", help="Ray address, as for submit (ray:// or HOST:PORT)")
    p = command(
        sub,
        "cancel",
        run_cancel,
        help="stop a running study cleanly; runs are marked cancelled",
        epilog=EPILOG_CANCEL,
    )
    p.add_argument("experiment", help="experiment directory or URI")
    p.add_argument(
        "--address",
        help="dashboard address http(s)://HEAD:8265 of the cluster "
        "running the driver (its job is stopped too)",
    )


def run_submit(args: argparse.Namespace) -> int:
    import os

    from orchestrator.adaptive.submit import submit
    from orchestrator.scheduler.jobs import is_jobs_address, submit_job

    plan = load_plan(args.plan)
    address = args.address or plan.resources.address or os.environ.get("RAY_ADDRESS")
    if is_jobs_address(address):
        job = submit_job(plan, address)
        console.print(
            f"submitted job [bold]{job.job_id}[/bold] to {address} (experiment {job.experiment})"
        )
        console.print(f"follow it: ray job logs --address {address} --follow {job.job_id}")
        console.print(f"status:    orch status {job.experiment} --address {address}")
        return 0
    return _run(lambda **kw: submit(plan, address=address, **kw), plan.name, plan.experiment_uri)


def run_resume(args: argparse.Namespace) -> int:
    from orchestrator.adaptive.submit import submit
    from orchestrator.planning import load_experiment_plan

    plan = load_experiment_plan(args.experiment)
    return _run(
        lambda **kw: submit(plan, address=args.address, **kw), plan.name, plan.experiment_uri
    )


def run_cancel(args: argparse.Namespace) -> int:
    from orchestrator.scheduler.control import request_cancel
    from storage.store import Store

    request_cancel(Store(args.experiment))
    console.print(
        f"cancel requested for {args.experiment}: the driver stops every run at its "
        "next poll and marks them cancelled"
    )
    if args.address:
        from orchestrator.scheduler.jobs import experiment_jobs, stop_jobs

        # Give the driver time to cancel its runs and record it; stop the job only if not.
        deadline = time.monotonic() + _CANCEL_GRACE_S
        while time.monotonic() < deadline and any(
            j.status in ("PENDING", "RUNNING")
            for j in experiment_jobs(args.address, args.experiment)
        ):
            time.sleep(1)
        for job_id in stop_jobs(args.address, args.experiment):
            console.print(f"stopped job {job_id}")
    return 0


def _run(start, name: str, experiment: str) -> int:
    started = time.monotonic()
    live = Live(console=console, refresh_per_second=2) if console.is_terminal else None
    reported: set[str] = set()
    shown_at = [-float("inf")]

    def on_start(url: str | None) -> None:
        console.print(f"Ray dashboard: {url or 'not available'}")

    def on_progress(execution: Execution, *, force: bool = False) -> None:
        # The loop calls after every poll (hundreds a second with short runs); each
        # display is a pass over every run, so it is redrawn at most 4 times a second.
        now = time.monotonic()
        if now - shown_at[0] < 0.25 and not force:
            return
        shown_at[0] = now
        if live is not None:
            live.update(progress_table(execution, time.monotonic() - started))
            return
        # Not a terminal (CI, a log file): one plain line per run as it ends.
        done = sum(v.state.is_terminal for v in execution.runs)
        for v in execution.runs:
            if v.state.is_terminal and v.spec.run_id not in reported:
                reported.add(v.spec.run_id)
                loss = num(v.latest.get("eval_loss")) or "-"
                console.print(
                    f"[{done}/{len(execution.runs)}] run {v.spec.run_id} "
                    f"{v.state.value}{' (reused)' if v.reused else ''} "
                    f"eval loss {loss} {v.detail}".rstrip(),
                    highlight=False,
                )

    console.print(f"study [bold]{name}[/bold] -> {experiment}")
    if live is not None:
        live.start()
    try:
        result = start(on_start=on_start, on_progress=on_progress)
        on_progress(result.execution, force=True)
    finally:
        if live is not None:
            live.stop()
    execution = result.execution
    reused = sum(v.reused for v in execution.runs)
    failed = execution.count(RunState.FAILED, RunState.PREEMPTED, RunState.DIVERGED)
    stopped = execution.count(RunState.STOPPED)
    console.print(
        f"{execution.count(RunState.FINISHED)} finished ({reused} reused from earlier runs), "
        + (f"{stopped} stopped early (outcome predicted), " if stopped else "")
        + f"{failed} failed, {execution.count(RunState.CANCELLED)} cancelled, in "
        f"{time.monotonic() - started:.0f} s; summary: {result.experiment_uri}/summary.parquet",
        highlight=False,
    )
    for view in execution.runs:
        if view.state in (RunState.FAILED, RunState.PREEMPTED, RunState.DIVERGED):
            console.print(
                f"  run {view.spec.run_id} {view.state.value}: {view.detail}", highlight=False
            )
    if result.stop_reason:
        console.print(f"study stopped: {result.stop_reason}", highlight=False)
    if result.fit is not None:
        if result.plan.fit_loss == "bits_per_byte":  # the plan's `fit.loss`
            console.print("losses in bits per byte of the held-out text", highlight=False)
        render_fit(result.fit)
    else:
        console.print(f"[yellow]no fit:[/yellow] {result.fit_error}")
    if execution.cancelled:  # asked for: not an error
        return 0
    # A run stopped early has its outcome (predicted from its curve): not a failure.
    ended = execution.count(RunState.FINISHED, RunState.STOPPED)
    return 0 if ended == len(execution.runs) else 1


def progress_table(execution: Execution, elapsed_s: float) -> Table:
    done = sum(v.state.is_terminal for v in execution.runs)
    t = table(
        f"runs done {done}/{len(execution.runs)}  ({elapsed_s:.0f} s)",
        ["run", "layers x width", "tokens", "ranks/ZeRO", "state", "step", "loss", "eval loss"],
        left=("run", "state"),
    )
    order = {RunState.RUNNING: 0, RunState.QUEUED: 2}
    views = sorted(execution.runs, key=lambda v: order.get(v.state, 1))[:_SHOWN_ROWS]
    for v in views:
        latest = v.latest or {}
        steps_total = latest.get("steps_total", v.spec.steps)
        step = latest.get("step", latest.get("steps", 0)) if v.state != RunState.QUEUED else 0
        t.add_row(
            v.spec.run_id,
            f"{v.spec.shape.n_layer} x {v.spec.shape.d_model}",
            f"{v.spec.tokens:.3g}",
            f"{v.spec.world_size}/{v.spec.zero_stage}",
            v.state.value + (" (reused)" if v.reused else ""),
            f"{step}/{steps_total}",
            num(latest.get("loss", latest.get("final_loss"))),
            num(latest.get("eval_loss")),
        )
    if len(execution.runs) > _SHOWN_ROWS:
        t.caption = f"{len(execution.runs) - _SHOWN_ROWS} more runs not shown"
    return t
