"""The DeepSpeed worker on CPU (gloo, 2 ranks where it matters), with tiny models.

Most multi-rank runs share one pair of spawned rank processes (`pool`): each job
re-initialises DeepSpeed in the same processes, as a reused Ray actor does, which saves
the start-up of a process pair per test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
from _ranks import Job, run_jobs
from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

from storage.store import Store
from tests.specs import TINY_SHAPE, tiny_spec
from tests.waiting import run_child
from workers import checkpoint
from workers.data import MarkovSource
from workers.schedule import lr_multiplier
from workers.spec import DataSpec, LrSchedule, RunSpec, Shape
from workers.train import train

ROOT = Path(__file__).resolve().parents[2]


def _tiny(**overrides) -> RunSpec:
    """tests/specs.py's tiny spec (20 steps of 16 x 64 bytes) on 2 ranks x 2 micro-batches."""
    return tiny_spec(**{"micro_batch": 4, "world_size": 2, **overrides})


ZERO = {stage: _tiny(zero_stage=stage) for stage in (0, 1, 2, 3)}
BF16 = _tiny(precision="bf16", zero_stage=1)
OFFLOAD = _tiny(zero_stage=2, offload_optimizer=True)
ACT_CKPT = _tiny(zero_stage=3, activation_checkpointing=True)
HUGE_LR = _tiny(schedule=LrSchedule(kind="constant", peak_lr=10.0, warmup_frac=0.0))
# WSD parent: 24 steps, decay from step 18; checkpoints kept at 8, 16, 24.
WSD = _tiny(
    tokens=16 * 64 * 24,
    schedule=LrSchedule(kind="wsd", warmup_frac=0.1, cooldown_frac=0.25, decay_shape="1-sqrt"),
    checkpoint_every_steps=8,
    keep_checkpoints=True,
)
WSD_BRANCH = WSD.wsd_branch(at_step=8, decay_steps=4)
KILL_AFTER = 8
RESUMED = dataclasses.replace(ZERO[3], checkpoint_every_steps=KILL_AFTER)  # same run_id


