"""RayBackend: each run is a gang of world_size rank actors in one placement group.

Rank 0's actor hosts the torch.distributed rendezvous store on its node and returns its
address; the other ranks receive that address as an ObjectRef argument, so `submit`
never blocks. Gangs are pooled by world size and reused by the next run of the same
size: actor start-up (a process, importing torch and DeepSpeed) costs seconds, a warm
gang starts a run at once. An idle gang is evicted when a run of another size needs its
resources. Tasks are named `run:<run_id>:rank<r>` and actors show the same name (their
repr) in the dashboard; rank 0 exports `ray.util.metrics` gauges for loss and tokens/s.
The rank actor and Ray's start-up live in ray_actor.py; this module is the driver's side.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# ray_actor sets Ray's environment before Ray is first imported: import it first.
from orchestrator.scheduler.ray_actor import RankActor, start_ray  # isort: skip

import ray
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from orchestrator.scheduler.base import Backend, RunState, RunStatus
from workers.spec import RunSpec

log = logging.getLogger(__name__)

RUNS_GAUGE = "orch_runs"  # the study's runs by state; Prometheus sees ray_orch_runs


@dataclass
class _Gang:
    world_size: int
    pg: Any
    actors: list[Any]
    # Resolves once Ray has reserved every bundle; None once it has (checked no more).
    placing: Any = None


@dataclass
class _Job:
    spec: RunSpec
    attempt: int
    gang: _Gang
    refs: list[Any]
    # Each rank's ended call: its return value and None, or None and its error; read once.
    results: dict[Any, tuple[Any, BaseException | None]] = field(default_factory=dict)
    progress_ref: Any = None
    progress: dict[str, Any] | None = None
    failing_since: float | None = None  # monotonic time the first rank failed
    # When progress was last asked for; the first ask comes a quarter second after the
    # start, so runs that end sooner cost no call and longer ones show progress at once.
    progress_at: float = field(default_factory=lambda: time.monotonic() - 0.75)


# When one rank fails, how long the other ranks' results are awaited (over later polls,
# never blocking) before the run is judged: a lost node kills every rank on it, but a
# survivor may report its broken collective first; that is a preemption, not a failure.
_SETTLE_S = 10.0
_RESOURCES_TTL_S = 1.0  # how long the cluster's total slots are trusted
_PROGRESS_EVERY_S = 1.0  # how often a running job's live progress is asked for


class RayBackend(Backend):
    """Runs specs on Ray: embedded locally by default, or on the cluster at `address`.

    Args:
        kind: "train" (DeepSpeed, the real thing) or "simulate" (workers/simulated.py).
        options: for "simulate": `law` (TrueLaw fields), `duration_s`; for "train":
            `peak_flops_per_s` (the declared peak for MFU).
    """

    def __init__(
        self,
        store_uri: str,
        *,
        address: str | None = None,
        cpus_per_rank: int = 1,
        gpus_per_rank: int = 0,
        kind: str = "train",
        options: dict[str, Any] | None = None,
    ):
        self.store_uri = store_uri
        self.cpus_per_rank = cpus_per_rank
        self.gpus_per_rank = gpus_per_rank
        self.kind = kind
        self.options = options or {}
        self.dashboard_url = start_ray(address)
        self._jobs: dict[str, _Job] = {}
        self._idle: list[_Gang] = []
        self._names = itertools.count()
        self._slot = ("GPU", gpus_per_rank) if gpus_per_rank else ("CPU", cpus_per_rank)
        self.gangs_started = 0  # for tests and benchmarks: how often the pool missed
        self._slots, self._slots_at = 0, -float("inf")
        self._runs_gauge = None
        self._experiment = store_uri.split("?")[0].rstrip("/").rsplit("/", 1)[-1]

    # -- the Backend interface --------------------------------------------------------
    def submit(self, spec: RunSpec, *, attempt: int) -> None:
        gang = self._take_gang(spec.world_size)
        # Multi-rank runs meet on rank 0's node; asking for it costs a round trip, which a
        # single rank (most runs of a study) and a simulated run (no process group) skip.
        meets = spec.world_size > 1 and self.kind != "simulate"
        rendezvous = gang.actors[0].rendezvous.remote() if meets else None
        spec_json = spec.to_json()
        refs = [
            self._method(actor, spec.run_id, rank).remote(spec_json, attempt, rank, rendezvous)
            for rank, actor in enumerate(gang.actors)
        ]
        self._jobs[spec.run_id] = _Job(spec, attempt, gang, refs)
        log.info(
            "run %s attempt %d: submitted on %d ranks, ZeRO-%d",
            spec.run_id,
            attempt,
            spec.world_size,
            spec.zero_stage,
        )

    def _method(self, actor, run_id: str, rank: int):
        """The rank's `run` call, named `run:<id>:rank<r>` for training runs, so the
        dashboard's task list shows which run each actor is training. Simulated runs go
        unnamed: Ray's driver keeps about 9 KB per distinct task name for as long as it
        lives (10,000 calls: +90 MB named, +10 MB unnamed), which a study of thousands of
        instant runs pays and learns nothing from."""
        if self.kind == "simulate":
            return actor.run
        return actor.run.options(name=f"run:{run_id}:rank{rank}")

    def poll(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        jobs = {run_id: self._jobs[run_id] for run_id in run_ids if run_id in self._jobs}
        self._unblock_placement(jobs.values())
        # One wait over every rank of every job: a call per job costs the driver ~1 ms
        # each, which at thousands of short runs is most of its time.
        refs = [ref for job in jobs.values() for ref in job.refs]
        done = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if refs else set()
        statuses = {}
        for run_id, job in jobs.items():
            for ref in job.refs:
                if ref in done and ref not in job.results:
                    job.results[ref] = _result(ref)
            failed = [err for _, err in job.results.values() if err is not None]
            if failed and len(job.results) < len(job.refs):
                job.failing_since = job.failing_since or time.monotonic()
                if time.monotonic() - job.failing_since < _SETTLE_S:
                    statuses[run_id] = RunStatus(RunState.RUNNING, outcome=job.progress or {})
                    continue
            if failed or len(job.results) == len(job.refs):
                statuses[run_id] = self._finish(run_id, failed)
            else:
                statuses[run_id] = RunStatus(RunState.RUNNING, outcome=self._progress(job))
        return statuses

    def cancel(self, run_id: str, *, reason: str) -> None:
        job = self._jobs.pop(run_id, None)
        if job is not None:
            log.info("run %s: cancelled (%s)", run_id, reason)
            self._kill(job.gang)  # a running train() cannot be interrupted more gently

    def capacity(self) -> int | None:
        """Free rank slots; idle pooled gangs count as free (they are evicted on demand)."""
        return max(0, self._total_slots() - self._busy_slots())

    def wait(self, timeout_s: float) -> bool:
        """Block until some running job's rank returns, or `timeout_s` passes: short runs
        are collected as soon as they end, not at the next tick."""
        # Not the ranks already read: one ended rank of a run whose others still run (a
        # failed rank awaiting its peers' verdict) would end every wait at once.
        refs = [r for job in self._jobs.values() for r in job.refs if r not in job.results]
        if not refs:
            return False  # nothing of ours to wait for: the loop sleeps its interval
        ray.wait(refs, num_returns=1, timeout=timeout_s)
        return True

    def observe(self, counts: dict[RunState, int]) -> None:
        """Export the study's runs by state as the `orch_runs` gauge (dashboard Metrics)."""
        if self._runs_gauge is None:
            from ray.util.metrics import Gauge

            self._runs_gauge = Gauge(
                RUNS_GAUGE,
                description="runs of the study by state",
                tag_keys=("experiment", "state"),
            )
        for state, count in counts.items():
            self._runs_gauge.set(count, tags={"experiment": self._experiment, "state": state.value})

    def shutdown(self) -> None:
        """Kill every pooled and running gang (the embedded Ray itself stays up)."""
        for job in self._jobs.values():
            self._kill(job.gang)
        for gang in self._idle:
            self._kill(gang)
        self._jobs.clear()
        self._idle.clear()

    # -- the gang pool ----------------------------------------------------------------
    def _take_gang(self, world_size: int) -> _Gang:
        for i, gang in enumerate(self._idle):
            if gang.world_size == world_size:
                return self._idle.pop(i)
        # Make room: evict idle gangs of other sizes, oldest first.
        while self._idle and (
            self._total_slots() - self._busy_slots() - self._idle_slots() < world_size
        ):
            self._kill(self._idle.pop(0))
        return self._new_gang(world_size)

    def _new_gang(self, world_size: int) -> _Gang:
        resource, per_rank = self._slot
        bundle = {"CPU": self.cpus_per_rank}
        if self.gpus_per_rank:
            bundle["GPU"] = self.gpus_per_rank
        # STRICT_PACK keeps a run's ranks on one node (fast collectives) when a node can
        # hold it; larger runs PACK over as few nodes as possible.
        fits_one_node = world_size <= self._max_slots_per_node()
        pg = placement_group(
            [dict(bundle) for _ in range(world_size)],
            strategy="STRICT_PACK" if fits_one_node else "PACK",
        )
        n = next(self._names)
        actors = [
            RankActor.options(
                name=f"orch-gang{n}-rank{rank}",
                num_cpus=self.cpus_per_rank,
                num_gpus=self.gpus_per_rank,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=rank
                ),
            ).remote(self.kind, self.store_uri, self.cpus_per_rank, self.options)
            for rank in range(world_size)
        ]
        self.gangs_started += 1
        return _Gang(world_size, pg, actors, placing=pg.ready())

    def _unblock_placement(self, jobs: Iterable[_Job]) -> None:
        """Evict every idle gang while some job's gang still waits for its bundles.

        Idle gangs keep their placement groups, so their CPUs stay reserved. Free slots
        are counted over the whole cluster, but a STRICT_PACK gang needs them on one
        node: with one slot free on each of two nodes and idle gangs holding the rest, a
        2-rank gang would wait forever (a clean-clone run of the cluster test hung so).
        """
        waiting = False
        for job in jobs:
            gang = job.gang
            if gang.placing is not None:
                if ray.wait([gang.placing], timeout=0)[0]:
                    gang.placing = None
                else:
                    waiting = True
        if waiting and self._idle:
            log.info("a gang waits for resources: evicting %d idle gang(s)", len(self._idle))
            while self._idle:
                self._kill(self._idle.pop(0))

    def _kill(self, gang: _Gang) -> None:
        for actor in gang.actors:
            ray.kill(actor, no_restart=True)
        remove_placement_group(gang.pg)

    def _busy_slots(self) -> int:
        return sum(job.spec.world_size for job in self._jobs.values())

    def _idle_slots(self) -> int:
        return sum(g.world_size for g in self._idle)

    def _total_slots(self) -> int:
        # The loop asks before every feed; asking Ray each time costs ~1.5 ms, and nodes
        # come and go on a scale of seconds, so the answer is kept for a moment.
        now = time.monotonic()
        if now - self._slots_at > _RESOURCES_TTL_S:
            resource, per_rank = self._slot
            self._slots = int(ray.cluster_resources().get(resource, 0) // per_rank)
            self._slots_at = now
        return self._slots

    def _max_slots_per_node(self) -> int:
        resource, per_rank = self._slot
        per_node = [n["Resources"].get(resource, 0) for n in ray.nodes() if n.get("Alive")]
        return int(max(per_node, default=0) // per_rank)

    # -- results ----------------------------------------------------------------------
    def _progress(self, job: _Job) -> dict[str, Any]:
        # Never waits: collect the answer asked for last time, then ask again.
        if job.progress_ref is not None:
            done, _ = ray.wait([job.progress_ref], timeout=0)
            if done:
                try:
                    job.progress = ray.get(job.progress_ref)
                except (RayActorError, RayTaskError):
                    job.progress = None
                job.progress_ref = None
        # Asked at most once a second: a display needs no more, and each ask is a call
        # into the rank's actor.
        now = time.monotonic()
        if job.progress_ref is None and now - job.progress_at >= _PROGRESS_EVERY_S:
            job.progress_ref = job.gang.actors[0].progress.remote()
            job.progress_at = now
        return job.progress or {}

    def _finish(self, run_id: str, errors: list[BaseException]) -> RunStatus:
        job = self._jobs.pop(run_id)
        if errors:
            self._kill(job.gang)  # some rank is dead or broken: never reuse the gang
            lost = [e for e in errors if isinstance(e, (RayActorError, ActorDiedError))]
            if lost:  # a rank lost with its actor or node: the run was preempted
                return RunStatus(RunState.PREEMPTED, detail=_one_line(lost[0]))
            return RunStatus(RunState.FAILED, detail=_one_line(errors[0]))
        self._idle.append(job.gang)
        outcome = job.results[job.refs[0]][0]
        state = RunState(outcome["status"])  # finished or diverged
        return RunStatus(state, detail=f"node {outcome['node_id']}", outcome=outcome)


def _result(ref: Any) -> tuple[Any, BaseException | None]:
    """An ended call's (value, None), or (None, its error)."""
    try:
        return ray.get(ref, timeout=0), None
    except (RayActorError, RayTaskError) as err:
        return None, err


def _one_line(err: BaseException) -> str:
    if isinstance(err, RayTaskError) and err.cause is not None:
        err = err.cause
    text = f"{type(err).__name__}: {err}".strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(err).__name__
