import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.planning import PlanError, load_plan
from orchestrator.planning.axis import compute_axis
from orchestrator.planning.expand import expand_plan
from orchestrator.planning.hardware import ACCELERATORS, gpu_hours
from orchestrator.planning.hparams import choose_hparams
from orchestrator.planning.ledger import BudgetError, Ledger
from tests.plans import plan_text

CHINCHILLA = plan_text("chinchilla.yaml")


def _plan(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_plan(path)


def test_chinchilla_plan_spreads_sizes_around_the_prior_optimum_at_each_level(tmp_path):
    plan = _plan(tmp_path, CHINCHILLA)
    study, axis = expand_plan(plan), compute_axis(plan)
    levels = sorted({r.level_flops for r in study.runs})
    assert levels == pytest.approx([1e18, 1e19, 1e20, 1e21])
    for level in levels:
        runs = [r for r in study.runs if r.level_flops == level]
        assert len(runs) == 5
        # The prior: 20 tokens per parameter, spending the level as the plan counts C (the
        # appendix F count, more than 6ND: embeddings and attention), not C = 6ND.
        geo_mean = math.exp(sum(math.log(r.target_params) for r in runs) / len(runs))
        assert axis.flops(geo_mean, 20 * geo_mean) == pytest.approx(level, rel=0.01)
        assert geo_mean < math.sqrt(level / 120)
        reached = sorted(r.n_params for r in runs)
        assert reached[-1] / reached[0] == pytest.approx(16, rel=0.25)
        for r in runs:  # each run spends its level to within one optimizer step
            step = r.spec.flops_per_token * r.spec.tokens_per_step
            assert abs(r.flops - level) <= step / 2


def test_every_planned_run_fits_its_gpus_and_the_budget(tmp_path):
    plan = _plan(tmp_path, CHINCHILLA)
    study = expand_plan(plan)
    limit = ACCELERATORS["H100-80GB"].memory_bytes * plan.hardware.memory_safety
    for r in study.runs:
        assert r.memory_bytes <= limit
        assert r.spec.world_size <= plan.hardware.max_gpus_per_run
        assert r.spec.global_batch % (r.spec.micro_batch * r.spec.world_size) == 0
        hours_wall = r.gpu_hours / r.spec.world_size
        assert hours_wall <= plan.hardware.max_wall_hours or r.spec.world_size == 64
    assert study.seed_flops <= study.budget_flops * (1 - plan.budget.adaptive_share)
    assert study.gpu_hours == pytest.approx(
        sum(gpu_hours(r.flops, ACCELERATORS["H100-80GB"], mfu=0.4) for r in study.runs)
    )


def test_without_max_flops_the_grid_grows_to_what_the_budget_allows(tmp_path):
    plan = _plan(tmp_path, CHINCHILLA.replace("  max_flops: 1e21\n", ""))
    study = expand_plan(plan)
    allowed = study.budget_flops * (1 - plan.budget.adaptive_share)
    assert 0.9 * allowed <= study.seed_flops <= allowed


def test_gpu_hour_budget_is_converted_at_the_plans_mfu(tmp_path):
    plan = _plan(tmp_path, CHINCHILLA.replace("flops: 1e22 ", "gpu_hours: 20000 "))
    assert plan.budget.flops == pytest.approx(20000 * 3600 * 989e12 * 0.4)


def test_seed_grid_larger_than_the_budget_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError, match=r"p.yaml:\d+ budget.flops: the seed runs need"):
        _plan(tmp_path, CHINCHILLA.replace("flops: 1e22 ", "flops: 1e21 "))


def test_run_that_fits_no_gpu_count_is_a_plan_error_naming_it(tmp_path):
    text = CHINCHILLA.replace("max_gpus_per_run: 64", "max_gpus_per_run: 1")
    with pytest.raises(
        PlanError, match=r"seed_grid: run of .* params at 1e\+2\d FLOPs: .*fits on no"
    ):
        _plan(tmp_path, text)