def _curve(store: Store, spec: RunSpec, *columns: str) -> list[dict]:
    return store.metrics([spec.run_id], columns=["step", "attempt", *columns]).to_pylist()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Stores of every multi-rank job, run once; the last job is killed after step 8 and
    then resumed, as attempt 1, through the standalone entry point."""
    root = tmp_path_factory.mktemp("pool")
    uri = {name: str(root / name) for name in ("zero", "bf16", "offload", "act", "diverged")}
    uri |= {"wsd": str(root / "wsd"), "killed": str(root / "killed")}
    jobs = [Job(spec, f"{uri['zero']}{stage}") for stage, spec in ZERO.items()]
    jobs += [
        Job(BF16, uri["bf16"]),
        Job(OFFLOAD, uri["offload"]),
        Job(ACT_CKPT, uri["act"]),
        Job(HUGE_LR, uri["diverged"]),
        Job(WSD, uri["wsd"]),
        Job(WSD_BRANCH, uri["wsd"]),
        Job(RESUMED, uri["killed"], kill_after_step=KILL_AFTER),
    ]
    try:
        run_jobs(jobs)
    except (ProcessExitedException, ProcessRaisedException) as err:
        died = err
    else:
        pytest.fail("the last job was meant to be killed, but it finished")
    latest = Path(Store(uri["killed"]).checkpoint_dir(RESUMED.run_id), "latest")
    killed_as_planned = latest.is_file() and latest.read_text() == checkpoint.tag(KILL_AFTER)
    assert killed_as_planned, f"a job failed before the planned kill: {died}"

    spec_path = root / "resumed.json"
    spec_path.write_text(RESUMED.to_json())
    cli = [sys.executable, "-m", "workers.train", str(spec_path), "--store", uri["killed"]]
    done = run_child([*cli, "--attempt", "1"], cwd=ROOT, timeout_s=600, what="the resumed attempt")
    assert done.returncode == 0, done.stderr[-3000:]
    uri["resumed_outcome"] = done.stdout.strip().splitlines()[-1]
    return uri


@pytest.mark.slow
def test_zero_stages_0_to_3_reach_the_same_losses_in_fp32(pool):
    curves = {s: _curve(Store(f"{pool['zero']}{s}"), spec, "loss") for s, spec in ZERO.items()}
    reference = [row["loss"] for row in curves[0]]
    assert len(reference) == 20 and reference[-1] < reference[0] - 0.5
    for stage in (1, 2, 3):
        losses = [row["loss"] for row in curves[stage]]
        assert max(abs(a / b - 1) for a, b in zip(losses, reference, strict=True)) < 1e-4, stage
    evals = [
        Store(f"{pool['zero']}{s}").run_summary(spec.run_id)["eval_loss"]
        for s, spec in ZERO.items()
    ]
    assert max(evals) / min(evals) - 1 < 1e-4


@pytest.mark.slow
def test_offload_and_activation_checkpointing_leave_the_losses_unchanged(pool):
    reference = [row["loss"] for row in _curve(Store(f"{pool['zero']}3"), ZERO[3], "loss")]
    for name, spec in (("offload", OFFLOAD), ("act", ACT_CKPT)):
        losses = [row["loss"] for row in _curve(Store(pool[name]), spec, "loss")]
        assert max(abs(a / b - 1) for a, b in zip(losses, reference, strict=True)) < 1e-4, name


@pytest.mark.slow
def test_bf16_run_lowers_the_loss_close_to_fp32(pool):
    rows = _curve(Store(pool["bf16"]), BF16, "loss", "grad_norm")
    fp32 = _curve(Store(f"{pool['zero']}1"), ZERO[1], "loss")
    assert len(rows) == 20
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5
    assert abs(rows[-1]["loss"] - fp32[-1]["loss"]) < 0.15  # bf16 rounding, same trajectory
    assert all(math.isfinite(row["grad_norm"]) for row in rows)


@pytest.mark.slow
def test_killed_run_resumes_onto_the_uninterrupted_curve(pool):
    outcome = json.loads(pool["resumed_outcome"])
    assert outcome["status"] == "finished" and outcome["steps"] == 20 and outcome["attempt"] == 1
    columns = ("loss", "eval_loss", "lr", "grad_norm")
    resumed = [r for r in _curve(Store(pool["killed"]), RESUMED, *columns) if r["attempt"] == 1]
    reference = _curve(Store(f"{pool['zero']}3"), ZERO[3], *columns)[KILL_AFTER:]
    assert [r["step"] for r in resumed] == [r["step"] for r in reference] == list(range(9, 21))
    for got, want in zip(resumed, reference, strict=True):
        for column in columns:
            if want[column] is None:
                assert got[column] is None
            else:
                assert abs(got[column] - want[column]) < 1e-5, (got["step"], column)


@pytest.mark.slow
def test_wsd_branch_continues_from_the_parents_checkpoint_step(pool):
    store = Store(pool["wsd"])
    parent = {r["step"]: r for r in _curve(store, WSD, "loss", "lr")}
    branch = _curve(store, WSD_BRANCH, "loss", "lr")
    # The first branch step runs the parent's step-8 weights on the parent's step-8 batch.
    assert [r["step"] for r in branch] == [9, 10, 11, 12]
    assert branch[0]["loss"] == pytest.approx(parent[9]["loss"], abs=1e-6)
    peak = WSD.schedule.peak_lr
    assert parent[9]["lr"] == pytest.approx(peak)  # the parent is still stable at 9
    assert branch[0]["lr"] == pytest.approx(peak * (1 - 0.9 * math.sqrt(1 / 4)))  # 1-sqrt
    assert branch[-1]["lr"] == pytest.approx(peak * 0.1)
    summary = store.run_summary(WSD_BRANCH.run_id)
    assert summary["steps"] == 12 and summary["tokens"] == 12 * WSD.tokens_per_step
    kept = Path(store.checkpoint_dir(WSD.run_id))
    assert {p.name for p in kept.glob("step*")} == {checkpoint.tag(s) for s in (8, 16, 24)}


@pytest.mark.slow
def test_huge_lr_run_ends_diverged_and_keeps_its_good_metrics(pool):
    store = Store(pool["diverged"])
    summary = store.run_summary(HUGE_LR.run_id)
    assert summary["status"] == "diverged"
    rows = _curve(store, HUGE_LR, "loss")
    assert 0 < summary["steps"] < HUGE_LR.steps
    assert [r["step"] for r in rows][-1] == summary["steps"]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert summary["final_loss"] == rows[-1]["loss"]
    assert not Path(store.checkpoint_dir(HUGE_LR.run_id), "latest").exists()


@pytest.mark.slow
def test_model_approaches_the_markov_entropy_rate_and_never_beats_it(tmp_path):
    # 56K params learn a 16-token chain (entropy rate 1.70 nats, uniform 2.77) in 300 steps.
    data = DataSpec(source="synthetic", markov_alpha=0.3)
    spec = RunSpec(
        shape=Shape(n_layer=2, d_model=48, n_head=2, vocab=16, seq_len=32),
        tokens=32 * 32 * 300,
        global_batch=32,
        micro_batch=32,
        data=data,
        schedule=LrSchedule(peak_lr=1e-2),
        eval_every_steps=50,
        eval_batches=16,
        log_every_steps=50,
    )
    store = Store(str(tmp_path / "exp"))
    outcome = train(spec, store, threads=1)
    source = MarkovSource(data, seq_len=32, vocab=16)
    # The chain's own loss on the very held-out windows evaluated: the floor for them.
    floor = source.chain_loss(source.eval_batches(n_batches=16, size=32))
    evals = [r["eval_loss"] for r in _curve(store, spec, "eval_loss") if r["eval_loss"]]
    assert len(evals) == 6
    assert all(loss > floor for loss in evals)
    assert outcome.eval_loss - source.entropy_rate < 0.05  # the stated margin, nats/token
    assert math.log(16) - outcome.eval_loss > 0.9  # most of the learnable gap was learned
    assert outcome.eval_bpb is None  # the chain's tokens stand for no text


@pytest.mark.slow
def test_run_learns_and_resumes_from_its_checkpoint(tmp_path, tiny_spec):
    store = Store(str(tmp_path / "exp"))
    spec = tiny_spec(
        tokens=16 * 64 * 60, log_every_steps=5, checkpoint_every_steps=30, eval_batches=4
    )
    outcome = train(spec, store, threads=1, peak_flops_per_s=1e9)
    assert outcome.status == "finished" and outcome.steps == 60
    columns = ["loss", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_mem_bytes"]
    curve = _curve(store, spec, *columns)
    assert curve[-1]["loss"] < curve[0]["loss"] - 0.5  # bytes: from ~5.5 nats toward ~3
    assert math.isfinite(outcome.eval_loss)
    assert outcome.eval_bpb == pytest.approx(outcome.eval_loss / math.log(2))  # a byte a token
    assert store.run_summary(spec.run_id)["eval_bpb"] == outcome.eval_bpb
    n_params = store.run_summary(spec.run_id)["n_params"]
    for row in curve:
        assert row["mfu"] == pytest.approx(row["tokens_per_s"] * 6 * n_params / 1e9)
        assert row["grad_norm"] > 0 and row["peak_mem_bytes"] > 0
    assert curve[-1]["lr"] == pytest.approx(
        spec.schedule.peak_lr * lr_multiplier(spec.schedule, 59, 60)
    )

    # A second attempt finds the final checkpoint and has nothing left to train.
    again = train(spec, store, attempt=1, threads=1)
    assert again.steps == 60 and again.eval_loss == pytest.approx(outcome.eval_loss)
    assert store.run_summary(spec.run_id)["attempt"] == 1


@pytest.mark.slow
def test_each_rank_of_each_attempt_logs_to_its_own_file(pool):
    """The killed attempt's logs survive the kill; the resumed attempt says where it began."""
    files = Store(pool["killed"]).log_files(RESUMED.run_id)
    assert [Path(f).name for f in files] == [
        "attempt-0.rank0.log",
        "attempt-0.rank1.log",
        "attempt-1.rank0.log",
        "attempt-1.rank1.log",
    ]
    killed = Path(files[0]).read_text()
    assert f"run {RESUMED.run_id} attempt 0: " in killed and "[rank 0]" in killed
    resumed = Path(files[2]).read_text()
    assert f"run {RESUMED.run_id} attempt 1: starting at step {KILL_AFTER}" in resumed
    assert f"run {RESUMED.run_id} attempt 1: finished after 20 steps" in resumed
    assert "INFO DeepSpeed [rank 0]: " in resumed  # DeepSpeed's own records, at INFO
    assert "[rank 1]" in Path(files[3]).read_text()


