"""Replaying a finished sweep: strategies choose only its runs, within the budget, the same
way for the same seed, and are scored at held-out targets they never see."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from orchestrator.adaptive.replay import replay
from orchestrator.adaptive.replay_study import ReplayStudy, prior_n_opt, replay_pool, seed_design
from orchestrator.adaptive.strategies import NAMES, make_strategy
from orchestrator.adaptive.study import StudyError
from orchestrator.adaptive.sweep import Sweep, TargetTable, load_sweep
from orchestrator.adaptive.targets import Target, TargetRun
from workers.simulated import TrueLaw

TRUTH = TrueLaw()  # Hoffmann et al.'s estimates


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Sweep:
    """An IsoFLOP sweep of the truth with 1% seed noise: 8 levels from 1e17 to 1e20 FLOPs,
    8 sizes over a factor 30 around 20 tokens per parameter, C counted as 6.5 N D (not 6 N
    D), and two seeds of its cheapest run."""
    rng = np.random.default_rng(7)
    rows = []
    for level in np.geomspace(1e17, 1e20, 8):
        for n in prior_n_opt(level) * np.geomspace(1 / 5.5, 5.5, 8):
            d = level / (6 * n)
            loss = TRUTH.loss(n, d) * math.exp(0.01 * rng.standard_normal())
            rows.append([float(n), float(d), float(6.5 * n * d), float(loss)])
    rows.append([*rows[0][:3], rows[0][3] * 1.01])  # another seed of the cheapest run
    path = tmp_path_factory.mktemp("sweep") / "sweep.csv"
    path.write_text("N,D,C,loss\n" + "".join(",".join(map(repr, r)) + "\n" for r in rows))
    return load_sweep(path)


@pytest.fixture(scope="module")
def targets(sweep) -> TargetTable:
    return sweep.largest(3)


def _study(sweep, targets, name, *, frac=0.1, seed=0, overhead=0.0, **options) -> ReplayStudy:
    pool = replay_pool(sweep, targets.runs, overhead_flops=overhead)
    budget = frac * sum(c.flops for c in pool)
    return ReplayStudy(
        sweep,
        pool,
        Target(runs=targets.runs),
        make_strategy(name, prior_n_opt),
        budget_flops=budget,
        seed_runs=seed_design(pool, budget),
        seed=seed,
        **options,
    )


@pytest.mark.parametrize("name", NAMES)
def test_a_replay_chooses_only_runs_of_the_sweep_and_never_a_target(sweep, targets, name):
    study = _study(sweep, targets, name, frac=0.3).run()
    chosen = [c.run_id for c in study.chosen]
    held_out = {sweep.run_ids[i] for i in np.argsort(-sweep.flops, kind="stable")[:3]}
    assert chosen and len(chosen) == len(set(chosen))
    assert set(chosen) <= set(sweep.run_ids) and not set(chosen) & held_out
    assert len(chosen) > len(study.rounds[0].run_ids)  # the strategy chose some
    for c in study.chosen:  # each revealed loss is its own row's
        i = sweep.run_ids.index(c.run_id)
        assert (c.n_params, c.tokens) == (sweep.n_params[i], sweep.tokens[i])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("frac,overhead", [(0.02, 0.0), (0.1, 0.0), (0.1, 3e16), (0.5, 1e17)])
def test_a_replay_never_spends_past_its_budget(sweep, targets, name, frac, overhead):
    study = _study(sweep, targets, name, frac=frac, overhead=overhead).run()
    assert study.ledger.committed_flops <= 1e-9 * study.ledger.budget_flops  # float residue
    assert study.ledger.spent_flops <= study.ledger.budget_flops
    row = {r: i for i, r in enumerate(sweep.run_ids)}
    paid = sum(sweep.flops[row[c.run_id]] + overhead for c in study.chosen)
    assert study.ledger.spent_flops == pytest.approx(paid, rel=1e-12)
    assert study.stop_reason.startswith(("budget:", "strategy:"))


@pytest.mark.parametrize("frac", [0.1, 0.3])
def test_active_spreads_its_runs_over_the_pool_instead_of_a_levels_extreme_sizes(
    sweep, targets, frac
):
    # A level's smallest and largest models (most over- and under-trained) are where a
    # form fits worst; the discrepancy plan took 75% (10% budget) and 67% (30%) of its
    # runs there, random 31-54% over seeds 0-2, the pool has 2 of each level's 8.
    study = _study(sweep, targets, "active", frac=frac).run()
    picked = study.chosen[len(study.rounds[0].run_ids) :]
    pool = replay_pool(sweep, targets.runs)
    extreme = 0
    for c in picked:
        sizes = [q.n_params for q in pool if q.level_flops == c.level_flops]
        extreme += c.n_params in (min(sizes), max(sizes))
    assert len(picked) >= 15 and extreme / len(picked) <= 0.4


def test_each_run_costs_the_tables_flops_plus_the_overhead(sweep, targets):
    pool = replay_pool(sweep, targets.runs, overhead_flops=1e16)
    for c in pool:
        assert c.flops == pytest.approx(6.5 * c.n_params * c.tokens + 1e16, rel=1e-12)
    assert len(pool) == len(sweep) - 3


@pytest.mark.parametrize("name", ["active", "random"])
def test_a_replay_is_the_same_for_the_same_seed(sweep, targets, name):
    first = [c.run_id for c in _study(sweep, targets, name, seed=3).run().chosen]
    again = [c.run_id for c in _study(sweep, targets, name, seed=3).run().chosen]
    assert first == again
    if name == "random":
        other = [c.run_id for c in _study(sweep, targets, name, seed=4).run().chosen]
        assert other != first


def test_round_zero_is_a_small_seed_grid_shared_by_every_strategy(sweep, targets):
    pool = replay_pool(sweep, targets.runs)
    budget = 0.1 * sum(c.flops for c in pool)
    seed = seed_design(pool, budget)
    assert 5 <= len(seed) <= 9 and sum(c.flops for c in seed) <= 0.2 * budget
    assert len({c.level_flops for c in seed}) == 3  # the three cheapest levels
    assert len({c.n_params for c in seed}) >= 3 and len({c.tokens for c in seed}) >= 3
    for name in NAMES:
        study = _study(sweep, targets, name)
        assert [c.run_id for c in study.ask()] == [c.run_id for c in seed]


def test_a_tiny_budget_still_seeds_a_first_fit_without_overspending(sweep, targets):
    pool = replay_pool(sweep, targets.runs)
    cheapest = sorted(c.flops for c in pool)
    budget = sum(cheapest[:5]) * (1 + 1e-9)  # just enough for 5 runs: 20% of it is not
    seed = seed_design(pool, budget)
    assert len(seed) == 5 and sum(c.flops for c in seed) <= budget
    assert seed_design(pool, cheapest[0] / 2) == []


def test_a_replay_stops_once_the_targets_are_pinned_down(sweep, targets):
    study = _study(sweep, targets, "random", frac=0.5, rel_width=0.2).run()
    assert study.stop_reason.startswith("target: 90% interval widths L(N=")
    assert study.ledger.spent_flops < study.ledger.budget_flops


def test_target_losses_are_used_to_score_never_to_choose(sweep, targets):
    blind = TargetTable(targets.source, targets.runs, (None,) * len(targets.runs))
    options = dict(strategies=("random",), budget_frac=0.1, form="chinchilla", reference=False)
    scored, unscored = replay(sweep, targets, **options), replay(sweep, blind, **options)
    assert scored.outcomes[0].run_ids == unscored.outcomes[0].run_ids
    assert scored.outcomes[0].scored == 3 and unscored.outcomes[0].scored == 0
    assert unscored.outcomes[0].mean_abs_error_pct is None


def test_a_replay_result_scores_every_target_and_writes_json(sweep, targets, tmp_path):
    result = replay(
        sweep, targets, strategies=("active", "grid"), budget_frac=0.1, seed=1, form="chinchilla"
    )
    assert [o.strategy for o in result.outcomes] == ["active", "grid"]
    assert result.reference.strategy == "pool" and result.reference.spent_frac == 1.0
    assert result.pool_runs == len(sweep) - 3 and result.budget_frac == 0.1
    for o in (*result.outcomes, result.reference):
        assert o.fit == "chinchilla" and len(o.scores) == 3
        errors, covered = [], 0
        for s, observed in zip(o.scores, targets.loss, strict=True):
            assert s.observed == observed and s.prediction.lo < s.prediction.mean < s.prediction.hi
            errors.append(abs(s.prediction.mean / observed - 1) * 100)
            covered += s.prediction.lo <= observed <= s.prediction.hi
        assert o.mean_abs_error_pct == pytest.approx(np.mean(errors))
        assert (o.covered, o.scored) == (covered, 3)
    for o in result.outcomes:
        assert 0 < o.spent_frac <= 0.1 and o.run_ids[:9] == result.seed_run_ids[:9]
    data = json.loads(json.dumps(result.to_dict()))
    assert [o["strategy"] for o in data["outcomes"]] == ["active", "grid", "pool"]
    assert data["outcomes"][0]["targets"][0]["observed"] == targets.loss[0]


def test_a_replay_with_nothing_to_choose_or_a_bad_option_is_refused(sweep, targets):
    two = Sweep(
        Path("two.csv"),
        sweep.run_ids[:2],
        sweep.n_params[:2],
        sweep.tokens[:2],
        sweep.flops[:2],
        sweep.loss[:2],
        sweep.groups[:2],
    )
    runs = tuple(TargetRun(n, d) for n, d in zip(two.n_params, two.tokens, strict=True))
    both = TargetTable("t.csv", runs, (None, None))
    with pytest.raises(StudyError, match="two.csv: every run is a target"):
        replay(two, both, budget_frac=0.1)
    with pytest.raises(StudyError, match="budget_frac"):
        replay(sweep, targets, budget_frac=1.5)
    with pytest.raises(StudyError, match="strategies"):
        replay(sweep, targets, strategies=("bayes",), budget_frac=0.1)
    with pytest.raises(StudyError, match="form: expected one of auto, chinchilla"):
        replay(sweep, targets, budget_frac=0.1, form="hoffmann")
    with pytest.raises(StudyError, match="form_error_floor"):
        replay(sweep, targets, budget_frac=0.1, form_error_floor=-0.01)


def test_autolaws_form_error_floor_widens_the_intervals_at_the_targets_and_is_recorded(
    sweep, targets
):
    options = dict(strategies=("grid",), budget_frac=0.2, reference=False)
    plain = replay(sweep, targets, form_error_floor=0, **options)
    wide = replay(sweep, targets, form_error_floor=0.05, **options)
    assert plain.outcomes[0].run_ids == wide.outcomes[0].run_ids  # choosing reads no floor
    for p, w in zip(plain.outcomes[0].scores, wide.outcomes[0].scores, strict=True):
        # The prediction is the median of the forms' mixture, which shifts slightly (here
        # by 2e-5 of L) when its parts widen unequally.
        assert w.prediction.mean == pytest.approx(p.prediction.mean, rel=1e-3)
        assert w.prediction.hi - w.prediction.lo > p.prediction.hi - p.prediction.lo
    assert wide.to_dict()["form_error_floor"] == 0.05


def test_a_form_that_cannot_be_fitted_leaves_no_prediction_and_says_why(sweep, targets):
    # 9 seed runs cannot fit Farseer's 9 parameters: no prediction, and the reason shown.
    pool = replay_pool(sweep, targets.runs)
    result = replay(
        sweep, targets, strategies=("grid",), budget_frac=1e-3, form="farseer", reference=False
    )
    (outcome,) = result.outcomes
    assert len(outcome.run_ids) < 10 < len(pool)
    assert outcome.fit == "none" and outcome.fit_note.startswith("farseer: ")
    assert all(s.prediction is None for s in outcome.scores) and outcome.scored == 0