def test_deepseek_rule_follows_its_formula():
    hp = choose_hparams(
        "deepseek", n_params=1e8, tokens=1e10, flops=1e20, seq_len=2048, fixed_lr=0, fixed_batch=0
    )
    assert hp.peak_lr == pytest.approx(0.3118 * 1e20**-0.125)
    tokens = 0.2920 * 1e20**0.3271
    assert hp.global_batch == 2 ** round(math.log2(tokens / 2048))


def test_steplaw_rule_follows_its_formula():
    hp = choose_hparams(
        "steplaw", n_params=1e8, tokens=1e10, flops=6e18, seq_len=1024, fixed_lr=0, fixed_batch=0
    )
    assert hp.peak_lr == pytest.approx(1.79 * 1e8**-0.713 * 1e10**0.307)


@settings(max_examples=300, deadline=None)
@given(
    budget=st.floats(1e3, 1e25),
    ops=st.lists(st.tuples(st.floats(0, 1), st.booleans(), st.floats(0, 1)), max_size=60),
)
def test_ledger_never_lets_committed_plus_spent_exceed_the_budget(budget, ops):
    ledger = Ledger(budget)
    open_runs = []
    for fraction, settle, spent_fraction in ops:
        if settle and open_runs:
            flops = open_runs.pop()
            ledger.settle("seed", flops, flops * spent_fraction)
        else:
            flops = fraction * budget
            try:
                ledger.commit("seed", flops)
                open_runs.append(flops)
            except BudgetError:
                pass
        assert ledger.committed_flops + ledger.spent_flops <= budget * (1 + 1e-9)


def test_seed_grid_centres_on_a_previous_fits_optimum(tmp_path):
    from orchestrator.laws import Chinchilla

    n = np.array([1e8, 3e8, 1e9, 3e9, 1e8, 3e8, 1e9, 3e9, 2e8])
    d = np.array([2e9, 6e9, 2e10, 6e10, 2e10, 6e10, 2e9, 6e9, 4e9])
    loss = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
    law = Chinchilla().fit(n, d, loss)
    law.record(run_ids=()).save(tmp_path / "prior.json")
    text = CHINCHILLA.replace("  tokens_per_param: 20", "  prior_fit: prior.json")
    plan = _plan(tmp_path, text)
    study = expand_plan(plan)
    # The prior's optimum on the plan's own count of C (the appendix F count).
    on_axis = Chinchilla(flops_per_token=compute_axis(plan).per_token).fit(n, d, loss)
    for level in (1e18, 1e21):
        runs = [r for r in study.runs if r.level_flops == level]
        geo_mean = math.exp(sum(math.log(r.target_params) for r in runs) / len(runs))
        assert geo_mean == pytest.approx(float(on_axis.n_opt(level).mean), rel=0.005)
        # On C = 6ND the optimum is elsewhere: the axis matters at these sizes.
        assert abs(math.log(geo_mean / float(law.n_opt(level).mean))) > 0.05
    # The experiment's copy of the plan names the prior absolutely: it reads from there.
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "plan.yaml").write_text(plan.text)
    assert expand_plan(load_plan(tmp_path / "exp" / "plan.yaml")).specs == study.specs


def test_prior_fit_that_cannot_be_read_is_a_plan_error(tmp_path):
    text = CHINCHILLA.replace("  tokens_per_param: 20", "  prior_fit: missing.json")
    with pytest.raises(PlanError, match=r"seed_grid.prior_fit: cannot read the fit"):
        _plan(tmp_path, text)


def test_a_loaded_plan_is_expanded_once_to_check_it_and_reused_to_run_it(monkeypatch):
    from orchestrator.planning import expand as expand_module

    plan = load_plan(Path(__file__).resolve().parents[3] / "plans" / "simulated.yaml")
    calls = []
    monkeypatch.setattr(expand_module, "_seed_runs", lambda *a: calls.append(a) or [])
    first = expand_module.expand_plan(plan)
    assert calls == [] and first.runs  # the expansion load_plan made, not a new one