@pytest.mark.slow
def test_a_run_on_a_prepared_corpus_reports_bits_per_byte_of_its_validation_text(tmp_path):
    from tests.corpora import prepared_corpus
    from workers.manifest import read_manifest

    words = "bits per byte compare losses across tokenizers of one text"
    prepared_corpus(tmp_path, words, docs=60, words_per_doc=50, seed=0, out="corpus", val_frac=0.2)
    manifest = read_manifest(tmp_path / "corpus")
    data = DataSpec(source="tokens", root=str(tmp_path / "corpus"))
    spec = tiny_spec(
        shape=dataclasses.replace(TINY_SHAPE, vocab=manifest.vocab_size, seq_len=32),
        data=data,
        tokens=16 * 32 * 10,
        eval_every_steps=5,
    )
    store = Store(str(tmp_path / "exp"))
    outcome = train(spec, store, threads=1)
    bytes_per_token = manifest.split("val").bytes_per_token
    assert 1 < bytes_per_token < 8  # a BPE token is a few bytes of this text
    assert outcome.eval_bpb == pytest.approx(outcome.eval_loss / math.log(2) / bytes_per_token)
    assert store.run_summary(spec.run_id)["eval_bpb"] == pytest.approx(outcome.eval_bpb)
    evals = [r for r in _curve(store, spec, "eval_loss", "eval_bpb") if r["eval_loss"]]
    assert len(evals) == 2
    for row in evals:
        assert row["eval_bpb"] == pytest.approx(row["eval_loss"] / math.log(2) / bytes_per_token)
