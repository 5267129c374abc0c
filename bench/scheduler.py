"""Scheduler throughput: the project's RayBackend + run loop against Ray Tune, same local Ray.

    python bench/scheduler.py            # the full run (about 10-15 minutes on 2 busy cores)
    python bench/scheduler.py --quick    # small N, a smoke test

Both systems drive simulated runs (workers/simulated.py: the ground-truth law's loss, one
summary row written to a store, no loss curve) that either return at once ("instant") or
sleep 50 ms first ("50 ms"), on an embedded local Ray of this machine's CPUs, one CPU per
run, so as many runs go at once as there are cores.

- project: `orchestrator.scheduler.execution.prepare` + `execute` over a
  `RayBackend(kind="simulate")`
  (pooled, reused actor gangs), poll_s=0.05. Each run's spec, events and summary go to
  the store with their usual fsyncs: that is the scheduler's real per-run cost.
- Ray Tune: a function trainable doing the same work (the same `simulate_run` into a
  store of its own) over `tune.grid_search` of N configs, `reuse_actors=True` (Tune's
  default is False; True is Tune's fastest setting for short trials), `verbose=0`, a
  temporary `storage_path`, everything else at Tune's defaults.

- bare Ray actor calls (instant runs, N = 100 and 1,000): the project's rank actors, one
  per CPU, each handed its next run's spec the moment its last call returns, and nothing
  else (no spec or event store, no retries, no polling). Not a scheduler: the floor under
  any scheduler that makes one Ray actor call per run, so a ratio over Tune that even
  this loop does not reach is out of reach of that design on this machine. The report
  splits its time into its actors' start-up (to the first run's end) and the runs after
  it, against the wall time 10x Tune allows, and gives the run's own work timed in one
  process without Ray (`simulate_run` on up to 200 specs): the rest of the per-run time
  is Ray's actor call. It also times Ray starting as many empty actors (no imports) and
  answering one call on each: start-up no actor-based scheduler avoids.

Each (system, variant, N) runs in a fresh process with a fresh Ray, so its peak RSS
(`getrusage` maxrss of the driver) is its own. Times exclude starting Ray and importing,
and include everything from handing the N runs over to all N having ended and the
system having let go of its actors (for the project: `prepare`, the first gangs' start
and `RayBackend.shutdown`; for Tune: `Tuner.fit`, which stops its actors itself).
"steady" per-run time excludes start-up: the time from the first run's end to the
last's, over N - 1.
Tune is measured only at N it finishes within its case's time limit here (25 minutes at
10,000); nothing is extrapolated.

Goals (issue 24): >= 10x Tune (reuse_actors=True) at every N measured for both; at 10,000
instant runs >= 250 runs/s, the last 1,000 runs' per-run cost within 1.1x of the first
1,000's, and driver peak RSS <= 300 MB.

Runs of a fixed duration d on k slots cap any scheduler at k / d runs/s (every slot busy
back to back, start-up free): 40 runs/s for 50 ms on 2 slots. Where that cap is below
10x Tune's measured rate, no scheduler could meet the goal on this machine; the report
says so for that row and gives the project's share of the cap instead.

Prints one Markdown section to stdout (`make bench` collects it into bench/RESULTS.md)
and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GOAL_VS_TUNE = 10.0  # project runs/s over Tune's (reuse_actors=True), at equal N (issue 24)
GOAL_RATE_10K = 250.0  # project runs/s at 10,000 instant runs
GOAL_DRIFT = 1.1  # per-run cost over the last 1,000 ends / the first 1,000, at 10,000
GOAL_RSS_MB = 300.0  # driver peak RSS at 10,000 instant runs
DURATION_S = {"instant": 0.0, "50 ms": 0.05}


@dataclass(frozen=True)
class Case:
    system: str  # "project", "tune" (reuse_actors=True) or "tune-defaults" (False)
    variant: str  # a key of DURATION_S
    n: int  # runs (trials)
    timeout_s: float  # the whole child process, Ray start-up included


# Each project case is followed by Tune's at the same N, so that a pair compared in a ratio
# runs under about the same load from whatever else shares the machine.
FULL = [
    Case("project", "instant", 100, 180),
    Case("tune", "instant", 100, 240),
    Case("project", "instant", 300, 180),
    Case("tune", "instant", 300, 300),
    Case("project", "instant", 1_000, 240),
    Case("tune", "instant", 1_000, 300),
    Case("bare", "instant", 100, 180),
    Case("bare", "instant", 1_000, 180),
    Case("project", "50 ms", 100, 180),
    Case("tune", "50 ms", 100, 240),
    Case("project", "50 ms", 1_000, 300),
    Case("tune", "50 ms", 1_000, 300),
    Case("project", "instant", 10_000, 600),
    Case("tune", "instant", 10_000, 1500),
]
QUICK = [
    Case("project", "instant", 20, 120),
    Case("project", "instant", 100, 120),
    Case("project", "50 ms", 20, 120),
    Case("tune", "instant", 20, 180),
    Case("bare", "instant", 20, 120),
    Case("tune", "50 ms", 20, 180),
]


# -- the child: one case, in a fresh process with a fresh Ray --------------------------
def _spec(i: int):
    from workers.spec import RunSpec, Shape

    # Distinct tokens give distinct run_ids; 1,024 tokens per step, so run i has i + 1 steps.
    return RunSpec(
        shape=Shape(n_layer=2, d_model=32, n_head=2), tokens=1024 * (i + 1), global_batch=16
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _start_ray() -> float:
    """Start an embedded local Ray; seconds it took."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - t0


