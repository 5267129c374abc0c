"""The budget ledger: planned, committed and spent compute per stage.

A run's FLOPs are committed when it is submitted and spent when it ends; a commitment
that would take committed + spent past the budget is refused, so the study can never
overspend whatever its strategy asks for.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from storage.errors import OrchError

log = logging.getLogger(__name__)


class BudgetError(OrchError):
    """A commitment would exceed the budget."""


@dataclass
class StageBudget:
    planned_flops: float = 0.0
    committed_flops: float = 0.0  # submitted, not yet ended
    spent_flops: float = 0.0  # ended (finished, diverged or failed part-way)
    planned_gpu_hours: float = 0.0
    committed_gpu_hours: float = 0.0
    spent_gpu_hours: float = 0.0


class Ledger:
    """Budget accounting; `budget_flops=None` books everything and refuses nothing (a plan
    that gives no budget, e.g. an explicit grid)."""

    def __init__(self, budget_flops: float | None):
        if budget_flops is not None and not budget_flops > 0:
            raise BudgetError(f"budget must be positive, got {budget_flops} FLOPs")
        self.budget_flops = budget_flops
        self.stages: dict[str, StageBudget] = {}

    def plan(self, stage: str, flops: float, gpu_hours: float = 0.0) -> None:
        s = self.stages.setdefault(stage, StageBudget())
        s.planned_flops += flops
        s.planned_gpu_hours += gpu_hours

    @property
    def committed_flops(self) -> float:
        return sum(s.committed_flops for s in self.stages.values())

    @property
    def spent_flops(self) -> float:
        return sum(s.spent_flops for s in self.stages.values())

    @property
    def remaining_flops(self) -> float:
        """What may still be committed."""
        if self.budget_flops is None:
            return float("inf")
        return self.budget_flops - self.committed_flops - self.spent_flops

    def commit(self, stage: str, flops: float, gpu_hours: float = 0.0) -> None:
        """Reserve a run's compute, or raise BudgetError without changing anything."""
        if flops < 0:
            raise BudgetError(f"cannot commit negative compute ({flops} FLOPs)")
        if flops > self.remaining_flops:
            raise BudgetError(
                f"stage {stage}: a run of {flops:.3g} FLOPs exceeds the remaining budget "
                f"({self.remaining_flops:.3g} of {self.budget_flops or 0:.3g} FLOPs)"
            )
        s = self.stages.setdefault(stage, StageBudget())
        s.committed_flops += flops
        s.committed_gpu_hours += gpu_hours

    def settle(
        self,
        stage: str,
        committed_flops: float,
        spent_flops: float,
        committed_gpu_hours: float = 0.0,
        spent_gpu_hours: float = 0.0,
    ) -> None:
        """A run ended: release its commitment and book what it really spent.

        A run spends at most what was committed for it (a failed run spends less); any
        excess (rounding to whole steps) is booked but logged.
        """
        s = self.stages[stage]
        s.committed_flops = max(0.0, s.committed_flops - committed_flops)
        s.committed_gpu_hours = max(0.0, s.committed_gpu_hours - committed_gpu_hours)
        s.spent_flops += spent_flops
        s.spent_gpu_hours += spent_gpu_hours
        if spent_flops > committed_flops * (1 + 1e-9):
            log.warning(
                "stage %s: a run spent %.3g FLOPs, %.3g committed",
                stage,
                spent_flops,
                committed_flops,
            )

    def rows(self) -> list[dict]:
        """One row per stage (the store's LEDGER columns, without the timestamp)."""
        now = time.time()
        return [{"stage": name, **vars(s), "time_unix_s": now} for name, s in self.stages.items()]
