"""SimulatedBackend: no training and no Ray; a ground-truth law answers instead.

Each run "takes" its FLOPs divided by `flops_per_s` of (injectable) clock time, then
writes a simulated loss curve and summary row to the store, exactly where a real worker
would. Preemptions and failures can be injected at given rates, drawn per (run, attempt)
so that a test sees the same faults every time.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from orchestrator.scheduler.base import Backend, RunState, RunStatus
from storage.store import Store
from workers.simulated import TrueLaw, simulate_run
from workers.spec import RunSpec


@dataclass
class _Pending:
    spec: RunSpec
    attempt: int
    done_at: float
    fate: RunState  # what this attempt will end as


class SimulatedBackend(Backend):
    def __init__(
        self,
        store: Store,
        *,
        law: TrueLaw | None = None,
        slots: int | None = None,
        flops_per_s: float = float("inf"),
        preempt_rate: float = 0.0,
        fail_rate: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        write_curves: bool = True,
    ):
        """
        Args:
            slots: rank slots (GPUs) the simulated cluster has; None: unlimited.
            flops_per_s: simulated speed of one run; inf finishes runs at the next poll.
            preempt_rate, fail_rate: probability that an attempt is preempted or fails.
        """
        self.store = store
        self.law = law or TrueLaw()
        self.slots = slots
        self.flops_per_s = flops_per_s
        self.preempt_rate = preempt_rate
        self.fail_rate = fail_rate
        self.clock = clock
        self.write_curves = write_curves
        self._pending: dict[str, _Pending] = {}

    def submit(self, spec: RunSpec, *, attempt: int) -> None:
        flops = (spec.flops_per_token or 6.0) * spec.tokens
        draw = _uniform(spec.run_id, attempt)
        fate = RunState.FINISHED
        if draw < self.preempt_rate:
            fate = RunState.PREEMPTED
        elif draw < self.preempt_rate + self.fail_rate:
            fate = RunState.FAILED
        self._pending[spec.run_id] = _Pending(
            spec, attempt, self.clock() + flops / self.flops_per_s, fate
        )

    def poll(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        now = self.clock()
        out = {}
        for run_id in run_ids:
            job = self._pending.get(run_id)
            if job is None:
                continue
            if now < job.done_at:
                out[run_id] = RunStatus(RunState.RUNNING)
                continue
            del self._pending[run_id]
            if job.fate is RunState.PREEMPTED:
                out[run_id] = RunStatus(job.fate, detail="simulated node loss")
            elif job.fate is RunState.FAILED:
                out[run_id] = RunStatus(job.fate, detail="RuntimeError: simulated failure")
            else:
                outcome = simulate_run(
                    job.spec,
                    self.store,
                    attempt=job.attempt,
                    law=self.law,
                    write_curve=self.write_curves,
                )
                out[run_id] = RunStatus(RunState.FINISHED, outcome=outcome)
        return out

    def cancel(self, run_id: str, *, reason: str) -> None:
        self._pending.pop(run_id, None)

    def wait(self, timeout_s: float) -> bool:
        """Return as soon as a run is due: at once if one is, else after sleeping until
        the first is (at most `timeout_s`), so that instant runs never wait for a poll
        interval. With an injected clock the loop's own sleep keeps time instead."""
        if self.clock is not time.monotonic:
            return False
        if self._pending:
            due = min(p.done_at for p in self._pending.values()) - self.clock()
            if due > 0:
                time.sleep(min(due, timeout_s))
        return True

    def capacity(self) -> int | None:
        if self.slots is None:
            return None
        return self.slots - sum(p.spec.world_size for p in self._pending.values())


def _uniform(run_id: str, attempt: int) -> float:
    digest = hashlib.sha256(f"fault:{run_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
