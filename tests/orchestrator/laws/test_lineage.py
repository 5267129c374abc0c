"""Lineages: a parent run and its cooldown branches count as one draw of seed noise.

The simulated studies (branches.py) have 12 parents with 3 branches each, whose noise
is mostly the parent's. Fitted as 48 independent runs, their intervals are too narrow;
fitted with their lineages, the intervals widen where the shared noise bites and cover
the truth about as often as they claim.
"""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.laws import Chinchilla, FitError
from orchestrator.laws.base import quiet_fits
from orchestrator.laws.lineage import lineage_codes, lineage_correlation
from tests.orchestrator.laws.branches import branch_study
from tests.orchestrator.laws.conftest import HOFFMANN, hoffmann_loss

NEW_N, NEW_D = 3e9, 6e10  # a run 10x beyond the largest parent's compute, 20 tokens/param


@pytest.fixture(scope="module")
def study():
    return branch_study(seed=0)


@pytest.fixture(scope="module")
def fits(study):
    """The same runs fitted as independent runs and as lineages."""
    n, d, loss, labels = study
    return Chinchilla().fit(n, d, loss), Chinchilla().fit(n, d, loss, groups=labels)


def test_distinct_groups_give_exactly_the_independent_fit(simulated_runs):
    n, d, loss = simulated_runs(seed=3)
    plain = Chinchilla().fit(n, d, loss)
    grouped = Chinchilla().fit(n, d, loss, groups=[f"run{i}" for i in range(n.size)])
    assert grouped.params == plain.params
    np.testing.assert_array_equal(grouped.cov_, plain.cov_)
    assert grouped.dof_ == plain.dof_ and grouped.noise_ == plain.noise_
    assert grouped.lineages_.corr == 0 and grouped.lineages_.count == n.size
    ours, theirs = grouped.bootstrap(10, seed=4), plain.bootstrap(10, seed=4)
    np.testing.assert_array_equal(ours.resample_weights_, theirs.resample_weights_)
    np.testing.assert_array_equal(ours.theta_samples_, theirs.theta_samples_)


def test_point_fit_is_the_same_with_lineages(fits):
    # Working independence (as in GEE): lineages change the uncertainty, not the estimate.
    plain, grouped = fits
    assert grouped.params == plain.params
    assert grouped.groups_ is not None and len(grouped.groups_) == grouped.n_obs_


def test_lineages_measure_the_shared_noise_and_lower_the_degrees_of_freedom(fits):
    plain, grouped = fits
    assert grouped.lineages_.count == 12
    assert 0.3 < grouped.lineages_.corr <= 1.0
    assert plain.dof_ == 48 - 5
    assert 1 <= grouped.dof_ < 0.5 * plain.dof_


def test_intervals_on_level_quantities_widen_with_lineages(fits):
    plain, grouped = fits
    for law in (plain, grouped):
        assert law.reliable_
    width = {}
    for name, law in (("plain", plain), ("grouped", grouped)):
        pred = law.predict(NEW_N, NEW_D, level=0.9)
        e = law.param_intervals(level=0.9)["E"]
        width[name] = (np.log(pred.hi / pred.lo), np.log(e.hi / e.lo))
    assert width["grouped"][0] > 1.3 * width["plain"][0]
    assert width["grouped"][1] > 1.3 * width["plain"][1]


def test_lineage_covariance_is_never_narrower_than_the_independent_one(fits):
    # The meat weighs each run by its lineage's design effect >= 1, so cov_g - cov is
    # positive semi-definite: no quantity gets a narrower interval from lineages.
    plain, grouped = fits
    gap = np.linalg.eigvalsh(grouped.cov_ - plain.cov_)
    assert gap.min() >= -1e-12 * np.abs(gap).max()


def test_a_lineage_counts_its_runs_whatever_their_precision_weights(study, fits):
    # Branches stopped early weigh less (precision weights), but a lineage of 4 runs is
    # still 4 runs: the same design effects and degrees of freedom at any weight scale.
    n, d, loss, labels = study
    _, grouped = fits
    weights = np.where(np.arange(n.size) % 4 == 0, 1.0, 0.5)  # parents measured
    law = Chinchilla().fit(n, d, loss, groups=labels, weights=weights)
    scaled = Chinchilla().fit(n, d, loss, groups=labels, weights=0.25 * weights)
    # (the scaled objective's optimum agrees to ~1e-9, not bit for bit)
    assert scaled.lineages_.corr == pytest.approx(law.lineages_.corr, rel=1e-6)
    count = law.lineages_.effective_count(np.ones(n.size))
    assert law.dof_ == pytest.approx(count - 5) and scaled.dof_ == pytest.approx(count - 5)
    np.testing.assert_allclose(scaled.cov_, law.cov_, rtol=1e-5)
    assert law.dof_ < 0.5 * (n.size - 5)  # still far fewer than the runs