def _run_project(n: int, duration_s: float, root: Path) -> dict:
    from orchestrator.scheduler.base import RunState
    from orchestrator.scheduler.execution import execute, prepare
    from orchestrator.scheduler.ray_backend import RayBackend
    from storage.store import Store

    ends: list[float] = []  # perf_counter at which the loop saw each run end

    class TimedRayBackend(RayBackend):
        """RayBackend that notes when each run's end is seen (a list append per run)."""

        def poll(self, run_ids):
            statuses = super().poll(run_ids)
            now = time.perf_counter()
            ends.extend(now for s in statuses.values() if s.state.is_terminal)
            return statuses

    specs = [_spec(i) for i in range(n)]
    store = Store(str(root / "experiment"))
    made: list[RayBackend] = []

    def factory() -> RayBackend:
        made.append(
            TimedRayBackend(
                store.uri,
                kind="simulate",
                options={"duration_s": duration_s, "write_curves": False},
            )
        )
        return made[-1]

    t0, c0 = time.perf_counter(), time.process_time()
    execution = prepare(specs, store)
    prepare_s = time.perf_counter() - t0
    execute(execution, store, factory, poll_s=0.05)
    for backend in made:  # inside the timing, as Tune's fit() stops its own actors
        backend.shutdown()
    finished = sum(v.state is RunState.FINISHED for v in execution.runs)
    gangs = made[0].gangs_started if made else 0
    return {**_timed(t0, c0, ends, finished, f"{gangs} gang(s) started"), "prepare_s": prepare_s}


def _run_bare(n: int, duration_s: float, root: Path) -> dict:
    """The floor under any scheduler that makes one Ray actor call per run: as many of the
    project's rank actors as there are CPUs, each handed its next run the moment its last
    one returns, and nothing else (no store of specs or events, no retries, no polling)."""
    import ray

    from orchestrator.scheduler.ray_actor import RankActor
    from storage.store import Store

    store = Store(str(root / "experiment"))
    options = {"duration_s": duration_s, "write_curves": False}
    pending = iter(_spec(i).to_json() for i in range(n))
    ends: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    slots = int(ray.cluster_resources().get("CPU", 1))
    # Fresh actors, one per slot, started inside the timing as the project's gangs are.
    actors = [
        RankActor.options(num_cpus=1).remote("simulate", store.uri, 1, options)
        for _ in range(slots)
    ]
    calls = {}

    def feed(actor) -> None:  # the actor's next run, if any is left
        spec_json = next(pending, None)
        if spec_json is not None:
            calls[actor.run.remote(spec_json, 0, 0, None)] = actor

    for actor in actors:
        feed(actor)
    finished = 0
    while calls:
        done, _ = ray.wait(list(calls), num_returns=1)
        for ref in done:
            actor = calls.pop(ref)
            finished += ray.get(ref)["status"] == "finished"
            ends.append(time.perf_counter())
            feed(actor)
    for actor in actors:
        ray.kill(actor)
    result = _timed(t0, c0, ends, finished, f"{len(actors)} actors")
    return {
        **result,
        "work_ms": _work_ms(min(n, 200), duration_s, root),
        "empty_start_s": _empty_actors_start_s(slots),
    }


