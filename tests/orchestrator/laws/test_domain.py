"""The under-trained edge of a sweep: found from the residuals, left out of AutoLaw's fits."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from orchestrator.laws import AutoLaw, FitError
from orchestrator.laws.domain import edge_holds, undertrained_cutoff

# 6 sizes x 7 ratios, 2 to 128 tokens per parameter.
SIZES = np.repeat(np.geomspace(1e7, 1e9, 6), 7)
RATIOS = np.tile(2.0 ** np.arange(1, 8), 6)
TOKENS = SIZES * RATIOS
ON_FIT = 1.5e-3  # |residual| of a run the fit passes through (AutoLaw: 1.5 Huber deltas)


def chinchilla_truth(n, d):
    return 1.8 + 400 * n**-0.34 + 400 * d**-0.28


def farseer_truth(n, d):
    """A Farseer-shaped surface (orchestrator/laws/farseer.py), as bench/real_sweeps.py."""
    k = np.exp(-0.02 * n**0.1 - 1.0)
    return np.exp(100 * n**-0.3 + np.log(1.5)) + np.exp(0.5 * n**0.1 + 3.0) * d**-k


def _noisy(loss, seed, scale=0.005):
    return loss * np.exp(scale * np.random.default_rng(seed).standard_normal(loss.size))


def _with_edge(seed):
    """Chinchilla's surface, except that the runs at 2 tokens per parameter (6 of 42) lose
    6-10% more, as Gadre et al.'s runs at 5 tokens per parameter do."""
    loss = _noisy(chinchilla_truth(SIZES, TOKENS), seed)
    excess = np.random.default_rng(seed + 100).uniform(0.06, 0.10, SIZES.size)
    return np.where(RATIOS == 2, loss * (1 + excess), loss)


# --- undertrained_cutoff on residuals ---------------------------------------------------


def test_an_edge_of_large_residuals_is_cut_at_the_first_ratio_above_it():
    rng = np.random.default_rng(0)
    resid = 0.005 * rng.standard_normal(SIZES.size)
    resid[RATIOS == 2] += 0.08
    ones = np.ones(SIZES.size)
    assert undertrained_cutoff(SIZES, TOKENS, resid, ones, ON_FIT) == 4.0
    # Runs of zero weight are not judged (nor counted among the runs).
    assert undertrained_cutoff(SIZES, TOKENS, resid, np.where(RATIOS == 2, 0, ones), ON_FIT) is None


def test_an_edge_the_fit_passes_through_in_part_is_still_found():
    # A fit with few runs per parameter passes through some of the edge's own runs (as
    # on half of Gadre et al.'s sweeps): those say nothing of a misfit and are not judged,
    # where counting them puts the median of the edge on the surface.
    rng = np.random.default_rng(2)
    resid = 0.005 * rng.standard_normal(SIZES.size)
    edge = np.flatnonzero(RATIOS == 2)
    resid[edge] = [0.0004, -0.0002, 0.14, 0.0001, 0.05, 0.0003]  # 4 of 6 on the fit
    resid[rng.choice(np.flatnonzero(RATIOS > 2), 3, replace=False)] = 0.0
    assert undertrained_cutoff(SIZES, TOKENS, resid, np.ones(SIZES.size), ON_FIT) == 4.0


def test_runs_below_the_surface_are_no_edge():
    # An under-trained run loses more than the law says; a band the law overshoots is a
    # form bending the wrong way (Chinchilla's on a Farseer-shaped surface), not an edge.
    resid = 0.005 * np.random.default_rng(3).standard_normal(SIZES.size)
    resid[RATIOS == 2] -= 0.08
    assert undertrained_cutoff(SIZES, TOKENS, resid, np.ones(SIZES.size), ON_FIT) is None


@pytest.mark.parametrize("seed", range(5))
def test_seed_noise_alone_is_no_edge(seed):
    resid = 0.005 * np.random.default_rng(seed).standard_normal(SIZES.size)
    assert undertrained_cutoff(SIZES, TOKENS, resid, np.ones(SIZES.size), ON_FIT) is None


def test_too_few_runs_or_too_large_a_share_is_no_edge():
    resid = np.zeros(SIZES.size) + 0.005 * np.random.default_rng(1).standard_normal(SIZES.size)
    two = resid.copy()
    two[:2] += 0.1  # two outliers (at 2 and 4 tokens per parameter): not a regime
    assert undertrained_cutoff(SIZES, TOKENS, two, np.ones(SIZES.size), ON_FIT) is None
    wide = resid.copy()
    wide[RATIOS <= 8] += 0.1  # 3 of 7 ratios (43% of the runs): not a margin
    assert undertrained_cutoff(SIZES, TOKENS, wide, np.ones(SIZES.size), ON_FIT) is None