def test_lineage_intervals_cover_the_truth_closer_to_nominal_over_seeds():
    # 100 seeded studies: 90% intervals on L at a run 10x beyond the data and on E. As
    # independent runs they cover ~0.5-0.7 (measured 0.53, 0.67); with lineages ~0.9
    # (0.85, 0.92). A binomial sd of 3 points keeps the bounds far from both.
    true_loss, hits = hoffmann_loss(NEW_N, NEW_D), {False: [0, 0], True: [0, 0]}
    with quiet_fits():  # 5 parameters and 12 lineages: each fit cautions; nobody asked
        for seed in range(100):
            n, d, loss, labels = branch_study(seed=seed)
            for grouped in (False, True):
                law = Chinchilla(n_refine=8).fit(n, d, loss, groups=labels if grouped else None)
                pred = law.predict(NEW_N, NEW_D, level=0.9)
                e = law.param_intervals(level=0.9)["E"]
                hits[grouped][0] += pred.lo <= true_loss <= pred.hi
                hits[grouped][1] += e.lo <= HOFFMANN["E"] <= e.hi
    plain, grouped = np.array(hits[False]) / 100, np.array(hits[True]) / 100
    assert np.all(np.abs(grouped - 0.9) < np.abs(plain - 0.9)), (plain, grouped)
    assert np.all(grouped >= 0.8) and np.all(plain <= 0.8), (plain, grouped)


def test_bootstrap_resamples_lineages_whole(fits, study):
    _, grouped = fits
    labels = study[3]
    ensemble = grouped.bootstrap(40, seed=0)
    counts = ensemble.resample_weights_
    for label in np.unique(labels):
        members = counts[:, labels == label]
        assert np.all(members == members[:, :1]), label  # drawn together, every time
    # 12 lineages drawn with replacement, 4 runs each: 48 runs in every resample.
    assert np.all(counts.sum(axis=1) == 48)
    assert np.any(counts == 0) and np.any(counts >= 2)


def test_cluster_bootstrap_widens_intervals_when_branches_share_noise(fits):
    plain, grouped = fits
    widths = []
    for law in (plain, grouped):
        pred = law.bootstrap(100, seed=1).predict(NEW_N, NEW_D, level=0.9)
        widths.append(np.log(pred.hi / pred.lo))
    assert widths[1] > 1.3 * widths[0]


@pytest.mark.parametrize(
    "groups, message",
    [
        (["a"] * 3, r"groups: expected 48 lineage labels \(one per observation\), got 3"),
        ("parent", "groups: expected a sequence of 48 lineage labels"),
        ([None] * 48, r"groups\[0\] is None"),
        ([["a"]] * 48, r"groups\[0\] = \['a'\] is not hashable"),
    ],
)
def test_bad_groups_are_a_fit_error_that_says_what_is_wrong(study, groups, message):
    n, d, loss, _ = study
    with pytest.raises(FitError, match=message):
        Chinchilla().fit(n, d, loss, groups=groups)


def test_lineage_codes_number_labels_by_first_appearance():
    np.testing.assert_array_equal(lineage_codes(["b", "a", "b", "c"], 4), [0, 1, 0, 2])
    np.testing.assert_array_equal(lineage_codes(np.array([7, 7, 3]), 3), [0, 0, 1])
    assert lineage_codes(None, 5) is None


def test_lineage_correlation_is_one_for_shared_scores_and_zero_without_pairs():
    codes = np.repeat(np.arange(50), 4)
    rng = np.random.default_rng(0)
    shared = np.repeat(rng.choice([-1.0, 1.0], 50), 4)
    weights = np.ones(200)
    assert lineage_correlation(shared, weights, codes) == pytest.approx(1.0)
    independent = rng.choice([-1.0, 1.0], 200)
    assert lineage_correlation(independent, weights, codes) < 0.15
    assert lineage_correlation(independent, weights, np.arange(200)) == 0.0


def test_record_keeps_the_lineages(fits):
    plain, grouped = fits
    assert plain.record().lineages is None
    lineages = grouped.record().lineages
    assert lineages["count"] == 12 and lineages["runs"] == 48
    assert lineages["corr"] == pytest.approx(grouped.lineages_.corr)
