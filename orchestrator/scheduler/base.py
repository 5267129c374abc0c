"""The Backend interface: four methods, none of which waits, and three optional ones.

Waiting, retries and the clock belong to the loop that drives a backend (Ax's Runner
and Ray Tune's split: a backend deploys, polls once, stops, and reports capacity).
A backend subclasses `Backend`; the optional methods have do-nothing defaults, so the
loop calls them on every backend instead of asking which ones it has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from storage.errors import OrchError
from workers.spec import RunSpec


class BackendError(OrchError):
    """The backend cannot start, reach or stop runs."""


class RunState(StrEnum):
    """A run's state; its value is what the store's events and summaries hold."""

    QUEUED = "queued"
    RUNNING = "running"
    PREEMPTED = "preempted"  # node or actor lost: the run may resume from its checkpoint
    FAILED = "failed"  # an exception in the run
    DIVERGED = "diverged"  # NaN or exploding loss: not retried blindly
    FINISHED = "finished"
    CANCELLED = "cancelled"
    # Stopped by the study before its end, its final loss already predicted from its curve
    # (orchestrator/adaptive/early_stop.py): an outcome, not a failure, never run again.
    STOPPED = "stopped"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


# A run's summary says one of these once its worker has ended it; it is never run again.
# (RunState is a str enum, so a stored status string is found in it as it is.)
ENDED = frozenset({RunState.FINISHED, RunState.DIVERGED, RunState.STOPPED})
_TERMINAL = ENDED | {RunState.PREEMPTED, RunState.FAILED, RunState.CANCELLED}


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    detail: str = ""  # the error, for FAILED and PREEMPTED
    outcome: dict[str, Any] = field(default_factory=dict)  # workers.train.RunOutcome fields


class Backend(ABC):
    @abstractmethod
    def submit(self, spec: RunSpec, *, attempt: int) -> None:
        """Start the run; returns at once."""

    @abstractmethod
    def poll(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        """One look at the submitted runs, no sleeping."""

    @abstractmethod
    def cancel(self, run_id: str, *, reason: str) -> None:
        """Stop a submitted run; its next poll reports it ended (or it is forgotten)."""

    @abstractmethod
    def capacity(self) -> int | None:
        """Free rank slots (GPUs, or CPU slots on a CPU cluster); None if unknown."""

    # --- optional ---------------------------------------------------------------------

    def wait(self, timeout_s: float) -> bool:
        """Block until some run may have changed, at most `timeout_s`. Returns False if
        this backend cannot tell (the loop then sleeps its poll interval itself)."""
        return False

    def observe(self, counts: dict[RunState, int]) -> None:
        """The study's runs by state after a poll (at most once a second), for backends
        that export them (Ray: a dashboard gauge)."""
        return None

    def shutdown(self) -> None:
        """Release what the backend holds (pooled actors, placement groups); called once
        when the driver is done with it."""
        return None
