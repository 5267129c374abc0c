"""Where a run starts: its own latest checkpoint, a WSD branch point, or scratch.

DeepSpeed's save/load themselves run in test_train.py; here a stand-in engine records
which checkpoint `restore` asks for.
"""

import json
from pathlib import Path

import pytest

from storage.store import Store
from tests.specs import wsd_parent_spec
from workers import checkpoint
from workers.checkpoint import CheckpointError
from workers.spec import RunSpec

PARENT = wsd_parent_spec()
BRANCH = PARENT.wsd_branch(at_step=20, decay_steps=5)


class _Engine:
    def __init__(self, step: int = 0):
        self.loaded: list[tuple[str, str]] = []
        self.step = step

    def load_checkpoint(self, ckpt_dir, tag):
        self.loaded.append((ckpt_dir, tag))
        return f"{ckpt_dir}/{tag}", {"step": self.step}


def _fake_checkpoint(store: Store, spec: RunSpec, step: int, **meta_changes) -> Path:
    path = Path(store.checkpoint_dir(spec.run_id), checkpoint.tag(step))
    path.mkdir(parents=True)
    meta = {"run_id": spec.run_id, "step": step, **checkpoint._layout(spec), **meta_changes}
    (path / "orch_meta.json").write_text(json.dumps(meta))
    return path


def test_fresh_run_starts_from_scratch(tmp_path):
    engine = _Engine()
    assert checkpoint.restore(engine, PARENT, Store(str(tmp_path))) == (0, {})
    assert engine.loaded == []


def test_branch_starts_at_the_parents_step(tmp_path):
    store = Store(str(tmp_path))
    _fake_checkpoint(store, PARENT, 20)
    engine = _Engine(step=20)
    step, _ = checkpoint.restore(engine, BRANCH, store)
    assert step == 20
    assert engine.loaded == [(store.checkpoint_dir(PARENT.run_id), "step000000020")]


def test_branch_with_its_own_checkpoint_resumes_from_that(tmp_path):
    store = Store(str(tmp_path))
    _fake_checkpoint(store, PARENT, 20)
    own = _fake_checkpoint(store, BRANCH, 23)
    (own.parent / "latest").write_text(own.name)
    engine = _Engine(step=23)
    assert checkpoint.restore(engine, BRANCH, store)[0] == 23
    assert engine.loaded == [(str(own.parent), own.name)]


def test_branch_without_the_parents_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        checkpoint.restore(_Engine(), BRANCH, Store(str(tmp_path)))


@pytest.mark.parametrize("change", [{"world_size": 4}, {"zero_stage": 3}, {"precision": "bf16"}])
def test_branch_refuses_a_parent_of_another_layout(tmp_path, change):
    store = Store(str(tmp_path))
    _fake_checkpoint(store, PARENT, 20, **change)
    engine = _Engine()
    with pytest.raises(CheckpointError, match=next(iter(change))):
        checkpoint.restore(engine, BRANCH, store)
    assert engine.loaded == []
