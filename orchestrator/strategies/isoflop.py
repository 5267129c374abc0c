"""`isoflop`: IsoFLOP profiles that follow the current estimate of N_opt(C).

Each round adds one profile of `batch` sizes at one compute level, log-spaced over the
plan's size spread around the current fit's N_opt at that level (Hoffmann et al. 2022,
Approach 2, re-centred as the fit improves; before any fit, around the prior). Levels
are visited from the largest the budget allows downward: the profiles nearest C* say
most about the optimum there.
"""

from __future__ import annotations

from orchestrator.laws import FitError
from orchestrator.strategies.base import Candidate, StudyState, levels, profile, take_within


class IsoFlopStrategy:
    name = "isoflop"

    def __init__(self, prior_n_opt):
        """prior_n_opt: C (FLOPs) -> the prior compute-optimal N, used until a fit exists."""
        self.prior_n_opt = prior_n_opt

    def propose(self, state: StudyState, n: int, *, budget_flops: float) -> list[Candidate]:
        for level in reversed(levels(state.pool)):
            centre = self._centre(state, level)
            chosen = take_within(
                profile(state.pool, level, centre, state.size_spread, n), n, budget_flops
            )
            # A level whose full profile the budget cannot hold is skipped, not half-run:
            # a parabola needs both sides of its minimum.
            if len(chosen) == n or (chosen and len(chosen) == self._size(state, level)):
                return chosen
        return []

    def _centre(self, state: StudyState, level: float) -> float:
        if state.law is None:
            return self.prior_n_opt(level)
        try:
            centre = float(state.law.n_opt(level).mean)
        except FitError:
            return self.prior_n_opt(level)
        return centre if centre > 0 and centre < float("inf") else self.prior_n_opt(level)

    @staticmethod
    def _size(state: StudyState, level: float) -> int:
        return sum(c.level_flops == level for c in state.pool)
