"""SimulatedBackend: no training and no Ray; a ground-truth law answers instead.

Each run "takes" its FLOPs divided by `flops_per_s` of (injectable) clock time, then
writes a simulated loss curve and summary row to the store, where a real worker would.
While it runs, each poll reports its progress (the step its share of that time has
reached, as a real worker's last metrics row) and writes its curve up to that step, so a
running run has a partial curve to read. Preemptions and failures can be injected at
given rates, drawn per (run, attempt) so that a test sees the same faults every time.

Without curves (a study of summaries only, the fast kind), the runs one poll ends are
group-committed: their rows go to the store as one summary part
(`Store.write_run_summaries`), written before the poll reports any of them finished, so
ten thousand runs cost a few files instead of one each, and a driver killed at any
moment has every run it was told had ended on disk, once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.scheduler.base import Backend, RunState, RunStatus
from storage.store import Store
from workers.simulated import TrueLaw, simulate_run, simulated_curve, simulated_n_params
from workers.spec import RunSpec

# Share of a run's steps whose rows a running simulated run writes at once (a real worker
# flushes every 30 s): a part per poll would be thousands of files on fast polls.
_FLUSH_SHARE = 0.02


@dataclass
class _Pending:
    spec: RunSpec
    attempt: int
    done_at: float
    fate: RunState  # what this attempt will end as
    started_at: float = 0.0
    rows: list[dict] | None = None  # its curve's metric rows, made at its first progress
    written: int = 0  # of those rows, how many are in the store
    written_step: int = 0  # the step the rows in the store reach
    latest: dict[str, Any] = field(default_factory=dict)  # progress last reported


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
        group_summaries: bool | None = None,
    ):
        """
        Args:
            slots: rank slots (GPUs) the simulated cluster has; None: unlimited.
            flops_per_s: simulated speed of one run; inf finishes runs at the next poll.
            preempt_rate, fail_rate: probability that an attempt is preempted or fails.
            group_summaries: one summary part per poll for the runs it ends, instead of
                a summary file per run; None: when curves are off (a run that writes its
                curve writes files of its own anyway, so its summary file costs little,
                and the study keeps the layout of a real one, summary beside curve).
        """
        self.store = store
        self.law = law or TrueLaw()
        self.slots = slots
        self.flops_per_s = flops_per_s
        self.preempt_rate = preempt_rate
        self.fail_rate = fail_rate
        self.clock = clock
        self.write_curves = write_curves
        self.group_summaries = not write_curves if group_summaries is None else group_summaries
        self._pending: dict[str, _Pending] = {}

    def submit(self, spec: RunSpec, *, attempt: int) -> None:
        flops = (spec.flops_per_token or 6.0) * spec.tokens
        draw = _uniform(spec.run_id, attempt)
        fate = RunState.FINISHED
        if draw < self.preempt_rate:
            fate = RunState.PREEMPTED
        elif draw < self.preempt_rate + self.fail_rate:
            fate = RunState.FAILED
        now = self.clock()
        self._pending[spec.run_id] = _Pending(
            spec, attempt, now + flops / self.flops_per_s, fate, started_at=now
        )

    def poll(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        now = self.clock()
        out = {}
        ended = []  # summary rows of the runs this poll ends (stored at once if grouped)
        for run_id in run_ids:
            job = self._pending.get(run_id)
            if job is None:
                continue
            if now < job.done_at:
                out[run_id] = RunStatus(RunState.RUNNING, outcome=self._progress(job, now))
                continue
            del self._pending[run_id]
            if job.fate is RunState.PREEMPTED:
                out[run_id] = RunStatus(job.fate, detail="simulated node loss")
            elif job.fate is RunState.FAILED:
                out[run_id] = RunStatus(job.fate, detail="RuntimeError: simulated failure")
            else:
                if job.written:  # the rest of a curve begun while running
                    self._write_rows(job, job.spec.steps)
                outcome = simulate_run(
                    job.spec,
                    self.store,
                    attempt=job.attempt,
                    law=self.law,
                    write_curve=self.write_curves and not job.written,
                    write_summary=not self.group_summaries,
                )
                out[run_id] = RunStatus(RunState.FINISHED, outcome=outcome)
                ended.append(outcome)
        if self.group_summaries:
            # Not flushed to disk, as simulate_run's own files: a simulated run redoes to
            # the same loss, so one a power loss drops is simply run again at resume.
            self.store.write_run_summaries(ended, durable=False)
        return out

    def cancel(self, run_id: str, *, reason: str) -> None:
        self._pending.pop(run_id, None)

    def _progress(self, job: _Pending, now: float) -> dict[str, Any]:
        """The step the run's share of its time has reached (a branch counts from its
        branch step), with the curve written up to it; the last row's values, as a real
        worker's progress. {} before its first step."""
        spec = job.spec
        start = spec.branch_step if spec.branch_from else 0
        share = (now - job.started_at) / max(job.done_at - job.started_at, 1e-300)
        step = start + int(share * (spec.steps - start))
        if step <= start:
            return {}
        if self.write_curves and step - max(start, job.written_step) >= spec.steps * _FLUSH_SHARE:
            self._write_rows(job, step)
        job.latest.update(step=step, steps_total=spec.steps, tokens=step * spec.tokens_per_step)
        return dict(job.latest)

    def _write_rows(self, job: _Pending, step: int) -> None:
        """The curve's rows up to `step` not yet written, as one part (the rows and their
        values are those `simulate_run` writes for a whole run)."""
        spec = job.spec
        if job.rows is None:
            job.rows = simulated_curve(spec, self.law)
        new = [r for r in job.rows[job.written :] if r["step"] <= step]
        if not new:
            return
        n = simulated_n_params(spec)
        per_token = spec.flops_per_token or 6.0 * n
        with self.store.metrics_writer(spec.run_id, attempt=job.attempt, fsync=False) as w:
            for row in new:
                tokens = row["step"] * spec.tokens_per_step
                w.write({**row, "tokens": tokens, "flops": per_token * tokens, "wall_s": 0.0})
        job.written += len(new)
        job.written_step = step
        job.latest.update(loss=new[-1]["loss"], eval_loss=new[-1]["eval_loss"])

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
