"""`data:` in plans: bytes, a synthetic Markov chain, or tokenized shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.planning import PlanError, load_plan
from orchestrator.planning.expand import expand_plan

_PLAN = """\
name: corpus
store: ./exp
model: {{vocab: 512, seq_len: 32}}
grid:
  compute_flops: [1e10]
  sizes:
    - {{n_layer: 2, d_model: 32, n_head: 2}}
train:
  global_batch: 16
  log_every_steps: 5
data:
{data}
"""


def _load(tmp_path: Path, data: str):
    path = tmp_path / "plan.yaml"
    path.write_text(_PLAN.format(data=data))
    return load_plan(path)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A nanoGPT pair of uint16 tokens: the bytes of some text, ids < 256."""
    text = (Path(np.__file__).parent / "__init__.py").read_bytes() * 4
    (tmp_path / "corpus").mkdir()
    np.frombuffer(text, np.uint8).astype(np.uint16).tofile(tmp_path / "corpus" / "train.bin")
    np.frombuffer(text[:4000], np.uint8).astype(np.uint16).tofile(tmp_path / "corpus" / "val.bin")
    return tmp_path / "corpus"


def test_a_tokens_plan_names_its_shards_relative_to_the_plan(tmp_path, corpus):
    plan = _load(tmp_path, "  source: tokens\n  root: corpus\n  token_dtype: uint16")
    (spec,) = expand_plan(plan).specs
    assert spec.data.source == "tokens" and spec.data.root == str(corpus.resolve())


def test_a_synthetic_plan_takes_its_chain(tmp_path):
    plan = _load(tmp_path, "  source: synthetic\n  markov_alpha: 0.2\n  markov_seed: 3")
    data = expand_plan(plan).specs[0].data
    assert (data.source, data.markov_alpha, data.markov_seed) == ("synthetic", 0.2, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("  source: tokens", "data.root: a tokens source needs a root"),
        ("  source: tokens\n  root: nowhere", "data.root: no token shards (.npy, .bin, .parquet)"),
        ("  source: tokens\n  root: s3://b/c", "data.root: token shards are read from a file"),
        ("  source: tokens\n  root: corpus\n  token_dtype: int8", "data.token_dtype: expected"),
        ("  source: tokens\n  root: corpus\n  markov_seed: 1", "data.markov_seed: unknown key"),
        ("  source: synthetic\n  root: corpus", "data.root: unknown key"),
        ("  source: jsonl", "data.source: expected one of bytes, synthetic, tokens"),
    ],
)
def test_bad_data_sections_name_the_file_line_and_key(tmp_path, corpus, data, message):
    with pytest.raises(PlanError, match=r"plan.yaml:1[1-4] data\.") as err:
        _load(tmp_path, data)
    assert message in str(err.value), str(err.value)


@pytest.mark.slow
def test_a_run_of_a_tokens_plan_trains_on_train_bin_and_evaluates_on_val_bin(tmp_path, corpus):
    from storage.store import Store
    from workers.train import train

    plan = _load(tmp_path, "  source: tokens\n  root: corpus")
    (spec,) = expand_plan(plan).specs
    outcome = train(spec, Store(str(tmp_path / "exp")), threads=1)
    assert outcome.status == "finished" and np.isfinite(outcome.eval_loss)
    assert outcome.eval_loss < np.log(512)  # it learned something of the byte statistics
