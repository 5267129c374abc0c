"""What a study hands back and takes in: run outcomes told to it, a `run()`'s result, and
which stored summary rows a fit may use."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.adaptive.record import Round
from orchestrator.laws import Chinchilla
from orchestrator.scheduler.base import RunState
from orchestrator.scheduler.execution import Execution


@dataclass(frozen=True)
class RunResult:
    """A run's outcome told to a study from outside a backend."""

    run_id: str
    loss: float  # final held-out loss, nats per token; NaN or inf for a diverged run


@dataclass
class StudyResult:
    stop_reason: str | None  # None: interrupted (e.g. `orch cancel`), resumable
    law: Chinchilla | None
    rounds: list[Round]
    execution: Execution  # every run of every round this call executed or reused


def final_loss(row: Mapping) -> float:
    """A summary row's loss for the fit: held-out if it has one, else the last training."""
    value = row.get("eval_loss")
    if value is None or not math.isfinite(value):
        value = row.get("final_loss")
    return float(value) if value is not None else math.nan


def usable(row: Mapping | None) -> bool:
    """Whether a run's summary row can go into a fit (finished, a positive loss and N)."""
    if row is None or row.get("status") != RunState.FINISHED.value:
        return False
    loss = final_loss(row)
    return math.isfinite(loss) and loss > 0 and (row.get("n_params") or 0) > 0
