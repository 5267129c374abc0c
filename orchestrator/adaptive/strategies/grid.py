"""`grid`: extend the IsoFLOP grid level by level, centred on the prior, never adapting.

The baseline every adaptive strategy must beat: each level's sizes are placed around
the prior N_opt(C) exactly as the seed grid's were (planner._prior_n_opt), from the
cheapest level up, whatever the fits say.
"""

from __future__ import annotations

import numpy as np

from orchestrator.adaptive.strategies.base import (
    Candidate,
    StrategyView,
    levels,
    profile,
    take_within,
)

_SAME_LEVEL = 0.2  # |log(C_run / level)|: runs rounded to whole steps land within this


class GridStrategy:
    name = "grid"

    def __init__(self, prior_n_opt):
        """prior_n_opt: C (FLOPs) -> the prior compute-optimal N (parameters)."""
        self.prior_n_opt = prior_n_opt

    def propose(self, state: StrategyView, n: int, *, budget_flops: float) -> list[Candidate]:
        ordered = []
        observed = state.flops  # FLOPs of the runs made, as the plan counts them
        for level in levels(state.pool):
            # A level the seed grid already profiled (its smallest) is not profiled twice.
            if np.sum(np.abs(np.log(observed / level)) < _SAME_LEVEL) >= state.sizes_per_level:
                continue
            ordered += profile(
                state.pool,
                level,
                self.prior_n_opt(level),
                state.size_spread,
                state.sizes_per_level,
            )
        return take_within(ordered, n, budget_flops)
