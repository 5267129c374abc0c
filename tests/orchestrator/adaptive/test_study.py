"""The adaptive loop: Study ask/tell/run on simulated truths, its ledger, its resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.adaptive.study import Study, StudyError
from orchestrator.scheduler.execution import run_flops
from orchestrator.scheduler.simulated import SimulatedBackend
from storage.store import Store
from tests.waiting import file_tail, wait_for_exit, wait_until
from workers.simulated import TrueLaw, simulated_n_params
from workers.spec import RunSpec

ROOT = Path(__file__).resolve().parents[3]
TRUTH = TrueLaw()  # Hoffmann et al.'s estimates, 1% seed noise
TARGET_FLOPS = 1e22

PLAN = """\
name: {name}
store: {store}
flops_method: 6nd
budget: {{flops: {budget}, adaptive_share: 0.5}}
seed_grid: {{min_flops: 1e18, max_flops: 4e18, levels: 3, sizes_per_level: 3, size_spread: 16}}
adaptive:
  strategy: {strategy}
  target: {{flops: {target}, quantity: {quantity}, level: 0.9}}
  stop: {{rel_width: {rel_width}, rounds: {rounds}}}
  batch: {batch}
  repeat_seeds: {repeats}
  max_run_flops: 2e19
hardware: {{accelerator: H100-80GB, max_gpus_per_run: 64, mfu: 0.4}}
model: {{vocab: 32000, seq_len: 2048, tied: false}}
train: {train}
backend: {{kind: simulated, flops_per_s: {speed}}}
"""


def _plan(tmp_path: Path, name: str = "s", **kw) -> Path:
    values = dict(
        name=name,
        store=tmp_path / "exp",
        budget="1.5e20",
        strategy="active",
        target=TARGET_FLOPS,
        quantity="both",
        rel_width=0,
        rounds=4,
        batch=3,
        repeats=2,
        speed="1e30",
        train="{hparams: deepseek, precision: bf16}",
    )
    values.update(kw)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(PLAN.format(**values))
    return path


def _simulated(study: Study) -> SimulatedBackend:
    return SimulatedBackend(study.store, law=TRUTH, write_curves=False)


@pytest.mark.slow
def test_active_picks_other_runs_than_the_grid_and_ends_closer_at_no_more_compute(tmp_path):
    errors = {"active": [], "grid": []}
    for i in range(3):  # the first 3 truths of bench/active_vs_grid.py, no selection
        law = TrueLaw.drawn(i)
        true = law.optimum(TARGET_FLOPS)
        history, picks = {}, {}
        for strategy, rounds in (("active", 5), ("grid", 8)):
            path = _plan(
                tmp_path / f"{strategy}{i}", strategy=strategy, rounds=rounds, budget="3e20"
            )
            study = Study.from_plan(path)
            study.run(SimulatedBackend(study.store, law=law, write_curves=False))
            history[strategy] = study.history
            picks[strategy] = {r for rnd in study.rounds[1:] for r in rnd.run_ids}
        assert len(picks["active"] & picks["grid"]) < len(picks["active"]) / 2
        end = history["active"][-1]
        # The grid's estimate once it has spent at least what active spent in all.
        grid_then = next(h for h in history["grid"] if h.spent_flops >= end.spent_flops)
        for name, est in (("active", end), ("grid", grid_then)):
            errors[name].append([abs(math.log(est.values[q][0] / true[q])) for q in true])
    active, grid = np.mean(errors["active"], axis=0), np.mean(errors["grid"], axis=0)
    assert np.all(active < grid), f"mean |log error| (L_opt, N_opt): active {active}, grid {grid}"


def test_isoflop_profiles_follow_the_fitted_optimum(tmp_path):
    study = Study.from_plan(_plan(tmp_path, strategy="isoflop", batch=5))
    study.tell({s.run_id: TRUTH.observed_loss(s) for s in study.ask()})
    state = study.state()
    chosen = study.strategy.propose(state, 5, budget_flops=1e30)
    (level,) = {c.level_flops for c in chosen}
    assert level == max(c.level_flops for c in state.pool)  # nearest to C*: the top level
    centre = math.exp(np.mean([math.log(c.n_params) for c in chosen]))
    fitted = float(study.law.n_opt(level).mean)
    # Re-centred on the fit, not on the plan's prior (20 tokens per parameter).
    prior = math.sqrt(level / 120)
    assert abs(math.log(centre / fitted)) < math.log(1.25) < abs(math.log(centre / prior))
    assert len(chosen) == 5


def test_ledger_never_lets_a_study_spend_past_its_budget(tmp_path):
    study = Study.from_plan(_plan(tmp_path, budget="6e19", batch=8, rounds=50))
    result = study.run(_simulated(study))
    assert result.stop_reason.startswith("budget:")
    assert study.ledger.spent_flops <= 6e19
    assert study.ledger.committed_flops == 0
    spent = sum(row["spent_flops"] for row in Store(study.store.uri).ledger().to_pylist())
    assert spent == pytest.approx(study.ledger.spent_flops)


def test_ask_never_returns_a_run_already_made_or_asked(tmp_path):
    study = Study.from_plan(_plan(tmp_path, strategy="random", rounds=6))
    seen: list[str] = []
    while specs := study.ask():
        ids = [s.run_id for s in specs]
        assert not set(ids) & set(seen)
        seen += ids
        study.tell({s.run_id: TRUTH.loss(_n(s), s.tokens) for s in specs})
    assert len(seen) == len(set(seen)) > len(study.rounds[0].run_ids) + 5 * 3
    assert study.stop_reason is not None and study.ask() == []


def test_study_rebuilt_from_its_store_repeats_the_same_decisions(tmp_path):
    reference = Study.from_plan(_plan(tmp_path / "ref"))
    reference.run(_simulated(reference))

    path = _plan(tmp_path / "again")
    crashed = Study.from_plan(path)
    seed = crashed.ask()
    crashed.tell({s.run_id: TRUTH.observed_loss(s) for s in seed})
    first = crashed.ask()
    crashed.tell({s.run_id: TRUTH.observed_loss(s) for s in first[:1]})  # the driver dies part-way
    rebuilt = Study.from_plan(path)
    assert [s.run_id for s in rebuilt.ask()] == [s.run_id for s in first[1:]]
    rebuilt.run(_simulated(rebuilt))
    assert [r.run_ids for r in rebuilt.rounds] == [r.run_ids for r in reference.rounds]


def test_stop_reason_is_kept_in_the_store(tmp_path):
    study = Study.from_plan(_plan(tmp_path, rel_width=0.1, quantity="loss_opt", rounds=20))
    result = study.run(TRUTH.observed_loss)  # a plain function as the backend
    assert result.stop_reason.startswith("target: 90% interval widths L_opt(1e+22)")
    final = study.estimate()["loss_opt"]
    assert (final.hi - final.lo) / final.mean <= 0.1
    stored = json.loads((tmp_path / "exp" / "s" / "study.json").read_text())
    assert stored["stop"] == result.stop_reason
    again = Study.from_plan(_plan(tmp_path, rel_width=0.1, quantity="loss_opt", rounds=20))
    assert again.stop_reason == result.stop_reason and again.ask() == []


def test_noise_is_measured_from_repeated_seeds(tmp_path):
    noisy = TrueLaw(noise=0.03)
    study = Study.from_plan(_plan(tmp_path, repeats=8))
    study.tell({s.run_id: noisy.observed_loss(s) for s in study.ask()})
    assert 0.5 * 0.03 < study.noise() < 1.6 * 0.03


def test_telling_a_run_never_asked_for_is_refused(tmp_path):
    study = Study.from_plan(_plan(tmp_path))
    with pytest.raises(StudyError, match="not asked for"):
        study.tell({"0123456789abcdef": 2.0})


def test_a_grid_plan_is_a_study_with_zero_adaptive_rounds(tmp_path):
    text = (ROOT / "plans" / "simulated.yaml").read_text()
    path = tmp_path / "grid.yaml"
    path.write_text(text.replace("store: ./experiments", f"store: {tmp_path / 'exp'}"))
    study = Study.from_plan(path)
    seed = study.ask()
    assert seed and study.target is None and study.strategy is None
    study.tell({s.run_id: TRUTH.loss(simulated_n_params(s), s.tokens) for s in seed})
    assert study.ask() == []
    assert len(study.rounds) == 1 and study.rounds[0].strategy == "seed"
    assert study.stop_reason.startswith(f"grid: the plan's {len(seed)} runs have ended")
    assert study.estimate() is None  # no target to estimate
    # A new driver on the stopped grid (`orch resume`) has nothing left to ask for.
    assert Study.from_plan(path).ask() == []


def test_wsd_study_branches_cooldowns_and_books_only_their_decay(tmp_path):
    train = (
        "{hparams: deepseek, precision: bf16, checkpoint_every_steps: 1000, "
        "schedule: {kind: wsd, cooldown_frac: 0.2}}"
    )
    study = Study.from_plan(_plan(tmp_path, train=train, rounds=3))
    study.tell({s.run_id: TRUTH.observed_loss(s) for s in study.ask()})
    finished = set(study.rounds[0].run_ids)
    branches = [c for c in study.state().pool if c.spec.branch_from]
    assert branches and {c.spec.branch_from for c in branches} <= finished
    for c in branches:
        spec = c.spec
        assert c.flops == pytest.approx(
            spec.flops_per_token * (spec.tokens - spec.branch_step * spec.tokens_per_step)
        )
        assert c.flops < 0.5 * spec.flops_per_token * spec.tokens
    study.run(_simulated(study))
    asked = [study.spec(r) for rnd in study.rounds for r in rnd.run_ids]
    assert any(s.branch_from for s in asked)  # cheap per FLOP: active takes some
    assert study.ledger.spent_flops == pytest.approx(sum(run_flops(s) for s in asked))
    # The fit counts a parent and its branches as one lineage, not independent runs.
    groups = study.law.groups_
    assert len(set(groups)) < len(groups) and set(groups) <= {s.run_id for s in asked}


def test_a_summaries_only_study_stores_each_spec_once_and_its_summaries_in_parts(
    tmp_path, monkeypatch
):
    from storage import store as store_module

    writes = []
    real_write = store_module.write_bytes_atomic
    monkeypatch.setattr(
        store_module,
        "write_bytes_atomic",
        lambda fs, path, data, **kw: writes.append(path) or real_write(fs, path, data, **kw),
    )
    study = Study.from_plan(_plan(tmp_path))
    study.run(_simulated(study))
    asked = sorted(r for rnd in study.rounds for r in rnd.run_ids)
    # Stored when its round opened; `prepare` and resume's checks find it, not rewrite it.
    specs = [p.rsplit("/", 2)[-2] for p in writes if p.endswith("/spec.json")]
    assert sorted(specs) == asked
    root = Path(study.store.root)
    assert list(root.glob("runs/*/summary.parquet")) == []
    assert len(list((root / "summaries").glob("*.parquet"))) == 1  # merged at the end
    assert study.store.summary().column("run_id").to_pylist() == asked
    resumed = Study.from_plan(_plan(tmp_path))  # a new driver reads the same runs back
    assert resumed.ask() == [] and resumed.ledger.spent_flops == study.ledger.spent_flops


def test_a_round_of_hundreds_of_runs_is_a_few_files_not_a_few_per_run(tmp_path):
    text = (ROOT / "plans" / "simulated.yaml").read_text()
    for old, new in [
        ("store: ./experiments", f"store: {tmp_path}"),
        ("flops: 5e21", "flops: 1e26"),
        ("adaptive_share: 0.3", "adaptive_share: 0.0"),
        ("levels: 5", "levels: 15"),
        ("sizes_per_level: 7", "sizes_per_level: 20"),
        ("slots: 64", "slots: 100000"),
        ("curves: true", "curves: false"),
    ]:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "many.yaml"
    path.write_text(text)
    study = Study.from_plan(path)
    study.run(poll_s=0)
    asked = sorted(r for rnd in study.rounds for r in rnd.run_ids)
    assert len(asked) >= 256  # a round stored as one spec part (storage/store.py)
    root = Path(study.store.root)
    assert not (root / "runs").exists()  # no spec.json, no summary.parquet per run
    assert len(list((root / "specs").glob("*.parquet"))) == 1
    assert len(list((root / "summaries").glob("*.parquet"))) == 1
    reader = Store(study.store.uri)  # `orch status` and a resume read them back
    assert reader.run_ids() == asked
    assert reader.summary().column("run_id").to_pylist() == asked
    assert all(RunSpec.from_dict(reader.read_spec(r)).run_id == r for r in asked)
    assert Study.from_plan(path).ask() == []


@pytest.mark.slow
def test_sigkilled_study_resumes_with_the_same_decisions(tmp_path):
    reference = Study.from_plan(_plan(tmp_path / "ref"))
    reference.run(_simulated(reference))

    # Runs "take" 0.1-1.5 s here, so the kill lands inside a round.
    path = _plan(tmp_path / "crash", speed="1e19")
    record = tmp_path / "crash" / "exp" / "s" / "study.json"
    script = (
        "from orchestrator.adaptive import Study\n"
        f"Study.from_plan({str(path)!r}).run(poll_s=0.05)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "study.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", script], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    try:
        wait_until(
            lambda: _rounds(record) >= 3,
            timeout_s=300,  # seconds when idle; a bound for a broken study, not a speed
            what="the study to reach its third round",
            seen=lambda: f"{_rounds(record)} rounds in study.json; its log:\n{file_tail(log)}",
            proc=proc,
            interval_s=0.05,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        wait_for_exit(proc, timeout_s=60, what="the SIGKILLed study")
    resumed = Study.from_plan(path)
    assert resumed.stop_reason is None
    resumed.run(_simulated(resumed))
    assert [r.run_ids for r in resumed.rounds] == [r.run_ids for r in reference.rounds]


def _rounds(record: Path) -> int:
    """The rounds a study has recorded (study.json is replaced whole: never half written)."""
    return len(json.loads(record.read_text())["rounds"]) if record.exists() else 0


def _n(spec) -> float:
    from workers.simulated import simulated_n_params

    return simulated_n_params(spec)


def test_a_previous_fit_named_by_the_plan_is_a_prior_on_the_studys_fits(tmp_path):
    from orchestrator.laws import Chinchilla

    n = np.array([1e8, 3e8, 1e9, 3e9, 1e8, 3e8, 1e9, 3e9, 2e8])
    d = np.array([2e9, 6e9, 2e10, 6e10, 2e10, 6e10, 2e9, 6e9, 4e9])
    Chinchilla().fit(n, d, TRUTH.loss(n, d)).record(run_ids=()).save(tmp_path / "prior.json")
    path = _plan(tmp_path)
    text = path.read_text().replace("size_spread: 16}", "size_spread: 16, prior_fit: prior.json}")
    path.write_text(text)
    study = Study.from_plan(path)
    study.tell({s.run_id: TRUTH.observed_loss(s) for s in study.ask()})
    assert study.law.prior_ is not None and study.law.prior_.source == "seed_grid.prior_fit"
    assert any("MAP fit" in w for w in study.law.warnings_)
    # Every seed run is its own lineage: no cooldown branches in this plan.
    assert len(set(study.law.groups_)) == study.law.n_obs_
