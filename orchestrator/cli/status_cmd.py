"""`orch status`: a study's runs, budget and current fit, read from its store.

Works while the study runs and after it ended (the store is the only source). On a
terminal the tables have colour and `--watch` redraws in place; when stdout is not a
terminal (a pipe, CI, a log file) the output is plain ASCII with every run listed, and
`--watch` prints a fresh snapshot every interval instead of redrawing.
"""

from __future__ import annotations

import argparse
import io
import json
import time

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.cli.command import command
from orchestrator.cli.output import console, num, table
from orchestrator.laws.base import Prediction
from orchestrator.report.status import (
    BudgetStatus,
    ExperimentStatus,
    FitHeadline,
    RunStatusRow,
    read_status,
)
from orchestrator.scheduler.base import RunState
from storage.errors import OrchError

EPILOG = """examples:
  orch status experiments/local                 # runs, budget, fit headline, log files
  orch status experiments/local --watch         # redraw every 2 s until Ctrl-C
  orch status experiments/local | less          # plain text, every run listed
  orch status experiments/local --json | jq '.runs[] | select(.state == "failed")'
  orch status s3://bucket/exp/chinchilla --address http://head:8265   # and the cluster job
"""
_STATES = (
    RunState.RUNNING,
    RunState.QUEUED,
    RunState.FINISHED,
    RunState.STOPPED,
    RunState.FAILED,
    RunState.PREEMPTED,
    RunState.DIVERGED,
    RunState.CANCELLED,
)
_BAR_WIDTH = 20  # characters of a plain-text progress bar
_DETAIL = 48  # characters of a run's detail (its error, or the node it ran on)


def add_parser(sub) -> None:
    p = command(
        sub,
        "status",
        run,
        help="show a study's runs, budget and fit, from its store",
        description="Show a study's runs (progress, losses, speed, time left, GPU-hours,\n"
        "log files), its compute budget and the current fit's headline. Reads the store\n"
        "only: works while the study runs and after.",
        epilog=EPILOG,
    )
    p.add_argument("experiment", help="experiment directory or URI")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument(
        "--interval", type=float, default=2.0, metavar="S", help="seconds between refreshes"
    )
    p.add_argument("--no-fit", action="store_true", help="skip fitting the law (faster)")
    p.add_argument(
        "--json", action="store_true", help="print the status as one JSON object instead"
    )
    p.add_argument("--address", help="dashboard address of a cluster running the driver")


def run(args: argparse.Namespace) -> int:
    from storage.store import Store

    store = Store.existing(args.experiment)
    if args.address:
        from orchestrator.scheduler.jobs import experiment_jobs

        for job in experiment_jobs(args.address, args.experiment):
            console.print(f"job {job.job_id}: {job.status}", highlight=False)

    def snapshot() -> RenderableType:
        status = read_status(store, with_fit=not args.no_fit)
        return render_status(status, plain=not console.is_terminal)

    if args.json:
        if args.watch:
            raise OrchError("--json prints one snapshot; it does not take --watch")
        status = read_status(store, with_fit=not args.no_fit)
        print(json.dumps(status.to_dict(), indent=1, allow_nan=False))
        return 0
    if not args.watch:
        console.print(snapshot())
        return 0
    try:
        if not console.is_terminal:  # no live redraw into a pipe: one snapshot per interval
            while True:
                console.print(snapshot())
                console.print()
                time.sleep(args.interval)
        with Live(snapshot(), console=console, refresh_per_second=1) as live:
            while True:
                time.sleep(args.interval)
                live.update(snapshot())
    except KeyboardInterrupt:  # how a watch ends (Ctrl-C, or SIGTERM via the CLI's handler)
        return 0


def render_status(status: ExperimentStatus, *, plain: bool) -> RenderableType:
    """The run table, the budget bar, the fit headline and the log files, as one group.

    Args:
        plain: ASCII only (bars drawn with `#` and `.`), for output that is not a terminal.
    """
    parts: list[RenderableType] = [run_table(status, plain=plain)]
    if status.budget is not None:
        parts.append(budget_line(status.budget, plain=plain))
    parts.append(fit_line(status.fit, status.fit_note))
    if status.curve_note:
        parts.append(Text(f"predicted final loss: {status.curve_note}", style="yellow"))
    parts.extend(log_lines(status.runs))
    return Group(*parts)


