"""`random`: uniform picks among the affordable candidates (the design-free baseline)."""

from __future__ import annotations

from orchestrator.adaptive.strategies.base import Candidate, StrategyView, affordable, take_within


class RandomStrategy:
    name = "random"

    def propose(self, state: StrategyView, n: int, *, budget_flops: float) -> list[Candidate]:
        pool = affordable(state.pool, budget_flops)
        order = state.rng().permutation(len(pool))
        return take_within([pool[i] for i in order], n, budget_flops)
