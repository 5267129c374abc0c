"""A study over a finished sweep: strategies choose among runs that were really trained.

`ReplayStudy` is `Study`'s adaptive loop (study.py) with a finished sweep (sweep.py) as
its candidate pool and the sweep's table as its training: "training" a run reveals the
loss the table records for it, and pays the table's FLOPs for it (its C, else 6 N D)
plus a fixed per-run overhead (start-up, evaluation, checkpoints: what a run costs beyond
its training FLOPs; 0 by default). What a study's decisions depend on is the same: the
strategies (strategies/), the `Target` (targets.py), the stopping rules (stopping.py), a
`Ledger` (a run's compute is committed when it is asked for and spent when its loss is
told, so a replay can never spend past its budget), the seed-noise estimate (noise.py)
and the Chinchilla refit after every round (`study.fit_study_law`). Nothing is written
anywhere: a replay is a pure function of the sweep, the targets, the strategy, the
budget and the seed, and takes seconds where a store would add a file per event.

A `Study` runs RunSpecs through a scheduler `Backend` into an experiment store; a sweep's
rows have N, D and a loss but no model shape, batch or schedule, so a RunSpec for them
would misstate what was trained (and N in every summary the store holds). The table's
reveal is therefore this class's `run`, not a Backend.

The pool (`replay_pool`): every run of the sweep but the targets: a run with a target's
N and D (each within a relative 1e-6) is never chosen, since its loss is what the replay
is scored on. Runs are grouped into compute levels (C within 0.05 dex of a neighbour, as
the laws' backtests group them) for the strategies that work level by level (isoflop,
grid); their IsoFLOP profiles span the pool's typical size spread at a level.

Round 0 (`seed_design`): a small seed grid, as a plan's is, made of pool runs: at each
of the 3 cheapest compute bands (runs whose C lies within 0.3 dex: an IsoFLOP level, or
a slice of a sweep whose C varies continuously), the runs nearest 3 sizes spanning a
factor 8 around the prior N_opt(C) (20 tokens per parameter; Hoffmann et al. 2022), as
long as the seed's compute stays within 20% of the budget. (The cheapest runs at each
size would be its most under-trained ones: on Hoffmann et al.'s sweep, the 1e19-FLOP
runs of 2-7B parameters on 0.25-0.9B tokens, whose losses are the extraction's worst.)
If that gives fewer than 5 runs (a first Chinchilla fit needs 5), the cheapest other
runs are added while the whole budget holds them. Every strategy of a replay starts from
this same round (deterministic, ties in the pool's order), so strategies differ only in
what they choose after it.

Later rounds: `batch` runs each (default about 1% of the pool, at least 4: few refits on
a large pool) until a stopping rule holds or the strategy proposes nothing (the budget,
or the strategy, is done).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from orchestrator.adaptive.noise import estimate_noise
from orchestrator.adaptive.record import Round
from orchestrator.adaptive.stopping import budget_reason, rounds_reason, width_reason
from orchestrator.adaptive.strategies import Candidate, Strategy, StrategyView
from orchestrator.adaptive.study import StudyError, fit_study_law
from orchestrator.adaptive.sweep import Sweep
from orchestrator.adaptive.targets import Target, TargetRun, target_estimate
from orchestrator.laws import Chinchilla, FitError
from orchestrator.laws.isoflop import compute_levels
from orchestrator.planning.ledger import BudgetError, Ledger

log = logging.getLogger(__name__)

SEED, ADAPTIVE = "seed", "adaptive"  # ledger stages
_MATCH_RTOL = 1e-6  # a pool run with a target's N and D within this is that target
_LEVEL_TOL_DEX = 0.05  # compute levels as `laws.splits.split_by_compute` groups them
_SEED_SHARE = 0.2  # of the budget at most: the strategies decide the rest
# Round 0 is a 3 x 3 seed grid, as plans/adaptive.yaml's: 3 compute bands (C within
# 0.3 dex: an IsoFLOP level, or a slice of a sweep whose C varies continuously) x 3 sizes
# spanning a plan's default size spread of 8 around the prior N_opt.
_SEED_BANDS, _SEED_SIZES, _SEED_SPREAD = 3, 3, 8.0
_SEED_BAND_DEX = 0.15  # compute_levels' link: a band spans at most twice this
_MIN_FIT_RUNS = Chinchilla.min_points
_SIZES_PER_LEVEL = 5  # grid strategy's profile: a plan's `seed_grid.sizes_per_level` default
_DEFAULT_SPREAD = 8.0  # a plan's `seed_grid.size_spread` default, for pools without levels
_PRIOR_TOKENS_PER_PARAM = 20.0  # Hoffmann et al.'s rule: the isoflop/grid prior N_opt(C)


def prior_n_opt(flops: float) -> float:
    """N_opt(C) at 20 tokens per parameter with C = 6 N D: the prior that the isoflop and
    grid strategies centre on before (grid: instead of) any fit."""
    return math.sqrt(flops / (6.0 * _PRIOR_TOKENS_PER_PARAM))


def default_batch(pool_size: int) -> int:
    """Runs per adaptive round: about 1% of the pool, at least 4 (a plan's default)."""
    return max(4, math.ceil(pool_size / 100))


def replay_pool(
    sweep: Sweep, targets: Sequence[TargetRun], *, overhead_flops: float = 0.0
) -> list[Candidate]:
    """Every run of `sweep` that is not a target, as candidates in the sweep's order, each
    costing its C plus `overhead_flops`."""
    if not (math.isfinite(overhead_flops) and overhead_flops >= 0):
        raise StudyError(f"overhead_flops: expected a number >= 0, got {overhead_flops!r}")
    is_target = np.zeros(len(sweep), dtype=bool)
    for t in targets:
        is_target |= np.isclose(sweep.n_params, t.n_params, rtol=_MATCH_RTOL, atol=0) & np.isclose(
            sweep.tokens, t.tokens, rtol=_MATCH_RTOL, atol=0
        )
    rows = np.flatnonzero(~is_target)
    level = np.empty(rows.size)
    if rows.size:
        for members in compute_levels(sweep.flops[rows], tol_dex=_LEVEL_TOL_DEX):
            level[members] = math.exp(float(np.mean(np.log(sweep.flops[rows[members]]))))
    return [
        Candidate(
            spec=None,
            run_id=sweep.run_ids[i],
            n_params=float(sweep.n_params[i]),
            tokens=float(sweep.tokens[i]),
            flops=float(sweep.flops[i]) + overhead_flops,
            level_flops=float(level[k]),
            lineage=sweep.groups[i],
        )
        for k, i in enumerate(rows)
    ]


def seed_design(
    pool: Sequence[Candidate],
    budget_flops: float,
    *,
    share: float = _SEED_SHARE,
    bands: int = _SEED_BANDS,
    sizes: int = _SEED_SIZES,
) -> list[Candidate]:
    """Round 0 of a replay: a small seed IsoFLOP grid from the pool (module docstring).

    Returns:
        Candidates of `pool` costing at most `budget_flops` in all (in the order taken).
    """
    if not pool:
        return []
    cost = np.array([c.flops for c in pool])
    log_n = np.log([c.n_params for c in pool])
    compute = np.array([c.level_flops for c in pool])
    cap = share * budget_flops
    taken: list[int] = []
    spent = 0.0
    profiled = 0
    for members in compute_levels(compute, tol_dex=_SEED_BAND_DEX):
        if profiled == bands:
            break
        centre = math.log(prior_n_opt(math.exp(float(np.mean(np.log(compute[members]))))))
        offsets = np.linspace(-0.5, 0.5, sizes) if sizes > 1 else np.zeros(1)
        before = len(taken)
        for want in centre + offsets * math.log(_SEED_SPREAD):
            rest = [i for i in members if i not in taken]
            if not rest:
                break
            i = int(min(rest, key=lambda j: abs(log_n[j] - want)))
            if spent + cost[i] <= cap:
                taken.append(i)
                spent += cost[i]
        profiled += len(taken) > before
    for i in np.argsort(cost, kind="stable"):  # fewer than a fit needs: the cheapest others
        if len(taken) >= _MIN_FIT_RUNS:
            break
        if i not in taken and spent + cost[i] <= budget_flops:
            taken.append(int(i))
            spent += cost[i]
    return [pool[i] for i in taken]


class ReplayStudy:
    """A study whose runs are a finished sweep's (module docstring): `ask`, `tell`, `run`.

    Args:
        sweep: the finished runs; `pool` must be some of them.
        pool: the candidates (`replay_pool`): the only runs this study may choose.
        target: what the stopping rule and the strategies aim at (no losses in it).
        strategy: which runs to choose next (strategies.make_strategy).
        budget_flops: compute the study may spend, FLOPs (pool costs: C + overhead).
        seed_runs: round 0 (`seed_design`); () starts with the strategy.
        seed: the strategy's randomness (random picks, active's parameter draws).
        batch: runs per adaptive round.
        rel_width: stop once every target quantity's relative interval width is at most
            this (0: never; the budget ends the study).
        max_rounds: stop after this many adaptive rounds (None: no limit).
        flops_per_token: N -> FLOPs per token of the sweep's compute axis, for the
            frontier quantities of a target at C* (None: 6 N).
    """

    def __init__(
        self,
        sweep: Sweep,
        pool: Sequence[Candidate],
        target: Target,
        strategy: Strategy,
        *,
        budget_flops: float,
        seed_runs: Sequence[Candidate] = (),
        seed: int = 0,
        batch: int = 4,
        rel_width: float = 0.0,
        max_rounds: int | None = None,
        flops_per_token=None,
    ):
        self.sweep = sweep
        self.target = target
        self.strategy = strategy
        self.seed = seed
        self.batch = batch
        self.rel_width = rel_width
        self.max_rounds = max_rounds
        self.flops_per_token = flops_per_token
        self.ledger = Ledger(budget_flops)
        self._row = {r: i for i, r in enumerate(sweep.run_ids)}
        self._pool = {c.run_id: c for c in pool}
        outside = [c.run_id for c in (*pool, *seed_runs) if c.run_id not in self._row]
        outside += [c.run_id for c in seed_runs if c.run_id not in self._pool]
        if outside:
            raise StudyError(f"runs not in the sweep's pool: {sorted(set(outside))[:5]}")
        self._seed_runs = tuple(seed_runs)
        self.rounds: list[Round] = []
        self.stop_reason: str | None = None
        self._asked: dict[str, Candidate] = {}  # in the order asked
        self._stage: dict[str, str] = {}
        self._told: dict[str, float] = {}  # run_id -> revealed loss, nats per token
        self._law: Chinchilla | None = None
        self._law_runs = 0
        self._size_spread = _size_spread(pool)

    # --- ask and tell -------------------------------------------------------------------

    def ask(self) -> list[Candidate]:
        """The runs of the current round not yet told, or a new round; [] once a stopping
        rule holds (`stop_reason` says which)."""
        if self.stop_reason is not None:
            return []
        pending = self._pending()
        if pending:
            return pending
        if not self.rounds and self._seed_runs:
            if chosen := self._commit(self._seed_runs, SEED):
                return self._open(chosen, SEED)
        reason = self._stop_check()
        if reason is None:
            state = self.state()
            proposed = self.strategy.propose(
                state, self.batch, budget_flops=self.ledger.remaining_flops
            )
            if chosen := self._commit(proposed, ADAPTIVE):
                return self._open(chosen, self.strategy.name)
            cheapest = min((c.flops for c in state.pool), default=None)
            reason = budget_reason(self.ledger.remaining_flops, cheapest, self.strategy.name)
        self.stop_reason = reason
        log.info("replay (%s) stops: %s", self.strategy.name, reason)
        return []

    def tell(self, losses: Mapping[str, float]) -> None:
        """The losses (nats per token) of asked runs: their compute is spent."""
        for run_id, loss in losses.items():
            if run_id not in self._asked or run_id in self._told:
                raise StudyError(f"run {run_id} was not asked for, or was told already")
            flops = self._asked[run_id].flops
            self.ledger.settle(self._stage[run_id], flops, flops)
            self._told[run_id] = float(loss)

    def run(self) -> ReplayStudy:
        """Ask and reveal each asked run's loss from the sweep until a stopping rule holds."""
        while chosen := self.ask():
            self.tell({c.run_id: float(self.sweep.loss[self._row[c.run_id]]) for c in chosen})
        return self

    # --- what the study knows -----------------------------------------------------------

    @property
    def chosen(self) -> tuple[Candidate, ...]:
        """Every run asked for, in order (round 0 first)."""
        return tuple(self._asked.values())

    @property
    def law(self) -> Chinchilla | None:
        """The Chinchilla fit to every told run (None below 5 runs or if it fails)."""
        if len(self._told) != self._law_runs:
            self._law_runs, self._law = len(self._told), None
            if len(self._told) >= _MIN_FIT_RUNS:
                runs = [self._asked[r] for r in self._told]
                try:
                    self._law = fit_study_law(
                        [c.n_params for c in runs],
                        [c.tokens for c in runs],
                        list(self._told.values()),
                        groups=[c.lineage for c in runs],
                        flops_per_token=self.flops_per_token,
                    )
                except FitError as err:
                    log.warning("replay (%s): no fit: %s", self.strategy.name, err)
        return self._law

    def noise(self) -> float:
        """Seed-to-seed std of log-loss: from told runs of one (N, D), else the fit's."""
        groups: dict[tuple[float, float], list[float]] = {}
        for run_id, loss in self._told.items():
            c = self._asked[run_id]
            groups.setdefault((c.n_params, c.tokens), []).append(loss)
        return estimate_noise(groups.values(), self.law)

    def state(self) -> StrategyView:
        """What the strategy sees now: the told runs, the fit, the runs not yet asked."""
        told = [self._asked[r] for r in self._told]
        rows = [self._row[c.run_id] for c in told]
        return StrategyView(
            n_params=np.array([c.n_params for c in told], dtype=float),
            tokens=np.array([c.tokens for c in told], dtype=float),
            flops=self.sweep.flops[rows].astype(float),
            loss=np.array(list(self._told.values()), dtype=float),
            law=self.law,
            pool=tuple(c for r, c in self._pool.items() if r not in self._asked),
            target=self.target,
            noise=self.noise(),
            round=len(self.rounds),
            seed=self.seed,
            size_spread=self._size_spread,
            sizes_per_level=_SIZES_PER_LEVEL,
        )

    # --- internals ----------------------------------------------------------------------

    def _pending(self) -> list[Candidate]:
        if not self.rounds:
            return []
        return [self._asked[r] for r in self.rounds[-1].run_ids if r not in self._told]

    def _commit(self, proposed: Sequence[Candidate], stage: str) -> list[Candidate]:
        """The proposed runs the ledger accepts, their compute committed. A run outside
        the pool, already asked, or past the budget (a strategy's bug) is left out."""
        chosen = []
        for c in proposed:
            if c.run_id not in self._pool or c.run_id in self._asked:
                log.warning("replay: %s proposed %s, not an unasked pool run", stage, c.run_id)
                continue
            try:
                self.ledger.commit(stage, c.flops)
            except BudgetError as err:
                log.warning("replay: %s left out: %s", c.run_id, err)
                continue
            self._asked[c.run_id] = c
            self._stage[c.run_id] = stage
            chosen.append(c)
        return chosen

    def _open(self, chosen: list[Candidate], strategy: str) -> list[Candidate]:
        self.rounds.append(Round(len(self.rounds), tuple(c.run_id for c in chosen), strategy))
        return chosen

    def _stop_check(self) -> str | None:
        law = self.law
        if self.rel_width > 0 and law is not None:
            reason = width_reason(
                target_estimate(law, self.target), rel_width=self.rel_width, target=self.target
            )
            if reason is not None:
                return reason
        if self.max_rounds is not None:
            done = sum(r.strategy != SEED for r in self.rounds)
            return rounds_reason(done, max_rounds=self.max_rounds)
        return None


def _size_spread(pool: Sequence[Candidate]) -> float:
    """Largest / smallest N at a compute level, the median over levels of 3+ runs."""
    sizes: dict[float, list[float]] = {}
    for c in pool:
        sizes.setdefault(c.level_flops, []).append(c.n_params)
    spreads = [max(n) / min(n) for n in sizes.values() if len(n) >= 3]
    return max(2.0, float(np.median(spreads))) if spreads else _DEFAULT_SPREAD
