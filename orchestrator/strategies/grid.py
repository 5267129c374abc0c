"""`grid`: extend the IsoFLOP grid level by level, centred on the prior, never adapting.

The baseline every adaptive strategy must beat: each level's sizes are placed around
the prior N_opt(C) exactly as the seed grid's were (planner._prior_n_opt), from the
cheapest level up, whatever the fits say.
"""

from __future__ import annotations

from orchestrator.strategies.base import Candidate, StudyState, levels, profile, take_within


class GridStrategy:
    name = "grid"

    def __init__(self, prior_n_opt):
        """prior_n_opt: C (FLOPs) -> the prior compute-optimal N (parameters)."""
        self.prior_n_opt = prior_n_opt

    def propose(self, state: StudyState, n: int, *, budget_flops: float) -> list[Candidate]:
        ordered = []
        for level in levels(state.pool):
            ordered += profile(
                state.pool,
                level,
                self.prior_n_opt(level),
                state.size_spread,
                state.sizes_per_level,
            )
        return take_within(ordered, n, budget_flops)
