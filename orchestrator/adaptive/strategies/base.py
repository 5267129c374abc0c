"""The strategy interface: given what a study knows, which runs to make next.

A strategy is stateless: everything it may use arrives in one `StrategyView` (the runs
observed so far, the current fit, the candidate runs not yet made, the target), so a
study rebuilt from its store after a crash asks the same strategy the same question and
gets the same answer. Strategies do no I/O and never touch Ray (STYLE 2.8); the
`Study` owns the store, the backend and the stopping rule.

Every strategy only picks from `state.pool`, whose runs were built by the planner
(feasible shapes, tokens, GPUs) or, in a replay, are the runs of a finished sweep
(adaptive/replay.py), and never picks more compute than `budget_flops`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from orchestrator.adaptive.targets import Target
from orchestrator.laws import Chinchilla, Prediction
from workers.spec import RunSpec


@dataclass(frozen=True)
class Candidate:
    """A run a strategy may choose: its spec (or, replaying a finished sweep, its row's
    id) and what it costs."""

    spec: RunSpec | None  # None: a run of a finished sweep (adaptive/replay.py)
    n_params: float  # non-embedding parameters
    tokens: float  # training tokens
    flops: float  # training FLOPs by the plan's counting method (what the ledger books)
    level_flops: float  # the compute level it was sized for, FLOPs
    # The spec's hash, computed once (strategies compare run ids in their inner loops);
    # given, not computed, for a run without a spec.
    run_id: str = field(default="", repr=False)
    # The runs it shares weights and seed noise with (the laws' `groups`): the run a WSD
    # cooldown branch starts from, a sweep's group column; "" means its own run_id.
    lineage: str = field(default="", repr=False)
    # Its final loss as predicted before it runs (a cooldown branch: the curve law from its
    # parent's curve up to the branch step, adaptive/early_stop.py); None: not predicted.
    predicted: Prediction | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.spec is not None:
            object.__setattr__(self, "run_id", self.spec.run_id)
        if not self.run_id:
            raise ValueError("a candidate without a spec needs a run_id")
        if not self.lineage:
            branch = self.spec.branch_from if self.spec is not None else ""
            object.__setattr__(self, "lineage", branch or self.run_id)


@dataclass(frozen=True)
class StrategyView:
    """Everything a strategy may look at; built by the Study from its store."""

    n_params: np.ndarray  # (M,) non-embedding parameters of each finished run
    tokens: np.ndarray  # (M,) training tokens
    flops: np.ndarray  # (M,) training FLOPs, as the plan counts them
    loss: np.ndarray  # (M,) final eval loss, nats per token
    law: Chinchilla | None  # the fit to those runs (None before there are enough)
    pool: tuple[Candidate, ...]  # candidate runs not yet made or asked for
    target: Target
    noise: float  # seed-to-seed std of log-loss (see study.estimate_noise)
    round: int  # 1 for the first adaptive round
    seed: int  # the plan's strategy seed: with `round`, all a strategy's randomness
    size_spread: float  # largest / smallest model a level's IsoFLOP profile spans
    sizes_per_level: int  # models per IsoFLOP profile (the seed grid's)
    # A candidate whose predicted final loss's interval is at most this wide, relative to
    # the estimate, is known already: running it would tell little (`unknown`); 0: none is.
    known_width: float = 0.0

    def rng(self) -> np.random.Generator:
        """The round's generator: the same plan and round give the same draws."""
        return np.random.default_rng([self.seed, self.round])


class Strategy(Protocol):
    name: str

    def propose(self, state: StrategyView, n: int, *, budget_flops: float) -> list[Candidate]:
        """Up to `n` candidates from `state.pool` costing at most `budget_flops` in all;
        [] when nothing fits."""
        ...


def affordable(pool: Sequence[Candidate], budget_flops: float) -> list[Candidate]:
    return [c for c in pool if c.flops <= budget_flops]


def unknown(pool: Sequence[Candidate], known_width: float) -> list[Candidate]:
    """The candidates whose outcome is not known already: no prediction, or one whose
    interval is wider than `known_width` (relative to its estimate; 0 keeps every one)."""
    if known_width <= 0:
        return list(pool)
    return [
        c
        for c in pool
        if c.predicted is None
        or not (c.predicted.hi - c.predicted.lo) <= known_width * c.predicted.mean
    ]


def take_within(ordered: Sequence[Candidate], n: int, budget_flops: float) -> list[Candidate]:
    """The first candidates of `ordered`, skipping any the remaining budget cannot hold."""
    chosen, left = [], budget_flops
    for c in ordered:
        if len(chosen) == n:
            break
        if c.flops <= left and c.run_id not in {x.run_id for x in chosen}:
            chosen.append(c)
            left -= c.flops
    return chosen


def levels(pool: Sequence[Candidate]) -> list[float]:
    """The pool's compute levels, ascending."""
    return sorted({c.level_flops for c in pool})


def profile(
    pool: Sequence[Candidate], level_flops: float, centre_params: float, spread: float, k: int
) -> list[Candidate]:
    """Up to k candidates at one level: for each of k sizes log-spaced over a factor
    `spread` around `centre_params` (an IsoFLOP profile), the nearest candidate in log N
    within half a step; a size already made (so absent from the pool) is left out rather
    than replaced by a neighbour, which would crowd one level."""
    at_level = [c for c in pool if c.level_flops == level_flops]
    step = math.log(spread) / max(1, k - 1)
    chosen: list[Candidate] = []
    for i in range(k):
        want = math.log(centre_params) + (i - (k - 1) / 2) * step
        rest = [c for c in at_level if c not in chosen]
        if not rest:
            break
        best = min(rest, key=lambda c: abs(math.log(c.n_params) - want))
        if abs(math.log(best.n_params) - want) <= max(step, math.log(2)) / 2:
            chosen.append(best)
    return chosen


def best_affordable(score: np.ndarray, chosen: list[int], unaffordable: np.ndarray) -> int | None:
    """The index of the highest score among runs not yet chosen and still affordable, or
    None when none has a positive score (no run is worth its cost: the batch ends)."""
    score = score.copy()
    score[chosen] = -np.inf
    score[unaffordable] = -np.inf
    best = int(np.argmax(score))
    return best if math.isfinite(score[best]) and score[best] > 0 else None
