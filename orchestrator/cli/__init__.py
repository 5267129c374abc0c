"""`orch`: the command line. The only place in the project that prints.

Each command parses its arguments, calls one library function that returns data, and
renders it with rich (plain text when output is not a terminal). Exit codes: 0 success;
1 an error (one line on stderr) or a study with runs that did not finish; 2 a bad plan or
bad arguments. `--debug` shows the traceback instead of the one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

# The fits' linear algebra is on matrices of a few dozen rows: OpenBLAS's thread pool only
# costs there, and on a busy machine its spinning threads made AutoLaw 5-30x slower. Set
# before anything imports numpy; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from rich.text import Text  # noqa: E402

from orchestrator.cli import (  # noqa: E402
    export_cmd,
    fit_cmd,
    plan_cmd,
    prepare_cmd,
    replay_cmd,
    report_cmd,
    run_cmd,
    status_cmd,
)
from orchestrator.cli.output import console, errors  # noqa: E402
from orchestrator.planning import PlanError  # noqa: E402
from storage.errors import OrchError  # noqa: E402

__all__ = ["main"]

EPILOG = """examples:
  orch plan plans/local.yaml              # what would run, costed; runs nothing
  orch submit plans/local.yaml            # run it (embedded local Ray), then fit the law
  orch status experiments/local --watch   # from another terminal, while it runs
  orch report experiments/local           # experiments/local/report.html

exit codes: 0 success; 1 an error, or a study with runs that did not finish;
2 a bad plan or bad arguments; 130 interrupted (Ctrl-C or SIGTERM).
Run `orch COMMAND --help` for a command's options and an example.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orch",
        description="Scaling-law experiment orchestrator",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_cmd.add_parsers(sub)
    plan_cmd.add_parser(sub)
    status_cmd.add_parser(sub)
    fit_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    export_cmd.add_parser(sub)
    replay_cmd.add_parser(sub)
    prepare_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # libraries' own chatter stays out of the terminal
        for name in ("ray", "DeepSpeed", "deepspeed", "torch", "filelock"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # A fit's cautions are shown with the fit (`warning:` lines, the report's notes),
        # not a second time as log records.
        logging.getLogger("orchestrator.laws").setLevel(logging.ERROR)
    # SLURM preemption and `kill` send SIGTERM: wind down as for Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.run(args)
    except OrchError as err:
        if args.debug:
            raise
        _error(str(err))
        return 2 if isinstance(err, PlanError) else 1
    except BrokenPipeError:  # the reader went away (`orch status --json | head`): be quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 128 + signal.SIGPIPE
    except (OSError, ValueError, RuntimeError) as err:  # a bug or the environment: still one line
        if args.debug:
            raise
        _error(f"{type(err).__name__}: {err} (run with --debug for the traceback)")
        return 1
    except KeyboardInterrupt:
        console.print("interrupted: finished runs are kept; `orch resume EXPERIMENT` continues")
        return 130


def _error(message: str) -> None:
    # One line whatever the message holds (a library's text may span several).
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    errors.print(Text("error: ", style="red") + Text(line), highlight=False)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