def run_table(status: ExperimentStatus, *, plain: bool) -> Table:
    counts = {s: status.count(s) for s in _STATES}
    title = f"{status.experiment}: " + (
        ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs yet"
    )
    t = table(
        title,
        [
            "run",
            "N (params)",
            "state",
            "progress",
            "tokens done/planned",
            "loss",
            "eval loss",
            "predicted final (90%)",
            "tokens/s",
            "elapsed",
            "ETA",
            "GPU-h",
            "attempts",
            "detail",
        ],
        left=("run", "state", "progress", "detail"),
    )
    t.columns[-1].no_wrap = True  # errors can be long: one line each, cut (ASCII "...")
    order = {RunState.RUNNING: 0, RunState.QUEUED: 1}  # what is moving first; all are listed
    for r in sorted(status.runs, key=lambda r: order.get(r.state, 2)):
        summary = r.summary or {}
        t.add_row(
            r.run_id,
            num(r.n_params, ".3g"),
            _state(r.state),
            _bar(r.progress, plain=plain),
            f"{r.tokens_done:.3g}/{r.tokens_planned:.3g}",
            num(summary.get("final_loss", r.latest.get("loss"))),
            num(r.eval_loss),
            _predicted(r.predicted_final),
            num(r.latest.get("tokens_per_s") if r.state is RunState.RUNNING else None, ".0f"),
            _duration(r.elapsed_s) if r.attempts else "",
            _duration(r.eta_s) if r.eta_s is not None else "",
            num(r.gpu_hours, ".3g") if r.attempts else "",
            str(r.attempts),
            r.detail if len(r.detail) <= _DETAIL else r.detail[: _DETAIL - 3] + "...",
        )
    return t


def _predicted(p: Prediction | None) -> str:
    """A running run's predicted final loss: `2.431 [2.402, 2.460]`; "" for others."""
    return f"{num(p.mean)} [{num(p.lo)}, {num(p.hi)}]" if p is not None else ""


def budget_line(b: BudgetStatus, *, plain: bool) -> Text:
    """`budget [####====.....] spent 24% ...`: spent, committed and the rest of the cap
    (or of the plan, when it has no cap), in FLOPs and GPU-hours."""
    whole = b.budget_flops or b.planned_flops
    text = Text("budget ")
    if whole > 0:
        spent = round(_BAR_WIDTH * min(1.0, b.spent_flops / whole))
        committed = min(_BAR_WIDTH - spent, round(_BAR_WIDTH * b.committed_flops / whole))
        chars = ("#", "=", ".") if plain else ("█", "▓", "░")
        text.append("[" if plain else "")
        text.append(chars[0] * spent, style="green")
        text.append(chars[1] * committed, style="yellow")
        text.append(chars[2] * (_BAR_WIDTH - spent - committed), style="dim")
        text.append("] " if plain else " ")
    of = f" of {b.budget_flops:.3g} budget" if b.budget_flops else ""
    share = f" ({100 * b.spent_flops / whole:.0f}%)" if whole > 0 else ""
    text.append(
        f"spent {b.spent_flops:.3g}{share}, committed {b.committed_flops:.3g}, "
        f"planned {b.planned_flops:.3g}{of} FLOPs; "
        f"{b.spent_gpu_hours:.3g} of {b.planned_gpu_hours:.3g} planned GPU-hours used"
    )
    return text


def fit_line(fit: FitHeadline | None, note: str) -> Text:
    if fit is None:
        return Text(f"fit: {note}", style="yellow")
    text = Text(
        f"fit ({fit.form}, {fit.n_runs} runs) at C = {fit.target_flops:.3g} FLOPs: "
        f"N_opt {_interval(fit.n_opt, '.3g')} params, "
        f"D_opt {_interval(fit.d_opt, '.3g')} tokens, "
        f"L {_interval(fit.loss_opt, '.4f')} nats/token (95% intervals)"
    )
    if not fit.reliable:
        text.append("; unreliable: " + "; ".join(fit.warnings), style="yellow")
    return text


def log_lines(runs: list[RunStatusRow]) -> list[Text]:
    """Each run's latest log file (rank 0 of the last attempt), runs without logs left out."""
    lines = [Text(f"log {r.run_id}: {_latest_log(r.log_files)}") for r in runs if r.log_files]
    if lines:
        lines.insert(0, Text("logs (latest attempt, rank 0; others beside it):"))
    return lines


def _latest_log(paths: list[str]) -> str:
    # Names are attempt-<k>.rank<r>.log, sorted by (attempt, rank): the last attempt's
    # first entry is its rank 0.
    last_attempt = paths[-1].rsplit("/", 1)[-1].split(".")[0]
    return next(p for p in paths if p.rsplit("/", 1)[-1].startswith(last_attempt + "."))


def _interval(p, fmt: str) -> str:
    return f"{format(p.mean, fmt)} [{format(p.lo, fmt)}, {format(p.hi, fmt)}]"


def _state(state: RunState) -> Text:
    style = {RunState.RUNNING: "cyan", RunState.FINISHED: "green", RunState.QUEUED: "dim"}
    return Text(state.value, style=style.get(state, "red"))


def _bar(fraction: float, *, plain: bool) -> Text:
    filled = round(_BAR_WIDTH * fraction)
    done, todo = ("#", ".") if plain else ("━", "━")
    text = Text("[" if plain else "")
    text.append(done * filled, style="green")
    text.append(todo * (_BAR_WIDTH - filled), style="grey30")
    text.append(f"{']' if plain else ''} {100 * fraction:3.0f}%")
    return text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def render_text(status: ExperimentStatus, *, width: int = 240, terminal: bool = False) -> str:
    """The status as text, as `orch status` prints it (for tests and for scripts)."""
    buffer = io.StringIO()
    out = Console(
        width=width,
        file=buffer,
        force_terminal=terminal,
        color_system="standard" if terminal else None,
    )
    out.print(render_status(status, plain=not terminal))
    return buffer.getvalue()
