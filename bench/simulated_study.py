"""A 10,000-run simulated study, plan to fit, in one process: the driver's own cost.

    python bench/simulated_study.py            # 106 levels x 100 sizes (10,000 distinct runs)
    python bench/simulated_study.py --quick    # 20 x 20, a smoke test
    python bench/simulated_study.py --profile  # also the top functions by cumulative time

Replayed and simulated studies (the strategy benchmarks, `orch replay`, the adaptive
loop's tests) run thousands of instant runs through the same driver as a real study, so
the driver's cost per run sets how much evidence about a strategy a user can afford. This
runs plans/simulated.yaml scaled up to `--levels` x `--sizes` seed runs (budget raised to
hold them, a pretend cluster of 100,000 slots so the grid goes at once, runs that finish
the moment they are polled, no curves), through the path `orch submit` takes, in a
temporary store on local disk:

1. plan: `load_plan` (parse, validate, expand the grid into RunSpecs);
2. run: `Study.run` with the plan's SimulatedBackend (the round's specs stored as one
   spec part, events logged, the summary rows of the runs each poll ends group-committed
   as one summary part, the experiment's summary rebuilt);
3. fit: the law fitted to every run as `orch submit` fits it (AutoLaw: every form, backtests).

Prints one Markdown section (times per phase, per-run cost, the driver's peak RSS) with a
verdict against issue 24's goal of <= 20 s for 10,000 runs, and exits 0.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_S = 20.0  # issue 24: a 10,000-run simulated study, plan to fit
GOAL_RUNS = 10_000


def write_plan(directory: Path, levels: int, sizes: int) -> Path:
    plan = yaml.safe_load((ROOT / "plans" / "simulated.yaml").read_text())
    plan["name"] = f"simulated-{levels}x{sizes}"
    plan["store"] = str(directory / "experiments")
    plan["budget"] = {"flops": 1e26, "adaptive_share": 0.0}
    plan["seed_grid"].update(levels=levels, sizes_per_level=sizes, max_flops=3e20)
    plan["backend"].update(slots=100_000, flops_per_s=1e40, curves=False)
    path = directory / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def measure(plan_path: Path) -> dict:
    from orchestrator.adaptive.study import Study
    from orchestrator.laws.fit_report import fit_observations, observations_from_summary
    from orchestrator.planning import load_plan
    from orchestrator.planning.axis import compute_axis
    from storage.store import Store

    times, rss = {}, {}
    t0 = time.perf_counter()
    plan = load_plan(plan_path)
    times["plan"], rss["plan"] = time.perf_counter() - t0, _peak_rss_mb()

    t0 = time.perf_counter()
    store = Store(plan.experiment_uri)
    result = Study(plan, store=store).run(poll_s=0.5)
    times["run"], rss["run"] = time.perf_counter() - t0, _peak_rss_mb()

    t0 = time.perf_counter()
    summary = store.summary()
    observations = observations_from_summary(summary, Path(plan.experiment_uri))
    fit = fit_observations(observations.on_axis(compute_axis(plan)))
    times["fit"], rss["fit"] = time.perf_counter() - t0, _peak_rss_mb()
    finished = sum(v.state.value == "finished" for v in result.execution.runs)
    return {
        "times": times,
        "rss": rss,
        "runs": len(result.execution.runs),
        "finished": finished,
        "summary_rows": summary.num_rows,
        "form": fit.record.form,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def report(res: dict, args, profile_text: str) -> str:
    t = res["times"]
    total = sum(t.values())
    n = res["runs"]
    lines = [
        "## Simulated study, plan to fit, in one process (bench/simulated_study.py)",
        "",
        f"Python {platform.python_version()}, {platform.machine()}; "
        f"{args.levels} levels x {args.sizes} sizes of plans/simulated.yaml; "
        f"{n} runs planned, {res['finished']} finished, {res['summary_rows']} summary rows; "
        f"fitted form: {res['form']}.",
        "",
        "| Phase | Seconds | ms per run | peak RSS after it, MB |",
        "|---|---:|---:|---:|",
    ]
    for name in ("plan", "run", "fit"):
        lines.append(
            f"| {name} | {t[name]:.2f} | {1e3 * t[name] / n:.2f} | {res['rss'][name]:.0f} |"
        )
    lines += [
        f"| **total** | **{total:.2f}** | **{1e3 * total / n:.2f}** | |",
        "",
        f"Driver peak RSS: {res['peak_rss_mb']:.0f} MB.",
        "",
    ]
    if n >= GOAL_RUNS:
        verdict = "PASS" if total <= GOAL_S else "FAIL"
        lines.append(
            f"Goal (issue 24): {GOAL_RUNS:,} runs plan to fit in <= {GOAL_S:g} s: "
            f"{total:.1f} s, {verdict}."
        )
    else:
        lines.append(f"Goal (issue 24) not judged: {n} runs is below {GOAL_RUNS:,} (--quick).")
    if profile_text:
        lines += ["", "```", profile_text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20 x 20 runs")
    p.add_argument("--levels", type=int, default=106)
    p.add_argument("--sizes", type=int, default=100)
    p.add_argument("--profile", action="store_true", help="print the top 25 functions")
    args = p.parse_args(argv)
    if args.quick:
        args.levels = args.sizes = 20
    scratch = Path(tempfile.mkdtemp(prefix="orch-simstudy-"))
    try:
        plan_path = write_plan(scratch, args.levels, args.sizes)
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        res = measure(plan_path)
        text = ""
        if profiler:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            text = out.getvalue()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(report(res, args, text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
