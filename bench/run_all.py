"""Run every benchmark in bench/ and collect their Markdown sections into bench/RESULTS.md.

    python bench/run_all.py                    # what `make bench` runs
    python bench/run_all.py --only scheduler   # one script, its section to stdout
    python bench/run_all.py --timeout-min 30   # per-script time limit (default 30 min)

Each `bench/*.py` script except this one runs in its own process, with this interpreter,
from the project root, one after another (they measure this machine; two at once would
measure each other). A script prints one self-contained Markdown section on stdout. A
script that fails or runs out of time gets a section saying so, with the tail of its
stderr, and the others still run. The exit code is 1 if any script failed, else 0.
With `--only`, the report goes to stdout and bench/RESULTS.md is left as it is (one
script's rerun should not wipe the others' results), unless `--output` names a file.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
STDERR_TAIL = 40  # lines of a failed script's stderr kept in the report


@dataclass
class Outcome:
    name: str
    section: str  # Markdown
    ok: bool
    wall_s: float


def scripts(only: str | None = None) -> list[Path]:
    """The benchmark scripts, sorted by name; just `only` if given."""
    found = sorted(p for p in BENCH.glob("*.py") if p.name != Path(__file__).name)
    if only is None:
        return found
    name = only if only.endswith(".py") else f"{only}.py"
    picked = [p for p in found if p.name == name]
    if not picked:
        names = ", ".join(p.stem for p in found)
        raise SystemExit(f"run_all.py: no benchmark {only!r} in bench/ (there are: {names})")
    return picked


def run_script(path: Path, *, timeout_s: float) -> Outcome:
    """Run one script to completion or timeout; its section, or one saying what went wrong."""
    t0 = time.monotonic()
    # Its own session, so a timeout also stops what it started (Ray, spawned ranks).
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
        why = None if proc.returncode == 0 else f"exited with code {proc.returncode}"
    except subprocess.TimeoutExpired:
        _stop(proc)
        out, err = proc.communicate()
        why = f"did not finish within {timeout_s / 60:g} min and was stopped"
    wall_s = time.monotonic() - t0
    command = f"`{Path(sys.executable).name} bench/{path.name}`"
    if why is None and out.strip():
        return Outcome(path.stem, out.strip() + "\n", True, wall_s)
    why = why or "printed nothing"
    tail = "\n".join((err or "").rstrip().splitlines()[-STDERR_TAIL:]) or "(empty)"
    section = (
        f"## `bench/{path.name}`: FAILED\n\n"
        f"{command} {why} after {wall_s:.0f} s. The last lines of its stderr:\n\n"
        f"```\n{tail}\n```\n"
    )
    return Outcome(path.stem, section, False, wall_s)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the script's process group, then SIGKILL what is left after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header(load: tuple[float, float, float]) -> str:
    now = datetime.datetime.now().astimezone()
    return "\n".join(
        [
            "# Benchmark results",
            "",
            "Written by `make bench` (`bench/run_all.py`); each section below is one "
            "`bench/*.py` script's own output, run one at a time.",
            "",
            f"- Date: {now:%Y-%m-%d %H:%M %Z}",
            f"- Machine: {os.cpu_count()} CPUs (nproc), {platform.machine()}, "
            f"{platform.system()} {platform.release()}",
            f"- Load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min)",
            f"- Python {platform.python_version()}; torch {_version('torch')}, "
            f"ray {_version('ray')}, pyarrow {_version('pyarrow')}",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="NAME", help="run just bench/NAME.py")
    parser.add_argument(
        "--timeout-min", type=float, default=30.0, help="per-script limit, minutes (default 30)"
    )
    parser.add_argument(
        "--output", type=Path, help="where to write (default bench/RESULTS.md; stdout with --only)"
    )
    args = parser.parse_args(argv)
    todo = scripts(args.only)
    load = os.getloadavg()
    outcomes = []
    for path in todo:
        print(f"bench/{path.name} ...", file=sys.stderr, flush=True)
        outcome = run_script(path, timeout_s=args.timeout_min * 60)
        status = "ok" if outcome.ok else "FAILED"
        print(f"bench/{path.name}: {status} in {outcome.wall_s:.0f} s", file=sys.stderr, flush=True)
        outcomes.append(outcome)
    text = header(load) + "\n" + "\n".join(o.section for o in outcomes)
    output = args.output or (None if args.only else BENCH / "RESULTS.md")
    if output is None:
        print(text, end="")
    else:
        output.write_text(text)
    failed = [o.name for o in outcomes if not o.ok]
    done = f"wrote {output}" if output is not None else "done"
    print(done + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
