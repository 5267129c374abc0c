"""The active strategy counts a parent run and its cooldown branches as one lineage.

Branches share their parent's weights and seed noise, so k branches of one parent must
add less information than k independent runs at the same (N, D); with no shared
lineages nothing changes.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.adaptive.strategies.active import ActiveStrategy, information
from orchestrator.adaptive.strategies.base import Candidate, StrategyView, Target
from orchestrator.laws import Chinchilla
from tests.orchestrator.laws.branches import branch_study
from tests.orchestrator.laws.conftest import HOFFMANN

S2 = 0.01**2  # seed noise of log L


@pytest.fixture(scope="module")
def study():
    return branch_study(seed=0)


@pytest.fixture(scope="module")
def fits(study):
    """The same 12 parents x 4 runs as 48 independent runs, and as 12 lineages."""
    n, d, loss, labels = study
    return Chinchilla().fit(n, d, loss), Chinchilla().fit(n, d, loss, groups=labels)


def test_branches_of_one_parent_carry_less_information_than_independent_runs(fits):
    independent, lineages = fits
    assert lineages.lineages_.corr > 0.3
    f_ind, f_lin = information(independent, S2), information(lineages, S2)
    # F_lin <= F_ind in the positive semi-definite order: in every direction, scaled by
    # F_ind so that parameters of different units compare.
    root = np.linalg.cholesky(f_ind)
    inv_root = np.linalg.inv(root)
    ratio = np.linalg.eigvalsh(inv_root @ f_lin @ inv_root.T)
    assert ratio.max() <= 1 + 1e-9
    assert ratio.min() < 0.6  # and markedly less in some direction
    assert np.trace(f_lin) < np.trace(f_ind)


def test_information_of_independent_lineages_is_unchanged(study):
    n, d, loss, _ = study
    plain = Chinchilla().fit(n, d, loss)
    distinct = Chinchilla().fit(n, d, loss, groups=[f"run{i}" for i in range(n.size)])
    np.testing.assert_array_equal(information(distinct, S2), information(plain, S2))


def test_a_map_fit_counts_its_prior_as_information(study):
    n, d, loss, _ = study
    law = Chinchilla().fit(n, d, loss, prior=HOFFMANN)
    with_prior = information(law, S2)
    law.penalty_, penalty = None, law.penalty_
    try:
        without = information(law, S2)
    finally:
        law.penalty_ = penalty
    np.testing.assert_allclose(with_prior - without, penalty.precision(law.theta_), rtol=1e-9)


def _candidate(run_id: str, branch_from: str, n_params: float, tokens: float) -> Candidate:
    spec = SimpleNamespace(run_id=run_id, branch_from=branch_from)  # all a strategy reads
    flops = 6 * n_params * tokens
    return Candidate(spec=spec, n_params=n_params, tokens=tokens, flops=flops, level_flops=flops)


def _view(law, pool) -> StrategyView:
    n, d, loss, _ = law.observations_
    return StrategyView(
        n_params=n,
        tokens=d,
        flops=6 * n * d,
        loss=loss,
        law=law,
        pool=tuple(pool),
        target=Target(flops=1e22),
        noise=0.01,
        round=1,
        seed=0,
        size_spread=10.0,
        sizes_per_level=4,
    )


@pytest.mark.parametrize("grouped", [True, False], ids=["fit-with-lineages", "fit-without"])
def test_active_prefers_an_independent_run_to_an_equal_branch(fits, grouped):
    # Two candidates at the same (N, D) and cost: a branch of parent0 (listed first, so a
    # tie would pick it) and a run of its own. The branch shares parent0's noise (measured
    # by a fit with lineages, else assumed), so the independent run is worth more.
    law = fits[1] if grouped else fits[0]
    n, d = law.observations_[0][0], 0.6 * law.observations_[1][0]
    pool = [_candidate("branch", "parent0", n, d), _candidate("fresh", "", n, d)]
    strategy = ActiveStrategy(fallback=None, n_samples=1)
    chosen = strategy.propose(_view(law, pool), 1, budget_flops=1e30)
    assert [c.run_id for c in chosen] == ["fresh"]
