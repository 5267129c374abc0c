"""The simulated worker's seed noise: cooldown branches share most of their parent's."""

import dataclasses
import math

import numpy as np
import pytest

from tests.specs import wsd_parent_spec
from workers.simulated import TrueLaw, simulated_n_params


def _log_noise(law: TrueLaw, spec) -> float:
    return math.log(law.observed_loss(spec) / law.loss(simulated_n_params(spec), spec.tokens))


def test_branches_of_one_parent_share_its_seed_noise_and_unrelated_runs_do_not():
    law = TrueLaw(noise=0.01)
    parents, first, second = [], [], []
    for seed in range(400):
        parent = dataclasses.replace(wsd_parent_spec(), seed=seed)
        parents.append(_log_noise(law, parent))
        first.append(_log_noise(law, parent.wsd_branch(at_step=10, decay_steps=3)))
        second.append(_log_noise(law, parent.wsd_branch(at_step=20, decay_steps=5)))
    parents, first, second = map(np.array, (parents, first, second))
    # workers/simulated.py: 80% of a branch's noise variance is its parent's trunk.
    assert 0.7 < np.corrcoef(first, second)[0, 1] < 0.9
    assert 0.8 < np.corrcoef(parents, first)[0, 1] < 0.97
    assert 0.008 < np.std(first) < 0.012  # the seed noise keeps its size
    assert abs(np.corrcoef(parents[:-1], parents[1:])[0, 1]) < 0.15  # different seeds


def test_every_truth_family_has_an_optimum_on_its_iso_flop_line():
    from workers.simulated import TRUTHS

    for name, family in TRUTHS.items():
        truth = family.drawn(3)
        opt = truth.optimum(1e21)
        n = np.geomspace(opt["n_opt"] / 3, opt["n_opt"] * 3, 201)
        losses = truth.loss(n, 1e21 / (6 * n))
        assert opt["loss_opt"] <= losses.min() + 1e-9, name  # no size on the line does better
        assert abs(math.log(n[np.argmin(losses)] / opt["n_opt"])) < 0.02, name


def test_the_chinchilla_truths_closed_form_optimum_agrees_with_the_search():
    from workers.simulated import _Truth

    truth = TrueLaw.drawn(7)
    closed, searched = truth.optimum(1e22), _Truth.optimum(truth, 1e22)
    assert searched["n_opt"] == pytest.approx(closed["n_opt"], rel=1e-3)


def test_noise_grows_as_models_shrink_when_asked():
    from workers.simulated import CurvedTruth

    truth = CurvedTruth(noise=0.01, noise_exponent=0.15)
    assert truth.noise_at(1e9) == pytest.approx(0.01)
    assert truth.noise_at(1e7) == pytest.approx(0.01 * 100**0.15)
    assert TrueLaw().noise_at(1e6) == 0.01  # the default truth's noise is flat
