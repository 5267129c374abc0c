"""The simulator's loss curves: where rows fall, what they end at, how their noise moves."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from storage.store import Store
from tests.specs import tiny_spec, wsd_parent_spec
from workers.schedule import lr_multiplier, lr_multipliers
from workers.simulated import (
    AnnealingTruth,
    CurvedTruth,
    FarseerTruth,
    TrueLaw,
    simulate_run,
    simulated_curve,
)
from workers.spec import LrSchedule

TRUTHS = [TrueLaw(), CurvedTruth.drawn(1), FarseerTruth.drawn(2), AnnealingTruth()]
KINDS = ("constant", "cosine", "wsd")


def run(kind: str, *, steps: int = 1000, seed: int = 0, **overrides):
    """A 25K-parameter run of `steps` updates of 1,024 tokens at peak lr 1e-2."""
    base = dict(
        tokens=1024 * steps,
        schedule=LrSchedule(kind=kind, peak_lr=1e-2),
        log_every_steps=10,
        eval_every_steps=50,
        seed=seed,
    )
    return tiny_spec(**{**base, **overrides})


@pytest.mark.parametrize("kind", KINDS + ("wsd 1-sqrt",))
def test_vectorised_schedule_is_the_scalar_one_at_every_step(kind):
    shape = kind.split()[1] if " " in kind else "linear"
    schedule = LrSchedule(kind=kind.split()[0], decay_shape=shape)
    for total in (1, 9, 1000):
        expected = [lr_multiplier(schedule, s, total) for s in range(total)]
        np.testing.assert_allclose(lr_multipliers(schedule, np.arange(total), total), expected)


@pytest.mark.parametrize("truth", TRUTHS, ids=lambda t: type(t).__name__)
@pytest.mark.parametrize("kind", KINDS)
def test_a_curve_ends_with_the_observed_loss_exactly(truth, kind):
    spec = run(kind)
    rows = simulated_curve(spec, truth)
    assert rows[-1]["step"] == spec.steps
    assert rows[-1]["eval_loss"] == truth.observed_loss(spec)
    assert truth.curve(spec)[-1] == pytest.approx(truth.expected_loss(spec), rel=1e-12)


def test_rows_fall_on_logged_and_evaluated_steps_up_to_the_cap():
    spec = run("cosine", steps=995)
    rows = simulated_curve(spec, AnnealingTruth())
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(range(10, 995, 10)) | set(range(50, 995, 50)) | {995})
    evaluated = [r["step"] for r in rows if r["eval_loss"] is not None]
    assert evaluated == [*range(50, 995, 50), 995]
    assert rows[3]["lr"] == pytest.approx(1e-2 * lr_multiplier(spec.schedule, 39, 995))
    capped = simulated_curve(spec, AnnealingTruth(), max_points=30)
    assert len(capped) <= 30 and capped[-1]["step"] == 995 and capped[0]["step"] == 10


def test_a_cooldown_branch_logs_only_after_its_branch_step():
    branch = wsd_parent_spec().wsd_branch(at_step=20, decay_steps=5)
    rows = simulated_curve(branch, TrueLaw())
    assert [r["step"] for r in rows] == [21, 22, 23, 24, 25]


def test_under_the_annealing_truth_a_decayed_run_ends_below_a_constant_one():
    truth = AnnealingTruth()
    losses = {kind: truth.expected_loss(run(kind, steps=3000)) for kind in KINDS}
    assert losses["wsd"] < losses["constant"] and losses["cosine"] < losses["constant"]
    # ...while a final-loss truth ends where its law says, whatever the schedule
    chinchilla = TrueLaw()
    assert len({round(chinchilla.expected_loss(run(k)), 12) for k in KINDS}) == 1


def test_noise_along_a_run_is_one_seed_offset_plus_a_slow_wander():
    truth = AnnealingTruth(noise=0.01)
    offsets, early, lag1 = [], [], []
    for seed in range(60):
        spec = run("cosine", seed=seed, eval_every_steps=10)
        rows = simulated_curve(spec, truth)
        steps = np.array([r["step"] for r in rows])
        log_dev = np.log([r["eval_loss"] for r in rows]) - np.log(truth.curve(spec)[steps])
        seed_offset = math.log(truth.observed_loss(spec) / truth.expected_loss(spec))
        offsets.append(seed_offset)
        wander = log_dev - seed_offset
        assert abs(wander[-1]) < 1e-12  # the last eval loss is the observed loss
        early.append(wander[19])  # at 20% of the run
        lag1.append(np.corrcoef(wander[:-20][:-1], wander[:-20][1:])[0, 1])
    assert 0.007 < np.std(offsets) < 0.013  # the seed noise of observed_loss
    assert 0.002 < np.std(early) < 0.0045  # the wander: 0.3 x the seed noise, and eval noise
    assert np.mean(lag1) > 0.5  # slow: neighbouring rows move together


def test_simulate_run_writes_the_curve_and_summary_or_only_the_summary(tmp_path):
    store = Store(str(tmp_path / "exp"))
    truth = AnnealingTruth()
    spec = run("wsd", steps=200)
    outcome = simulate_run(spec, store, attempt=0, law=truth)
    rows = store.metrics([spec.run_id]).to_pylist()
    assert len(rows) == 20 and rows[-1]["eval_loss"] == outcome["final_loss"]
    assert rows[-1]["tokens"] == 200 * 1024 and rows[-1]["flops"] > 0
    other = dataclasses.replace(spec, seed=1)
    simulate_run(other, store, attempt=0, law=truth, write_curve=False)
    assert store.metrics([other.run_id]).num_rows == 0
    assert store.run_summary(other.run_id)["final_loss"] == truth.observed_loss(other)