def _empty_actors_start_s(k: int) -> float:
    """Seconds Ray takes to start k actors that import nothing and answer one call: the
    start-up no actor-based scheduler avoids."""
    import ray

    @ray.remote(num_cpus=1)
    class Empty:
        def ping(self) -> int:
            return 1

    t0 = time.perf_counter()
    actors = [Empty.remote() for _ in range(k)]
    ray.get([actor.ping.remote() for actor in actors])
    elapsed = time.perf_counter() - t0
    for actor in actors:
        ray.kill(actor)
    return elapsed


def _work_ms(n: int, duration_s: float, root: Path) -> float:
    """Milliseconds a run's own work takes in one process, no Ray: what the bare loop's
    per-run time holds besides Ray's actor call."""
    from storage.store import Store
    from workers.simulated import TrueLaw, simulate_run
    from workers.spec import RunSpec

    store, law = Store(str(root / "in-process")), TrueLaw()
    specs = [_spec(i).to_json() for i in range(n)]
    t0 = time.perf_counter()
    for spec_json in specs:  # decoded as the actor decodes it
        spec = RunSpec.from_json(spec_json)
        simulate_run(spec, store, attempt=0, law=law, duration_s=duration_s, write_curve=False)
    return 1e3 * (time.perf_counter() - t0) / n


def _trainable(config: dict) -> None:
    """Tune's side of the same work: one simulated run written to a store, then report."""
    from ray import tune

    from storage.store import Store
    from workers.simulated import TrueLaw, simulate_run

    outcome = simulate_run(
        _spec(config["i"]),
        Store(config["store"]),
        attempt=0,
        law=TrueLaw(),
        duration_s=config["duration_s"],
        write_curve=False,
    )
    tune.report({"loss": outcome["final_loss"]})


def _run_tune(n: int, duration_s: float, root: Path, *, reuse_actors: bool = True) -> dict:
    from ray import tune

    ends: list[float] = []

    class Ends(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            ends.append(time.perf_counter())

    tuner = tune.Tuner(
        _trainable,
        param_space={
            "i": tune.grid_search(list(range(n))),
            "duration_s": duration_s,
            "store": str(root / "tune-store"),
        },
        tune_config=tune.TuneConfig(reuse_actors=reuse_actors),
        run_config=tune.RunConfig(
            storage_path=str(root / "tune-results"), verbose=0, callbacks=[Ends()]
        ),
    )
    t0, c0 = time.perf_counter(), time.process_time()
    grid = tuner.fit()
    finished = sum(r.error is None and r.metrics.get("loss") is not None for r in grid)
    return _timed(t0, c0, ends, finished, f"reuse_actors={reuse_actors}")


def _timed(t0: float, c0: float, ends: list[float], finished: int, note: str) -> dict:
    """A case's result: wall and CPU time since (t0, c0), run ends relative to t0."""
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "ends": [t - t0 for t in ends],
        "finished": finished,
        "note": note,
    }


def child(system: str, variant: str, n: int, root: Path, out: Path) -> None:
    # Runs in its own process: the parent discards stdout and shows stderr only on failure.
    ray_start_s = _start_ray()
    rss_ready = _peak_rss_mb()
    if system == "project":
        result = _run_project(n, DURATION_S[variant], root)
    elif system == "bare":
        result = _run_bare(n, DURATION_S[variant], root)
    else:  # "tune", or "tune-defaults": Tune's default reuse_actors=False
        result = _run_tune(n, DURATION_S[variant], root, reuse_actors=system == "tune")
    import ray

    result.update(
        ray_start_s=ray_start_s,
        rss_ready_mb=rss_ready,
        peak_rss_mb=_peak_rss_mb(),
        slots=int(ray.cluster_resources().get("CPU", 0)),
    )

    ray.shutdown()
    out.write_text(json.dumps(result))


