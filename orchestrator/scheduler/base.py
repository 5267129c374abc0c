"""The Backend interface: four methods, none of which waits.

Waiting, retries and the clock belong to the loop that drives a backend (Ax's Runner
and Ray Tune's split: a backend deploys, polls once, stops, and reports capacity).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from storage.errors import OrchError
from workers.spec import RunSpec


class BackendError(OrchError):
    """The backend cannot start, reach or stop runs."""


class RunState(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PREEMPTED = "preempted"  # node or actor lost: the run may resume from its checkpoint
    FAILED = "failed"  # an exception in the run
    DIVERGED = "diverged"  # NaN or exploding loss: not retried blindly
    FINISHED = "finished"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {RunState.PREEMPTED, RunState.FAILED, RunState.DIVERGED, RunState.FINISHED, RunState.CANCELLED}
)


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    detail: str = ""  # the error, for FAILED and PREEMPTED
    outcome: dict[str, Any] = field(default_factory=dict)  # workers.train.RunOutcome fields


class Backend(Protocol):
    def submit(self, spec: RunSpec, *, attempt: int) -> None:
        """Start the run; returns at once."""

    def poll(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        """One look at the submitted runs, no sleeping."""

    def cancel(self, run_id: str, *, reason: str) -> None: ...

    def capacity(self) -> int | None:
        """Free rank slots (GPUs, or CPU slots on a CPU cluster); None if unknown."""

    # Optional, looked up with hasattr by the loop:
    #   wait(timeout_s): block until some run may have changed, at most timeout_s.
    #   observe(counts): the study's runs by state after each poll (RunState -> count).
