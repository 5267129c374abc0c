"""One conformance suite for every adaptive strategy (orchestrator/adaptive/strategies/).

Each strategy is asked on real views of plans/adaptive-simulated.yaml's Study: after its
seed round was told a simulated truth (the planner's candidate pool and a real Chinchilla
fit), and before any run ended (no fit: the strategies' fallbacks). It must pick only
candidates from the pool it is given, never more compute than `budget_flops`, the same
picks for the same view and seed, and nothing when nothing fits.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from orchestrator.adaptive.strategies import NAMES, StrategyView, make_strategy
from orchestrator.adaptive.study import Study
from orchestrator.planning import parse_plan
from orchestrator.planning.expand import prior_n_opt
from workers.simulated import TrueLaw

ROOT = Path(__file__).resolve().parents[3]
PLAN = ROOT / "plans" / "adaptive-simulated.yaml"
TRUTH = TrueLaw()  # Hoffmann et al.'s estimates, 1% seed noise


def _study(root: Path, *, fitted: bool) -> Study:
    """The plan's Study on the store `root`, its seed round asked and, if `fitted`, told
    the truth (else nothing is observed yet: no fit, as in a study's first round)."""
    plan = parse_plan(PLAN.read_text(), path=str(PLAN), store=str(root))
    study = Study(plan)
    seed = study.ask()
    if fitted:
        study.tell({s.run_id: TRUTH.observed_loss(s) for s in seed})
    return study


@pytest.fixture(scope="module", params=["fitted", "unfitted"])
def study(request, tmp_path_factory) -> Study:
    return _study(tmp_path_factory.mktemp(request.param), fitted=request.param == "fitted")


@pytest.fixture(scope="module")
def view(study) -> StrategyView:
    state = study.state()
    assert (state.law is None) == (state.n_params.size == 0), "no fit to the seed runs"
    assert len(state.pool) > 10 and len({c.level_flops for c in state.pool}) > 1
    return state


def _strategy(study: Study, name: str):
    return make_strategy(name, lambda c: prior_n_opt(study.plan, c))


def _ids(chosen) -> list[str]:
    return [c.run_id for c in chosen]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pool", ["whole", "every other", "top level missing"])
def test_picks_only_distinct_candidates_of_the_pool_it_is_given(study, view, name, pool):
    if pool == "every other":
        view = dataclasses.replace(view, pool=view.pool[::2])
    elif pool == "top level missing":
        top = max(c.level_flops for c in view.pool)
        view = dataclasses.replace(view, pool=tuple(c for c in view.pool if c.level_flops < top))
    given = set(_ids(view.pool))
    for n in (1, 3, len(view.pool)):
        chosen = _strategy(study, name).propose(view, n, budget_flops=math.inf)
        assert chosen, f"{name} picked nothing from a pool of {len(given)} with no budget limit"
        assert set(_ids(chosen)) <= given
        assert len(set(_ids(chosen))) == len(chosen) <= n
        assert all(c in view.pool for c in chosen)  # the pool's own candidates, unchanged


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 3, 8, 100])
def test_never_proposes_more_compute_than_the_budget(study, view, name, n):
    costs = sorted(c.flops for c in view.pool)
    budgets = [
        costs[0],  # exactly the cheapest
        costs[0] + costs[1] - 1.0,  # one short of the two cheapest
        sum(costs[:3]),
        costs[len(costs) // 2],
        0.1 * sum(costs),
        0.5 * sum(costs),
    ]
    strategy = _strategy(study, name)
    for budget in budgets:
        chosen = strategy.propose(view, n, budget_flops=budget)
        spent = sum(c.flops for c in chosen)
        assert spent <= budget, f"{name}, n={n}: {spent:.4g} FLOPs > budget {budget:.4g}"


@pytest.mark.parametrize("name", NAMES)
def test_same_view_and_seed_give_the_same_picks(study, view, name, tmp_path):
    budget = 0.2 * sum(c.flops for c in view.pool)
    first = _ids(_strategy(study, name).propose(view, 4, budget_flops=budget))
    assert first
    # Asked again, by a new instance, on the same view.
    assert _ids(_strategy(study, name).propose(view, 4, budget_flops=budget)) == first
    # On the same view rebuilt from the store by a new Study (what `orch resume` does).
    rebuilt = Study.from_plan(study.plan, store=study.store.uri)
    again = rebuilt.state()
    assert _ids(again.pool) == _ids(view.pool) and again.seed == view.seed
    assert _ids(_strategy(rebuilt, name).propose(again, 4, budget_flops=budget)) == first
    # And from a second experiment of the same plan told the same results.
    other = _study(tmp_path, fitted=view.law is not None)
    assert _ids(_strategy(other, name).propose(other.state(), 4, budget_flops=budget)) == first


@pytest.mark.parametrize("name", NAMES)
def test_nothing_when_nothing_fits(study, view, name):
    strategy = _strategy(study, name)
    cheapest = min(c.flops for c in view.pool)
    for budget in (cheapest * (1 - 1e-9), 0.0):
        assert strategy.propose(view, 3, budget_flops=budget) == [], budget
    empty = dataclasses.replace(view, pool=())
    assert strategy.propose(empty, 3, budget_flops=math.inf) == []