# -- the parent: run every case, then report ------------------------------------------
def run_case(case: Case, scratch: Path) -> tuple[dict | None, str]:
    """(result, "") or (None, why there is none)."""
    root = Path(tempfile.mkdtemp(prefix=f"{case.system}-{case.n}-", dir=scratch))
    out = root / "result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case.system]
    cmd += [case.variant, str(case.n), str(root), str(out)]
    # Its own session: on a timeout the child's Ray processes are stopped with it.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, err = proc.communicate(timeout=case.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        shutil.rmtree(root, ignore_errors=True)
        return None, f"did not finish within {case.timeout_s:.0f} s (Ray start-up included)"
    _kill_group(proc)  # anything of its Ray still lingering
    try:
        result = json.loads(out.read_text()) if proc.returncode == 0 else None
    except (OSError, ValueError):
        result = None
    shutil.rmtree(root, ignore_errors=True)
    if result is None:
        tail = (err or "").strip().splitlines()[-1:] or ["no output"]
        return None, f"failed (exit {proc.returncode}): {tail[0][:300]}"
    return result, ""


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        time.sleep(2)
    proc.wait()


def _per_run_ms(ends: list[float], first: int, last: int) -> float:
    """Milliseconds per run between the `first`-th and `last`-th run ends (0-based)."""
    return 1e3 * (ends[last] - ends[first]) / (last - first)


def _versions() -> str:
    import importlib.metadata as md

    return (
        f"Python {platform.python_version()}, ray {md.version('ray')}, "
        f"pyarrow {md.version('pyarrow')}"
    )


