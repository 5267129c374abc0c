"""Checkpoints of runs whose experiment is on S3 (a moto server on 127.0.0.1).

DeepSpeed saves into local staging directories; the store holds the checkpoints. A stand-in
engine shows which files `restore` fetches for which rank; real runs (1 rank, then 2 ranks
under ZeRO-2 with a WSD branch) show a run resuming and branching from the bucket alone.
"""

from __future__ import annotations

import math
import shutil
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from _ranks import Job, run_jobs

import tests.storage.conftest as storage_fixtures
from storage import checkpoints as stored
from storage.store import Store
from tests.specs import tiny_spec, wsd_parent_spec
from workers import checkpoint
from workers.checkpoint import CheckpointError
from workers.spec import LrSchedule, RunSpec
from workers.train import train

s3_endpoint = storage_fixtures.s3_endpoint  # the session's moto server on 127.0.0.1


@pytest.fixture
def s3_uri(s3_endpoint, tmp_path, monkeypatch):
    """A fresh experiment on S3; its local staging goes under this test's tmp_path."""
    monkeypatch.setenv(stored.STAGING_ENV, str(tmp_path / "staging"))
    prefix = uuid.uuid4().hex[:12]
    return (
        f"s3://{storage_fixtures.BUCKET}/{prefix}/exp?endpoint_override={s3_endpoint}&scheme=http"
    )


def _remote_files(store: Store, rel: str) -> dict[str, int]:
    base = f"{store.root}/{rel}"
    infos = store.fs.get_file_info(pafs.FileSelector(base, recursive=True))
    return {i.path[len(base) + 1 :]: i.size for i in infos if i.type == pafs.FileType.File}


# -- which files restore fetches (a stand-in engine, no training) -----------------------------

PARENT = wsd_parent_spec()
BRANCH = PARENT.wsd_branch(at_step=20, decay_steps=5)
ZERO2_FILES = {
    "mp_rank_00_model_states.pt": 0,  # name: the rank that writes it
    "zero_pp_rank_0_mp_rank_00_optim_states.pt": 0,
    "zero_pp_rank_1_mp_rank_00_optim_states.pt": 1,
}


class _Engine:
    """Records which checkpoint it is asked to load, and the files it finds there."""

    def __init__(self, step: int):
        self.step = step
        self.loaded: list[tuple[str, dict[str, bytes]]] = []

    def load_checkpoint(self, ckpt_dir, tag):
        found = {p.name: p.read_bytes() for p in Path(ckpt_dir, tag).iterdir()}
        self.loaded.append((tag, found))
        return f"{ckpt_dir}/{tag}", {"step": self.step}


def _fake_remote_checkpoint(
    store: Store, spec: RunSpec, step: int, tmp_path: Path, *, commit: bool = True, **changes
):
    """ZeRO-2's files for 2 ranks in the bucket and, if `commit`, the tag's record."""
    name = checkpoint.tag(step)
    local = tmp_path / "fake" / spec.run_id / name
    local.mkdir(parents=True)
    for file in ZERO2_FILES:
        (local / file).write_bytes(file.encode())
    sent = stored.upload_dir(store, str(local), stored.tag_rel(spec.run_id, name))
    files = {path: {"bytes": size, "rank": ZERO2_FILES[path]} for path, size in sent.items()}
    meta = {"run_id": spec.run_id, "step": step, **checkpoint._layout(spec), "files": files}
    if commit:
        stored.write_meta(store, spec.run_id, name, {**meta, **changes})


@pytest.mark.parametrize("rank", [0, 1])
def test_branch_from_an_s3_parent_fetches_the_shared_files_and_its_own_partition(
    s3_uri, tmp_path, rank
):
    store = Store(s3_uri)
    _fake_remote_checkpoint(store, PARENT, 20, tmp_path)
    engine = _Engine(step=20)
    assert checkpoint.restore(engine, BRANCH, store, rank=rank)[0] == 20
    [(name, found)] = engine.loaded
    assert name == "step000000020"
    mine = f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
    assert found == {f: f.encode() for f in ("mp_rank_00_model_states.pt", mine)}
    # Loaded, the staged copy is gone again.
    assert not list(Path(stored.staging_dir(store, BRANCH.run_id)).rglob("*.pt"))


def test_run_with_its_own_s3_checkpoint_resumes_from_the_one_latest_names(s3_uri, tmp_path):
    store = Store(s3_uri)
    _fake_remote_checkpoint(store, PARENT, 20, tmp_path)
    _fake_remote_checkpoint(store, BRANCH, 23, tmp_path)
    _fake_remote_checkpoint(store, BRANCH, 24, tmp_path, commit=False)  # a failed save
    stored.write_latest(store, BRANCH.run_id, "step000000023")
    engine = _Engine(step=23)
    assert checkpoint.restore(engine, BRANCH, store, rank=0)[0] == 23
    assert [name for name, _ in engine.loaded] == ["step000000023"]


def test_branch_without_the_parents_s3_checkpoint_fails_clearly(s3_uri):
    with pytest.raises(CheckpointError, match=f"checkpoints/{PARENT.run_id}/step000000020 holds"):
        checkpoint.restore(_Engine(0), BRANCH, Store(s3_uri), rank=0)


def test_branch_refuses_an_s3_parent_of_another_layout(s3_uri, tmp_path):
    store = Store(s3_uri)
    _fake_remote_checkpoint(store, PARENT, 20, tmp_path, zero_stage=3)
    engine = _Engine(0)
    with pytest.raises(CheckpointError, match="zero_stage 3 vs 2"):
        checkpoint.restore(engine, BRANCH, store, rank=0)
    assert engine.loaded == []


