"""Strategies for the adaptive loop: which runs to make next (see `base.Strategy`).

`make_strategy(name, prior_n_opt)` builds one by the name a plan uses.
"""

from orchestrator.adaptive.strategies.active import ActiveStrategy
from orchestrator.adaptive.strategies.base import Candidate, Strategy, StrategyView, Target
from orchestrator.adaptive.strategies.grid import GridStrategy
from orchestrator.adaptive.strategies.isoflop import IsoFlopStrategy
from orchestrator.adaptive.strategies.random import RandomStrategy

__all__ = [
    "ActiveStrategy",
    "Candidate",
    "GridStrategy",
    "IsoFlopStrategy",
    "RandomStrategy",
    "Strategy",
    "StrategyView",
    "Target",
    "make_strategy",
]

NAMES = ("active", "isoflop", "random", "grid")


def make_strategy(name: str, prior_n_opt) -> Strategy:
    """The strategy a plan names; prior_n_opt: C (FLOPs) -> prior compute-optimal N."""
    if name == "active":
        return ActiveStrategy(fallback=IsoFlopStrategy(prior_n_opt))
    if name == "isoflop":
        return IsoFlopStrategy(prior_n_opt)
    if name == "random":
        return RandomStrategy()
    if name == "grid":
        return GridStrategy(prior_n_opt)
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(NAMES)}")