def report(cases: list[Case], results: dict, args, elapsed_s: float, loads) -> str:
    name = {
        "project": "project (RayBackend + loop)",
        "tune": "Ray Tune, reuse_actors=True",
        "tune-defaults": "Ray Tune, defaults (reuse_actors=False)",
        "bare": "bare Ray actor calls (no scheduler)",
    }
    lines = [
        "## Scheduler throughput: the project's RayBackend vs Ray Tune, same local Ray",
        "",
        "Command: `python bench/scheduler.py"
        + (" --quick" if args.quick else "")
        + (" --tune-defaults" if args.tune_defaults else "")
        + (f" --max-n {args.max_n}" if args.max_n is not None else "")
        + (f" --variant '{args.variant}'" if args.variant is not None else "")
        + "`",
        "",
        f"{os.cpu_count()} CPUs, shared with other work (load average {loads[0]:.1f} at the "
        f"start, {loads[1]:.1f} at the end); {_versions()}. Each row is one run of one fresh "
        "process with its own embedded Ray (1 CPU per run, so runs go "
        f"{os.cpu_count()} at once). A run is `workers.simulated.simulate_run` writing its "
        "summary row (no curve), returning at once or after a 50 ms sleep. Wall time counts "
        "from handing over the N runs to all having ended and the actors let go (Ray "
        "start-up excluded, first actors' start-up included); *steady* is the time from "
        "the first run's end to the last's, per run; *driver CPU* is the driver process's "
        "own CPU time per run (other load barely moves it). Tune: a function trainable "
        "doing the same work, `grid_search` over N configs, `verbose=0`, defaults "
        "otherwise; `reuse_actors=True` (not Tune's default) is its faster setting and the "
        "peer for the goal.",
        "",
        "| system | variant | N | wall s | runs/s | per-run ms | steady per-run ms "
        "| driver CPU ms/run | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in sorted(cases, key=lambda c: (c.system, c.variant, c.n)):
        res, why = results[case]
        if res is None:
            lines.append(f"| {name[case.system]} | {case.variant} | {case.n:,} | {why} |||||")
            continue
        n, wall = case.n, res["wall_s"]
        ends = sorted(res["ends"])
        steady = f"{_per_run_ms(ends, 0, len(ends) - 1):.2f}" if len(ends) > 1 else "n/a"
        done = "" if res["finished"] == n else f" (only {res['finished']:,} finished)"
        lines.append(
            f"| {name[case.system]} | {case.variant} | {n:,}{done} | {wall:.2f} | "
            f"{n / wall:,.1f} | {1e3 * wall / n:.2f} | {steady} | {1e3 * res['cpu_s'] / n:.2f} | "
            f"{res['peak_rss_mb']:.0f} ({res['rss_ready_mb']:.0f} before the runs) |"
        )
    lines += ["", *_verdicts(cases, results), ""]
    starts = [r["ray_start_s"] for r, _ in results.values() if r is not None]
    if starts:
        lines.append(
            f"- Ray start-up (excluded above): {min(starts):.1f}-{max(starts):.1f} s per process."
        )
    largest = max((c for c in cases if c.system == "project"), key=lambda c: c.n, default=None)
    if largest is not None and results[largest][0] is not None:
        res = results[largest][0]
        lines.append(
            f"- project, {largest.variant}, N = {largest.n:,}: `prepare` (write {largest.n:,} "
            f"specs, read back their state) took {res['prepare_s']:.1f} s of the wall time; "
            f"{res['note']}."
        )
    lines += [f"- Wall time of this benchmark: {elapsed_s / 60:.1f} min.", ""]
    return "\n".join(lines)


def _ratio_bound(project: dict, variant: str, tune_rate: float) -> tuple[float, float] | None:
    """(runs/s no scheduler can exceed, the largest possible ratio over Tune) for runs of a
    fixed duration: every slot busy with runs back to back, start-up free. None for
    instant runs, whose only cost is the scheduler's."""
    duration = DURATION_S[variant]
    if duration <= 0 or not project.get("slots"):
        return None
    ceiling = project["slots"] / duration
    return ceiling, ceiling / tune_rate


def _bare_budget(bare: dict, n: int, tune_rate: float) -> str:
    """Where the bare loop's time goes, against the wall time 10x Tune allows: its actors'
    start-up (until the first run ended) and the runs after it, back to back."""
    budget = n / (GOAL_VS_TUNE * tune_rate)
    ends = sorted(bare["ends"])
    start, rest = ends[0], ends[-1] - ends[0]
    return (
        f"  - {GOAL_VS_TUNE:.0f}x Tune means all {n:,} runs in {budget:.2f} s. The bare loop "
        f"took {start:.2f} s to its first run's end (starting its actors) and {rest:.2f} s "
        f"from there to the last ({1e3 * rest / max(1, len(ends) - 1):.2f} ms a run, on "
        f"{bare['slots']} actors at once; the run's own work in one process without Ray: "
        f"{bare['work_ms']:.2f} ms a run). Ray alone starts {bare['slots']} empty actors "
        f"and answers a call on each in {bare['empty_start_s']:.2f} s here."
    )


def _verdicts(cases: list[Case], results: dict) -> list[str]:
    got = {(c.system, c.variant, c.n): r for c, (r, _) in results.items() if r is not None}

    def rate(key) -> float:
        return key[2] / got[key]["wall_s"]

    out, ratios, out_of_reach = [], [], []
    for system, variant, n in sorted(got, key=lambda k: (k[0], k[1], k[2])):
        if system.startswith("tune") and ("project", variant, n) in got:
            ratio = rate(("project", variant, n)) / rate((system, variant, n))
            setting = "reuse_actors=True" if system == "tune" else "Tune's defaults"
            out.append(
                f"- project / Tune ({setting}) throughput, {variant}, N = {n:,} (both measured "
                f"at this N): **{ratio:.1f}x**."
            )
            bound = _ratio_bound(got[("project", variant, n)], variant, rate((system, variant, n)))
            if bound is not None:
                ceiling, best = bound
                out.append(
                    f"  - Runs that last {DURATION_S[variant] * 1e3:.0f} ms on "
                    f"{got[('project', variant, n)]['slots']} slots cap any scheduler at "
                    f"{ceiling:.0f} runs/s, so no scheduler can beat {best:.1f}x Tune here; the "
                    f"project reaches {rate(('project', variant, n)) / ceiling:.0%} of that cap."
                )
            if ("bare", variant, n) in got and system == "tune":
                floor = rate(("bare", variant, n))
                out.append(
                    f"  - A bare loop of Ray actor calls doing the same work, one call per run "
                    f"and no scheduler, reaches {floor / rate((system, variant, n)):.1f}x Tune "
                    f"here; the project reaches {rate(('project', variant, n)) / floor:.0%} of "
                    "that loop's rate."
                )
                out.append(_bare_budget(got[("bare", variant, n)], n, rate((system, variant, n))))
            if system != "tune":
                continue
            if bound is not None and bound[1] < GOAL_VS_TUNE:
                out_of_reach.append((variant, n, bound[1]))
            else:
                ratios.append(ratio)
    if ratios:
        met = "met" if min(ratios) >= GOAL_VS_TUNE else "NOT met"
        out.append(
            f"- Goal: at least {GOAL_VS_TUNE:.0f}x Ray Tune's throughput at equal N, wherever the "
            f"hardware allows it: **{met}** (lowest ratio {min(ratios):.1f}x)."
        )
    else:
        out.append("- Goal vs Ray Tune: not evaluated (no N measured for both systems).")
    for variant, n, best in out_of_reach:
        out.append(
            f"  - Out of reach on this machine for any scheduler: {variant}, N = {n:,} "
            f"(at most {best:.1f}x, see above)."
        )
    big = got.get(("project", "instant", 10_000))
    if big is None:
        out.append("- Goals at N = 10,000 (rate, drift, RSS): not evaluated (not measured).")
        return out
    rate_10k = rate(("project", "instant", 10_000))
    met = "met" if rate_10k >= GOAL_RATE_10K else "NOT met"
    out.append(
        f"- Goal: at least {GOAL_RATE_10K:.0f} runs/s at N = 10,000 instant runs: "
        f"{rate_10k:.0f} runs/s: **{met}**."
    )
    ends = sorted(big["ends"])
    if len(ends) >= 2_000:
        early = _per_run_ms(ends, 0, 999)
        late = _per_run_ms(ends, len(ends) - 1000, len(ends) - 1)
        met = "met" if late <= GOAL_DRIFT * early else "NOT met"
        out.append(
            f"- Goal: per-run cost over the last 1,000 ends within {GOAL_DRIFT}x of the first "
            f"1,000's: {late:.2f} ms vs {early:.2f} ms ({late / early:.2f}x): **{met}**."
        )
    met = "met" if big["peak_rss_mb"] <= GOAL_RSS_MB else "NOT met"
    out.append(
        f"- Goal: driver peak RSS at most {GOAL_RSS_MB:.0f} MB at N = 10,000: "
        f"{big['peak_rss_mb']:.0f} MB ({big['rss_ready_mb']:.0f} MB before the runs): **{met}**."
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N (smoke test)")
    parser.add_argument(
        "--tune-defaults",
        action="store_true",
        help="also Tune at its defaults (reuse_actors=False), instant, N = 100: about 6 more "
        "minutes here (a fresh actor per trial)",
    )
    parser.add_argument(
        "--max-n", type=int, default=None, help="skip cases with more runs than this"
    )
    parser.add_argument(
        "--variant", choices=sorted(DURATION_S), default=None, help="only this run duration"
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        system, variant, n, root, out = args.child
        child(system, variant, int(n), Path(root), Path(out))
        return 0
    cases = QUICK if args.quick else FULL
    if args.tune_defaults:
        cases = [*cases, Case("tune-defaults", "instant", 20 if args.quick else 100, 600)]
    if args.max_n is not None:
        cases = [c for c in cases if c.n <= args.max_n]
    if args.variant is not None:
        cases = [c for c in cases if c.variant == args.variant]
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="orch-bench-scheduler-"))
    results = {}
    try:
        for case in cases:
            started = time.monotonic()
            results[case] = run_case(case, scratch)
            print(
                f"{case.system} {case.variant} N={case.n}: {time.monotonic() - started:.0f} s "
                f"{results[case][1] or 'ok'}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    loads = (load0, os.getloadavg()[0])
    print(report(cases, results, args, time.monotonic() - t0, loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
