"""The simulated worker's seed noise: cooldown branches share most of their parent's."""

import dataclasses
import math

import numpy as np

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
