"""Early stopping in the adaptive loop (orchestrator/adaptive/early_stop.py): a running
run whose final loss its curve already tells is stopped, its predicted loss kept."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from orchestrator.adaptive.candidates import branch_candidates
from orchestrator.adaptive.early_stop import EarlyStopper
from orchestrator.adaptive.strategies.base import Candidate, unknown
from orchestrator.adaptive.study import Study
from orchestrator.laws import Prediction
from orchestrator.planning.plan import EarlyStop
from orchestrator.scheduler.base import RunState
from orchestrator.scheduler.execution import run_flops, spent_flops
from orchestrator.scheduler.simulated import SimulatedBackend
from storage.store import Store
from workers.simulated import AnnealingTruth, TrueLaw, simulate_run, simulated_n_params
from workers.spec import LrSchedule, RunSpec, Shape

TRUTH = TrueLaw.drawn(0)

PLAN = """\
name: es
store: {store}
flops_method: 6nd
budget: {{flops: 1e21, adaptive_share: 0.9}}
seed_grid: {{min_flops: 1e18, max_flops: 4e18, levels: 3, sizes_per_level: 3, size_spread: 16}}
adaptive:
  strategy: active
  target: {{flops: 1e22, quantity: both, level: 0.9}}
  stop: {{rel_width: 0, rounds: {rounds}}}
  batch: 3
  repeat_seeds: 2
  max_run_flops: 2e19
{early}
hardware: {{accelerator: H100-80GB, max_gpus_per_run: 64, mfu: 0.4}}
model: {{vocab: 32000, seq_len: 2048, tied: false}}
train: {{hparams: deepseek, precision: bf16, eval_every_steps: 250}}
backend: {{kind: simulated}}
"""


def _plan(tmp_path: Path, *, rounds: int = 2, early: str = "") -> Path:
    path = tmp_path / "es.yaml"
    path.write_text(PLAN.format(store=tmp_path / "exp", rounds=rounds, early=early))
    return path


def _backend(study: Study) -> SimulatedBackend:
    """The truth's runs, each lasting 10 looks per 1e18 FLOPs (a clock that ticks once a
    look), so that running runs report partial curves."""
    ticks = itertools.count()
    return SimulatedBackend(study.store, law=TRUTH, flops_per_s=1e17, clock=lambda: next(ticks))


@pytest.fixture(scope="module")
def stopped_study(tmp_path_factory):
    """A seeded study that stops runs off the frontier (and only those: rel_width 0)."""
    tmp_path = tmp_path_factory.mktemp("off-frontier")
    early = "  early_stop: {rel_width: 0, off_frontier: true, margin: 0.02}"
    study = Study.from_plan(_plan(tmp_path, early=early))
    study.run(_backend(study), poll_s=0)
    return study


def test_an_off_frontier_run_of_a_seeded_study_is_stopped(stopped_study):
    study = stopped_study
    predicted = study.record.predicted
    assert predicted
    for run_id, p in predicted.items():
        spec = study.spec(run_id)
        assert p.reason.startswith("off the frontier at ")
        assert p.lo <= p.loss <= p.hi and 0 < p.weight <= 1
        # Truly off the frontier: the truth's final loss of that run is well above the
        # truth's optimum at its compute.
        flops = spec.flops_per_token * spec.tokens
        assert TRUTH.expected_loss(spec) > TRUTH.optimum(flops)["loss_opt"] * 1.02
        # And the prediction was close to what the run would have ended at.
        assert abs(p.loss / TRUTH.observed_loss(spec) - 1) < 0.05
        events = study.store.events(run_id).to_pylist()
        assert [e["state"] for e in events] == ["running", "stopped"]
        assert events[-1]["detail"] == f"stopped early: {p.reason}"


def test_a_stopped_run_s_prediction_is_its_outcome_in_the_study_s_fit(stopped_study):
    study = stopped_study
    law = study.law
    n, d, loss, weights = law.observations_
    for run_id, p in study.record.predicted.items():
        spec = study.spec(run_id)
        (i,) = np.flatnonzero((d == spec.tokens) & np.isclose(loss, p.loss))
        assert weights[i] == p.weight  # at its planned D, with its weight
    assert sum(weights < 1) == len(study.record.predicted)
    # A weight is how much a stopped run is trusted, not how many runs it is: each still
    # counts as one run in the fit's degrees of freedom (no lineages share here).
    assert not law.lineages_.shared
    assert law.dof_ == weights.size - law.theta_.size


def test_a_stopped_study_resumes_without_rerunning_its_stopped_runs(stopped_study):
    study = stopped_study
    again = Study.from_plan(study.plan, store=study.store.uri)
    assert again.ask() == []  # the study had stopped (rounds), nothing left to make
    assert not set(again.record.predicted) & {s.run_id for s in again._pending()}
    # The rebuilt ledger books each stopped run's share of steps, as the loop did.
    assert again.ledger.spent_flops == pytest.approx(study.ledger.spent_flops, rel=1e-12)
    for run_id, p in study.record.predicted.items():
        spec = study.spec(run_id)
        assert study.store.run_summary(run_id)["steps"] == p.step
        assert spent_flops(spec, p.step) < run_flops(spec)
    result = again.run(lambda spec: pytest.fail(f"run {spec.run_id} made again"))
    stopped = [v for v in result.execution.runs if v.state is RunState.STOPPED]
    assert {v.spec.run_id for v in stopped} == set(study.record.predicted)
    assert result.execution.count(RunState.FAILED, RunState.PREEMPTED) == 0


def test_without_early_stopping_every_run_trains_to_its_end(tmp_path):
    study = Study.from_plan(_plan(tmp_path, rounds=1))
    assert study.plan.adaptive.early_stop is None
    result = study.run(_backend(study), poll_s=0)
    assert {v.state for v in result.execution.runs} == {RunState.FINISHED}
    assert study.record.predicted == {}


def _curve_spec(d_model: int, kind: str, **kw) -> RunSpec:
    """A 2-layer GPT trained on 60 tokens per parameter (as bench/curves.py)."""
    n = 2 * (12 * d_model**2 + 2 * d_model) + d_model
    return RunSpec(
        shape=Shape(n_layer=2, d_model=d_model, n_head=2),
        tokens=60 * n,
        global_batch=16,
        micro_batch=16,
        schedule=LrSchedule(kind=kind, peak_lr=1e-2, cooldown_frac=0.2),
        log_every_steps=10,
        eval_every_steps=25,
        **kw,
    )


def test_cooldown_branches_get_predicted_losses_before_they_run(tmp_path):
    truth = AnnealingTruth.drawn(0)
    store = Store(str(tmp_path / "exp"))
    parent = _curve_spec(48, "wsd", checkpoint_every_steps=500, keep_checkpoints=True)
    finished = [_curve_spec(d, k) for d in (16, 32, 64) for k in ("constant", "cosine")]
    for spec in [*finished, parent]:
        store.write_spec(spec.run_id, spec.to_json())
        simulate_run(spec, store, attempt=0, law=truth)
    branches = branch_candidates([(parent, float(simulated_n_params(parent)))])
    assert branches
    rule = EarlyStop()
    stopper = EarlyStopper(rule, store)
    ids = [s.run_id for s in [*finished, parent]]
    pool = stopper.with_predictions(branches, finished=ids)
    for c in pool:
        observed = truth.observed_loss(c.spec)
        assert abs(c.predicted.mean / observed - 1) < 0.02, c.spec.branch_step
        assert c.predicted.lo < c.predicted.mean < c.predicted.hi
    # A strategy may skip those whose outcome is known within the plan's width.
    known = [c for c in pool if c.predicted.hi - c.predicted.lo <= 0.05 * c.predicted.mean]
    assert len(unknown(pool, 0.05)) == len(pool) - len(known)
    assert unknown(pool, 0.0) == list(pool)


def test_a_candidate_with_a_tight_prediction_is_known_and_others_are_not():
    spec = _curve_spec(16, "cosine")
    tight, loose = Prediction(2.0, 1.99, 2.01, 0.9), Prediction(2.0, 1.9, 2.1, 0.9)
    pool = [Candidate(spec, 1.0, 1.0, 1.0, 1.0, predicted=p) for p in (tight, loose, None)]
    assert [c.predicted for c in unknown(pool, 0.02)] == [loose, None]  # tight: 1% wide
    assert [c.predicted for c in unknown(pool, 0.0)] == [tight, loose, None]
