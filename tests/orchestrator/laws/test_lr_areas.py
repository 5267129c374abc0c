"""S1 and S2 of the annealing law: exact for every schedule kind, both ways of computing them."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.laws.lr_areas import annealing_areas, final_areas, lr_multipliers
from workers import simulated
from workers.schedule import lr_multiplier
from workers.spec import LrSchedule

SCHEDULES = {
    "constant": LrSchedule(kind="constant"),
    "cosine": LrSchedule(kind="cosine"),
    "cosine, no warmup": LrSchedule(kind="cosine", warmup_frac=0.0, min_lr_frac=0.0),
    "wsd linear": LrSchedule(kind="wsd"),
    "wsd cosine": LrSchedule(kind="wsd", decay_shape="cosine"),
    "wsd 1-sqrt": LrSchedule(kind="wsd", decay_shape="1-sqrt", cooldown_frac=0.3),
    "wsd, decay from the start": LrSchedule(kind="wsd", warmup_frac=0.0, cooldown_frac=1.0),
    "wsd, decay inside warmup": LrSchedule(kind="wsd", warmup_frac=0.4, cooldown_frac=0.8),
}


def direct_sum(schedule: LrSchedule, total: int, lam: float):
    """The definitions, one update at a time (lr_areas' module docstring)."""
    s1, s2, m, previous = [0.0], [0.0], 0.0, None
    for step in range(total):
        eta = schedule.peak_lr * lr_multiplier(schedule, step, total)
        m = lam * m + (0.0 if previous is None else max(0.0, previous - eta))
        s1.append(s1[-1] + eta)
        s2.append(s2[-1] + m)
        previous = eta
    return np.array(s1), np.array(s2)


@pytest.mark.parametrize("name", SCHEDULES)
def test_vectorised_multipliers_are_the_workers_schedule_at_every_step(name):
    schedule = SCHEDULES[name]
    for total in (1, 3, 17, 1000):
        expected = [lr_multiplier(schedule, step, total) for step in range(total)]
        np.testing.assert_allclose(
            lr_multipliers(schedule, np.arange(total), total), expected, 0, 1e-15
        )


@pytest.mark.parametrize("name", SCHEDULES)
def test_areas_match_a_direct_sum_for_every_schedule_kind(name):
    schedule = SCHEDULES[name]
    for total, lam in ((1, 0.999), (2, 0.9), (40, 0.99), (2345, 0.999)):
        s1, s2 = direct_sum(schedule, total, lam)
        got1, got2 = annealing_areas(schedule, total, np.arange(total + 1), lam=lam)
        np.testing.assert_allclose(got1, s1, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got2, s2, rtol=1e-10, atol=1e-14)
        ends = final_areas(schedule, [total], lam=lam)  # the closed forms
        assert ends[0][0] == pytest.approx(s1[-1], rel=1e-10)
        assert ends[1][0] == pytest.approx(s2[-1], rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("name", SCHEDULES)
def test_closed_forms_agree_with_summing_every_step_on_long_runs(name):
    schedule = SCHEDULES[name]
    totals = [150_000, 400_003]
    s1, s2 = final_areas(schedule, totals, lam=0.999)
    for i, total in enumerate(totals):
        d1, d2 = annealing_areas(schedule, total, [total], lam=0.999)
        assert s1[i] == pytest.approx(d1[0], rel=1e-10)
        assert s2[i] == pytest.approx(d2[0], rel=1e-9, abs=1e-12)


def test_a_constant_schedule_never_anneals_and_a_cosine_one_anneals_once_warmup_ends():
    s1, s2 = annealing_areas(SCHEDULES["constant"], 1000, np.arange(1001))
    # 50 warmup updates at 1/50 .. 50/50 of the peak, then 950 at the peak (3e-3)
    assert np.all(s2 == 0) and s1[-1] == pytest.approx(3e-3 * (25.5 + 950))
    c1, c2 = annealing_areas(SCHEDULES["cosine"], 1000, np.arange(1001))
    assert np.all(np.diff(c2) >= 0) and c2[50] == 0  # S2 grows only once the lr falls
    assert c1[-1] < s1[-1]  # less area under a decaying learning rate


def test_a_fractional_step_lies_between_its_neighbours():
    schedule = SCHEDULES["wsd linear"]
    s1, s2 = annealing_areas(schedule, 100, [90, 90.5, 91])
    assert s1[1] == pytest.approx((s1[0] + s1[2]) / 2) and s2[0] < s2[1] < s2[2]


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_simulator_sums_the_same_areas_as_the_law(name):
    schedule = SCHEDULES[name]
    total = 777
    sim1, sim2 = simulated.annealing_areas(schedule, total, lam=0.995)
    law1, law2 = annealing_areas(schedule, total, np.arange(total + 1), lam=0.995)
    np.testing.assert_allclose(sim1, law1, rtol=1e-13)
    np.testing.assert_allclose(sim2, law2, rtol=1e-12, atol=1e-15)