def test_latest_naming_a_checkpoint_without_its_record_fails_clearly(s3_uri):
    store = Store(s3_uri)
    stored.write_latest(store, PARENT.run_id, "step000000010")
    with pytest.raises(CheckpointError, match=f"run {PARENT.run_id}: `latest` names"):
        checkpoint.restore(_Engine(0), PARENT, store, rank=0)


# -- real runs ------------------------------------------------------------------------------

SINGLE = tiny_spec(tokens=16 * 64 * 40, checkpoint_every_steps=10)


@pytest.mark.slow
def test_single_rank_run_on_s3_resumes_from_the_bucket_after_a_failed_upload(s3_uri, monkeypatch):
    store = Store(s3_uri)
    real_copy = stored._copy_to_object_store

    def upload_dies_at_step_30(src_fs, src, dst_fs, dst):
        if "/step000000030/" in dst:
            raise OSError("connection reset by peer")
        return real_copy(src_fs, src, dst_fs, dst)

    first: dict[int, float] = {}
    expected = f"run {SINGLE.run_id}: uploading checkpoint step000000030 failed.*connection reset"
    with monkeypatch.context() as patch, pytest.raises(CheckpointError, match=expected) as failed:
        patch.setattr(stored, "_copy_to_object_store", upload_dies_at_step_30)
        train(
            SINGLE,
            store,
            threads=1,
            on_log=lambda row: first.__setitem__(row["step"], row["loss"]),
        )
    assert f"checkpoints/{SINGLE.run_id}/step000000030/" in str(failed.value)
    assert sorted(first) == list(range(1, 31))
    # The failed save left `latest` on step 20, and step 10 pruned.
    assert stored.read_latest(store, SINGLE.run_id) == "step000000020"
    assert "step000000010" not in stored.list_tags(store, SINGLE.run_id)

    # A new attempt on a node without the staging directory: the bucket is all there is.
    shutil.rmtree(stored.staging_dir(store, SINGLE.run_id))
    outcome = train(SINGLE, store, attempt=1, threads=1)
    assert outcome.status == "finished" and outcome.steps == 40
    rows = store.metrics([SINGLE.run_id], columns=["step", "attempt", "loss"]).to_pylist()
    resumed = [r for r in rows if r["attempt"] == 1]
    assert [r["step"] for r in resumed] == list(range(21, 41))
    for row in resumed[:10]:  # steps 21-30 again, from step 20's weights and optimizer
        assert row["loss"] == pytest.approx(first[row["step"]], abs=1e-5), row["step"]
    assert resumed[-1]["loss"] < first[1] - 0.5

    assert stored.list_tags(store, SINGLE.run_id) == ["step000000040"]
    assert stored.read_latest(store, SINGLE.run_id) == "step000000040"
    files = _remote_files(store, stored.tag_rel(SINGLE.run_id, "step000000040"))
    meta = stored.read_meta(store, SINGLE.run_id, "step000000040")
    assert set(files) == {"mp_rank_00_model_states.pt", "orch_meta.json"}
    assert meta["files"] == {
        "mp_rank_00_model_states.pt": {"bytes": files["mp_rank_00_model_states.pt"], "rank": 0}
    }
    # Staging holds no checkpoint once it is uploaded (or loaded).
    staged = Path(stored.staging_dir(store, SINGLE.run_id))
    assert not list(staged.rglob("step*"))


# WSD parent on 2 ranks under ZeRO-2: 16 steps, checkpoints kept at 8 and 16; a branch at 8.
WSD = tiny_spec(
    tokens=16 * 64 * 16,
    micro_batch=4,
    world_size=2,
    zero_stage=2,
    schedule=LrSchedule(kind="wsd", warmup_frac=0.1, cooldown_frac=0.25, decay_shape="1-sqrt"),
    checkpoint_every_steps=8,
    keep_checkpoints=True,
)
WSD_BRANCH = WSD.wsd_branch(at_step=8, decay_steps=4)


@pytest.mark.slow
def test_two_rank_zero2_run_on_s3_uploads_each_file_once_and_branches_from_the_bucket(s3_uri):
    run_jobs([Job(WSD, s3_uri), Job(WSD_BRANCH, s3_uri)])
    store = Store(s3_uri)

    assert stored.list_tags(store, WSD.run_id) == ["step000000008", "step000000016"]
    assert stored.read_latest(store, WSD.run_id) == "step000000016"
    for name in ("step000000008", "step000000016"):
        files = _remote_files(store, stored.tag_rel(WSD.run_id, name))
        assert set(files) == {*ZERO2_FILES, "orch_meta.json"}
        meta = stored.read_meta(store, WSD.run_id, name)
        # Rank 0 sent the model states and its partition, rank 1 its own partition.
        assert meta["files"] == {
            f: {"bytes": files[f], "rank": rank} for f, rank in ZERO2_FILES.items()
        }

    curves = {
        spec.run_id: {
            r["step"]: r
            for r in store.metrics([spec.run_id], columns=["step", "loss", "lr"]).to_pylist()
        }
        for spec in (WSD, WSD_BRANCH)
    }
    parent, branch = curves[WSD.run_id], curves[WSD_BRANCH.run_id]
    assert sorted(branch) == [9, 10, 11, 12]
    # The first branch step runs the parent's step-8 weights on the parent's step-9 batch.
    assert branch[9]["loss"] == pytest.approx(parent[9]["loss"], abs=1e-6)
    assert branch[12]["lr"] == pytest.approx(WSD.schedule.peak_lr * 0.1)
    assert math.isfinite(store.run_summary(WSD_BRANCH.run_id)["eval_loss"])
    assert stored.read_latest(store, WSD_BRANCH.run_id) == "step000000012"
