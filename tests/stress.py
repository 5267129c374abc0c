"""Run the test suite on a loaded machine: `make test-stress` (not part of CI).

CI runs on the machine that submits, and a user's laptop or a cluster head is rarely idle;
a test that passes only on an idle machine fails there one run in ten. This starts busy
processes (one spinning Python loop each, default two: as many as this machine's cores),
runs the suite beside them N times, and prints each run's result and the tally, which
docs/reliability.md quotes.

    python tests/stress.py [--runs N] [--hogs K] [--clean-clone] [--logs DIR]

With --clean-clone each run is CI's own: a fresh `git clone` of this repository's HEAD
beside this checkout (where CI's clone sits, next to ../shared, which the deploy tests
read), running `.ci/run`, install included; a clone that passed is removed. Without it,
each run is `make test` in this checkout. Each run's output goes to DIR/stress-<k>.log.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# pytest's summary lines that name what went wrong.
_PROBLEM = re.compile(r"^(FAILED|ERROR) \S+|^=+ .*(failed|error).* in [\d.]+s", re.M)


def _spin() -> None:
    while True:
        pass


def _run_once(k: int, clean_clone: bool, logs: Path) -> tuple[bool, float, list[str]]:
    if not clean_clone:
        cwd, cmd = ROOT, ["make", "test"]
    else:
        cwd = ROOT.parent / f"{ROOT.name}-stress-{k}"
        shutil.rmtree(cwd, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(cwd)], check=True)
        cmd = ["bash", ".ci/run"]
    log = logs / f"stress-{k}.log"
    t0 = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode
    elapsed = time.monotonic() - t0
    problems = [m.group(0) for m in _PROBLEM.finditer(log.read_text(errors="replace"))]
    if clean_clone and code == 0:
        shutil.rmtree(cwd, ignore_errors=True)  # a failed clone stays, to look into
    return code == 0, elapsed, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--hogs", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--clean-clone", action="store_true")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/orch-stress"), metavar="DIR")
    args = parser.parse_args(argv)
    logs = args.logs
    logs.mkdir(parents=True, exist_ok=True)

    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    passes = 0
    try:
        for k in range(1, args.runs + 1):
            ok, elapsed, problems = _run_once(k, args.clean_clone, logs)
            passes += ok
            verdict = "passed" if ok else "FAILED"
            print(
                f"run {k}/{args.runs}: {verdict} in {elapsed / 60:.1f} min "
                f"(log: {logs / f'stress-{k}.log'})",
                flush=True,
            )
            for line in problems:
                print(f"    {line}", flush=True)
    finally:
        for hog in hogs:
            hog.terminate()
    print(f"stress: {passes} of {args.runs} runs passed beside {args.hogs} busy processes")
    return 0 if passes == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
