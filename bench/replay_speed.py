"""Claim (issue 20): `orch replay` of a 1,000-run pool at 10% of its compute takes at most
60 s on 2 cores, for every strategy.

The pool is 1,000 runs of a Farseer-shaped truth (workers/simulated.py
`FarseerTruth.drawn(0)`, with its seed noise, growing as models shrink): N log-uniform
in [1e7, 1e9], tokens per parameter log-uniform in [1, 300], so compute is continuous
over about five decades, as in a sweep gathered over months rather than a grid. The
targets are 10 runs beyond it (1.5e9 to 3e9 parameters at 200 tokens per parameter,
above all of its compute; losses from the truth, for scoring; not larger models at fewer
tokens: this truth's loss rises with N at 20 tokens per parameter beyond about 2e9
parameters). Both tables are written to a temporary directory, and each strategy is
timed as a user runs it, one `orch replay POOL --targets T --strategy S --budget-frac
0.1` process each (its start-up and imports included, and the fit on every pool run that
`orch replay` prints as its "pool" row), `--repeats` times (the median is printed).
Beside the wall time: the runs the strategy chose, its held-out error at the targets,
and its time over `random`'s in the same run (the cheapest strategy, whose time is
mostly the replay's own machinery and the final AutoLaw fit: the ratio is what a
strategy's choosing costs on top).

Prints one Markdown section and exits 0 (1 if a replay fails).
Usage: python bench/replay_speed.py [--pool-runs 1000] [--budget-frac 0.1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.adaptive.strategies import NAMES  # noqa: E402
from workers.simulated import FarseerTruth  # noqa: E402

GOAL_S = 60.0
ORCH = Path(sys.executable).with_name("orch")


def write_tables(directory: Path, pool_runs: int, seed: int = 0) -> tuple[Path, Path]:
    """The pool and target tables (module docstring), as CSV files in `directory`."""
    truth = FarseerTruth.drawn(0)
    rng = np.random.default_rng(seed)
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e9), pool_runs))
    d = n * np.exp(rng.uniform(np.log(1.0), np.log(300.0), pool_runs))
    noise = np.array([truth.noise_at(x) for x in n]) * rng.standard_normal(pool_runs)
    loss = truth.loss(n, d) * np.exp(noise)
    target_n = np.geomspace(1.5e9, 3e9, 10)
    target_d = 200 * target_n
    pool, targets = directory / "pool.csv", directory / "targets.csv"
    for path, rows in (
        (pool, zip(n, d, loss, strict=True)),
        (targets, zip(target_n, target_d, truth.loss(target_n, target_d), strict=True)),
    ):
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["N", "D", "loss"])
            writer.writerows((f"{a:.6g}", f"{b:.6g}", f"{c:.6f}") for a, b, c in rows)
    return pool, targets


def time_replay(pool: Path, targets: Path, strategy: str, frac: float, out: Path) -> tuple:
    """Wall seconds of one `orch replay` process, and the JSON it wrote."""
    cmd = [str(ORCH), "replay", str(pool), "--targets", str(targets), "--strategy", strategy]
    cmd += ["--budget-frac", str(frac), "--json", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds, json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool-runs", type=int, default=1000)
    parser.add_argument("--budget-frac", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3, help="timings per strategy (median)")
    args = parser.parse_args(argv)
    if args.pool_runs < 20 or not 0 < args.budget_frac <= 1 or args.repeats < 1:
        parser.error("--pool-runs >= 20, --budget-frac in (0, 1], --repeats >= 1")
    frac = args.budget_frac
    print(f"## `orch replay` of a {args.pool_runs}-run pool at {frac:.0%} of its compute\n")
    cpus = os.cpu_count()
    print(f"{cpus} CPUs; median of {args.repeats} runs per strategy; goal <= {GOAL_S:g} s.\n")
    print("| strategy | wall time | runs chosen | held-out error | time / random's | goal |")
    print("|---|---|---|---|---|---|")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        pool, targets = write_tables(Path(tmp), args.pool_runs)
        rows, pool_fit = {}, None
        for strategy in NAMES:
            try:
                timed = [
                    time_replay(pool, targets, strategy, args.budget_frac, Path(tmp) / "out.json")
                    for _ in range(args.repeats)
                ]
            except RuntimeError as err:
                print(f"| {strategy} | failed: {err} | | | | |")
                failed = True
                continue
            outcomes = {o["strategy"]: o for o in timed[-1][1]["outcomes"]}
            rows[strategy] = (statistics.median(s for s, _ in timed), outcomes[strategy])
            pool_fit = outcomes.get("pool")
        base = rows.get("random", (None,))[0]
        for strategy, (seconds, outcome) in rows.items():
            error = outcome.get("mean_abs_error_pct")
            ratio = f"{seconds / base:.2f}" if base else "-"
            print(
                f"| {strategy} | {seconds:.1f} s | {len(outcome['run_ids'])} | "
                f"{'-' if error is None else f'{error:.2f}%'} | {ratio} | "
                f"{'met' if seconds <= GOAL_S else 'NOT met'} |"
            )
        if rows and pool_fit:
            error = pool_fit["mean_abs_error_pct"]
            print(
                f"\nThe fit on every pool run ({pool_fit['fit']}, in every time above): "
                f"held-out error {'-' if error is None else f'{error:.2f}%'}."
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