def test_an_edge_holds_unless_a_run_lies_far_below_the_fit_without_it():
    # Residuals under a fit without the edge's runs: an under-trained run lies above it.
    resid = 0.005 * np.random.default_rng(4).standard_normal(SIZES.size)
    below = RATIOS == 2
    ones = np.ones(SIZES.size)
    above = resid.copy()
    above[below] = [0.08, 0.06, -0.004, 0.1, 0.07, 0.09]  # one on the surface: still an edge
    assert edge_holds(above, below, ones, ON_FIT)
    both = above.copy()
    both[np.flatnonzero(below)[0]] = -0.1  # as Porian et al.'s smallest budgets: both ways
    assert not edge_holds(both, below, ones, ON_FIT)
    # Runs of zero weight are not judged; an edge of none is no edge.
    assert edge_holds(both, below, np.where(both < -0.05, 0, ones), ON_FIT)
    assert not edge_holds(above, below, np.where(below, 0, ones), ON_FIT)


# --- AutoLaw -------------------------------------------------------------------------------


def test_autolaw_leaves_out_an_edge_every_form_misfits_and_says_so(caplog):
    loss = _with_edge(0)
    # No floor under the form error: the widths compared below are the noise term's.
    law = AutoLaw(form_error_floor=0).fit(SIZES, TOKENS, loss)
    assert law.min_tokens_per_param_ == 4.0 and law.excluded_ == 6
    assert any("6 runs with fewer than 4 tokens per parameter" in w for w in law.warnings_)
    kept = AutoLaw(min_tokens_per_param=None, form_error_floor=0).fit(SIZES, TOKENS, loss)
    assert kept.min_tokens_per_param_ is None and kept.excluded_ == 0
    # Beyond the sweep, at 20 tokens per parameter: the fit without the edge covers the
    # surface with intervals less than half as wide (the edge no longer inflates the noise).
    n_new = np.array([3e9, 1e10])
    truth = chinchilla_truth(n_new, 20 * n_new)
    cut, full = law.predict(n_new, 20 * n_new), kept.predict(n_new, 20 * n_new)
    assert np.all((cut.lo <= truth) & (truth <= cut.hi))
    assert np.all(np.log(cut.hi / cut.lo) < 0.5 * np.log(full.hi / full.lo))
    with caplog.at_level(logging.WARNING, logger="orchestrator.laws.auto"):
        law.predict(1e9, 2e9)
    assert "fewer than 4 tokens per parameter" in caplog.text


def test_autolaw_keeps_an_edge_that_misfits_both_ways():
    # As on Porian et al.'s IsoFLOP sweeps: the low ratio's runs mostly lie above the
    # surface, but one lies far below it, so the misfit is the form's at that corner,
    # not under-training, and leaving the runs out would only hide it.
    loss = _with_edge(0)
    smallest_edge_run = np.flatnonzero(RATIOS == 2)[0]
    loss[smallest_edge_run] = chinchilla_truth(SIZES, TOKENS)[smallest_edge_run] * 0.88
    resid = np.log(loss / chinchilla_truth(SIZES, TOKENS))
    # The residuals alone show an edge ...
    assert undertrained_cutoff(SIZES, TOKENS, resid, np.ones(SIZES.size), ON_FIT) == 4.0
    law = AutoLaw(form_error_floor=0).fit(SIZES, TOKENS, loss)
    assert law.min_tokens_per_param_ is None and law.excluded_ == 0  # ... the refits do not
    assert not any("tokens per parameter are left out" in w for w in law.warnings_)


@pytest.mark.parametrize("truth", [chinchilla_truth, farseer_truth])
def test_autolaw_leaves_out_nothing_where_a_form_describes_every_run(truth):
    # On Farseer's surface Chinchilla's form misses the low ratios by 5-15%, because it is
    # the wrong form; Farseer fits them, so they are not an edge.
    law = AutoLaw().fit(SIZES, TOKENS, _noisy(truth(SIZES, TOKENS), 3))
    assert law.min_tokens_per_param_ is None and law.excluded_ == 0


def test_a_given_cutoff_is_applied_and_bad_ones_get_one_clear_error():
    loss = _noisy(chinchilla_truth(SIZES, TOKENS), 4)
    law = AutoLaw(min_tokens_per_param=10).fit(SIZES, TOKENS, loss)
    assert law.min_tokens_per_param_ == 10.0 and law.excluded_ == 18
    for bad in (0, -1, float("nan"), "some", True):
        with pytest.raises(FitError, match="min_tokens_per_param: expected"):
            AutoLaw(min_tokens_per_param=bad).fit(SIZES, TOKENS, loss)
    with pytest.raises(FitError, match="min_tokens_per_param 1e\\+03: leaves 0 runs"):
        AutoLaw(min_tokens_per_param=1000).fit(SIZES, TOKENS, loss)
