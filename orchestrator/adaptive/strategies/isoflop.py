"""`isoflop`: IsoFLOP profiles that follow the current estimate of N_opt(C).

Each round adds one profile of `batch` sizes at one compute level, log-spaced over the
plan's size spread around the current fit's N_opt at that level (Hoffmann et al. 2022,
Approach 2, re-centred as the fit improves; before any fit, around the prior). Levels
are visited from the largest the budget allows downward: the profiles nearest C* say
most about the optimum there.
"""

from __future__ import annotations

import math

from orchestrator.adaptive.strategies.base import (
    Candidate,
    StrategyView,
    levels,
    profile,
    take_within,
)
from orchestrator.laws import FitError

_MIN_PROFILE = 3  # sizes: the fewest that fix a parabola's minimum


class IsoFlopStrategy:
    name = "isoflop"

    def __init__(self, prior_n_opt):
        """prior_n_opt: C (FLOPs) -> the prior compute-optimal N, used until a fit exists."""
        self.prior_n_opt = prior_n_opt

    def propose(self, state: StrategyView, n: int, *, budget_flops: float) -> list[Candidate]:
        for level in reversed(levels(state.pool)):
            sizes = [c.n_params for c in state.pool if c.level_flops == level]
            # Keep the profile on the sizes this level offers: an estimate far outside
            # them (an early, wild fit) still gets the profile nearest to it.
            half = math.sqrt(state.size_spread)
            lo, hi = min(sizes) * half, max(sizes) / half
            centre = min(max(self._centre(state, level), lo), max(lo, hi))
            chosen = take_within(
                profile(state.pool, level, centre, state.size_spread, n), n, budget_flops
            )
            # A profile the budget (or the pool) cuts below three sizes is skipped, not
            # half-run: a parabola needs a point on each side of its minimum.
            if len(chosen) >= min(n, _MIN_PROFILE):
                return chosen
        return []

    def _centre(self, state: StrategyView, level: float) -> float:
        if state.law is None:
            return self.prior_n_opt(level)
        try:
            centre = float(state.law.n_opt(level).mean)
        except FitError:
            return self.prior_n_opt(level)
        return centre if centre > 0 and centre < float("inf") else self.prior_n_opt(level)
