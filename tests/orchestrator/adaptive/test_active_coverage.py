"""`active`'s representative picks (strategies/coverage.py): a sample spread as the pool
is, within the budget, that leaves the pool's far corners alone."""

from __future__ import annotations

import numpy as np

from orchestrator.adaptive.strategies.coverage import herd


def _mmd(sample: np.ndarray, pool: np.ndarray) -> float:
    """Squared maximum mean discrepancy between two point sets, unit Gaussian kernel."""

    def k(a, b):
        return np.exp(-0.5 * np.sum((a[:, None] - b[None]) ** 2, axis=-1))

    return float(k(sample, sample).mean() + k(pool, pool).mean() - 2 * k(sample, pool).mean())


def test_herding_samples_the_pool_more_evenly_than_random_subsets():
    rng = np.random.default_rng(0)
    pool = np.concatenate(
        [rng.normal([20, 3], [1.5, 0.8], (150, 2)), rng.normal([23, 1], 0.5, (50, 2))]
    )
    picks = herd(np.empty((0, 2)), pool, np.ones(len(pool)), 20, budget=np.inf)
    assert len(set(picks)) == 20
    herded = _mmd(pool[picks], pool)
    randoms = [_mmd(pool[rng.choice(len(pool), 20, replace=False)], pool) for _ in range(200)]
    assert herded < np.quantile(randoms, 0.05)  # better than 95% of random samples


def test_herding_takes_far_corners_only_in_their_share_of_the_pool():
    # 25 runs in the middle and 4 far corners (14% of the pool): a space-filling (maximin)
    # design would take the 4 corners first; herding takes at most their share.
    grid = np.stack(np.meshgrid(np.linspace(19, 21, 5), np.linspace(2, 4, 5)), -1).reshape(-1, 2)
    corners = np.array([[15.0, -1.0], [15.0, 7.0], [25.0, -1.0], [25.0, 7.0]])
    pool = np.concatenate([grid, corners])
    for n in (5, 10):
        picks = herd(np.empty((0, 2)), pool, np.ones(len(pool)), n, budget=np.inf)
        assert len(set(picks) & set(range(25, 29))) <= round(n * 4 / 29)
    assert np.allclose(pool[picks].mean(axis=0), [20, 3], atol=0.5)  # spread around the middle


def test_runs_made_already_count_in_the_sample():
    pool = np.array([[20.0, 3.0], [20.1, 3.0], [22.0, 3.0]])
    made = np.array([[20.0, 3.0], [20.05, 3.0]])
    # The middle of the pool is covered by the runs made: the next pick is the far one.
    assert herd(made, pool, np.ones(3), 1, budget=np.inf) == [2]


def test_herding_stays_within_the_budget_and_skips_what_it_cannot_afford():
    rng = np.random.default_rng(1)
    pool = rng.normal([20, 3], 1.0, (40, 2))
    cost = np.exp(rng.uniform(0, 4, 40))
    picks = herd(np.empty((0, 2)), pool, cost, 30, budget=60.0)
    assert picks and cost[picks].sum() <= 60.0
    left = 60.0 - cost[picks].sum()
    if len(picks) < 30:  # it stopped: nothing left was affordable
        rest = np.setdiff1d(np.arange(40), picks)
        assert np.all(cost[rest] > left)
    assert herd(np.empty((0, 2)), pool, cost, 5, budget=0.5 * cost.min()) == []
