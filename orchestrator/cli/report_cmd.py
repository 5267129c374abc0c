"""`orch report`: write a study's HTML report (plots inline, one file, opens offline)."""

from __future__ import annotations

import argparse

from rich.text import Text

from orchestrator.cli.command import command
from orchestrator.cli.output import console

EPILOG = """examples:
  orch report experiments/local                     # writes experiments/local/report.html
  orch report experiments/local -o /tmp/local.html  # anywhere else
  orch report s3://bucket/exp/chinchilla -o chinchilla.html
"""


def add_parser(sub) -> None:
    p = command(
        sub,
        "report",
        run,
        help="write a self-contained HTML report of a study",
        description="Write one HTML file with the study's loss curves, IsoFLOP profiles,\n"
        "frontier with confidence bands, residuals, rival forms, budget burn-down and\n"
        "run table. Reads the store only: works while the study runs and after.",
        epilog=EPILOG,
    )
    p.add_argument("experiment", help="experiment directory or URI")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write the HTML (default: report.html in a local experiment, "
        "else ./<experiment>-report.html)",
    )


def run(args: argparse.Namespace) -> int:
    from orchestrator.report import write_report
    from storage.fsio import is_local
    from storage.store import Store

    store = Store.existing(args.experiment)
    out = args.output
    if out is None:
        name = store.root.rstrip("/").rsplit("/", 1)[-1]
        out = f"{store.root}/report.html" if is_local(store.fs) else f"{name}-report.html"
    path, plots = write_report(store, out)
    for plot in plots:
        if plot.svg is None:
            # Text, not markup: a note may hold brackets rich would parse.
            console.print(
                Text(f"{plot.title}: ", style="yellow") + Text(f"not drawn ({plot.note})")
            )
    console.print(f"report written to {path}", highlight=False)
    return 0
