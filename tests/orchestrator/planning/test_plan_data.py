"""`data:` in plans: bytes, a synthetic Markov chain, or tokenized shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.planning import PlanError, load_plan
from orchestrator.planning.expand import expand_plan
from tests.corpora import prepared_corpus

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
        ("  source: tokens\n  root: gs://b/c", "data.root: expected a path or an s3:// prefix"),
        ('  source: tokens\n  root: "a\\0b"', "data.root: a path cannot hold a NUL character"),
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


@pytest.fixture
def parquet_corpus(tmp_path) -> Path:
    """Parquet documents: one list of token ids per row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "docs").mkdir()
    pq.write_table(
        pa.table({"tokens": [list(range(10, 300))] * 8}), tmp_path / "docs" / "d.parquet"
    )
    return tmp_path / "docs"


_DOCS = "  source: tokens\n  root: docs\n"


def test_a_plan_names_the_eod_id_of_its_parquet_documents(tmp_path, parquet_corpus):
    (spec,) = expand_plan(_load(tmp_path, _DOCS + "  eod_id: 3")).specs
    assert spec.data.eod_id == 3
    (plain,) = expand_plan(_load(tmp_path, _DOCS)).specs
    assert plain.data.eod_id == -1 and plain.run_id != spec.run_id


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  eod_id: 512", "data.eod_id: 512 is not a token id below model.vocab (512)"),
        ("  eod_id: -1", "data.eod_id: expected"),
        ("  eod_id: eos", "data.eod_id: expected an integer"),
    ],
)
def test_a_bad_eod_id_names_the_file_line_and_key(tmp_path, parquet_corpus, extra, message):
    with pytest.raises(PlanError, match=r"plan.yaml:14 data\.eod_id") as err:
        _load(tmp_path, _DOCS + extra)
    assert message in str(err.value), str(err.value)


def test_an_eod_id_for_shards_without_documents_is_refused(tmp_path, corpus):
    with pytest.raises(PlanError, match=r"plan.yaml:14 data\.eod_id: .* hold no .parquet shard"):
        _load(tmp_path, "  source: tokens\n  root: corpus\n  eod_id: 3")


@pytest.mark.slow
def test_a_run_of_a_tokens_plan_trains_on_train_bin_and_evaluates_on_val_bin(tmp_path, corpus):
    from storage.store import Store
    from workers.train import train

    plan = _load(tmp_path, "  source: tokens\n  root: corpus")
    (spec,) = expand_plan(plan).specs
    outcome = train(spec, Store(str(tmp_path / "exp")), threads=1)
    assert outcome.status == "finished" and np.isfinite(outcome.eval_loss)
    assert outcome.eval_loss < np.log(512)  # it learned something of the byte statistics


def _run_ids(plan) -> list[str]:
    return [spec.run_id for spec in expand_plan(plan).specs]


def _plan_ids(tmp_path: Path, data: str) -> list[str]:
    ids = _run_ids(_load(tmp_path, data))
    assert ids
    return ids


def test_run_ids_follow_the_content_of_the_corpus(tmp_path, corpus):
    data = "  source: tokens\n  root: corpus"
    plan = _load(tmp_path, data)
    first = _run_ids(plan)
    (spec,) = expand_plan(plan).specs
    assert len(spec.data.content_hash) == 64
    assert _plan_ids(tmp_path, data) == first  # the same corpus: the same runs
    # One byte of val.bin changed, as re-preparing writes it (a new file renamed in place).
    tokens = np.fromfile(corpus / "val.bin", np.uint16)
    tokens[7] += 1
    tokens.tofile(corpus / "val.new")
    (corpus / "val.new").replace(corpus / "val.bin")
    changed = _plan_ids(tmp_path, data)
    assert not set(changed) & set(first)


def test_byte_and_synthetic_plans_carry_no_content_hash(tmp_path):
    for data in ("  source: bytes", "  source: synthetic"):
        (spec,) = expand_plan(_load(tmp_path, data)).specs
        assert spec.data.content_hash == ""


def _prepared(tmp_path: Path) -> Path:
    words = "a plan names a corpus and the runs follow its bytes"
    prepared_corpus(tmp_path, words, docs=40, words_per_doc=30, seed=1, out="prepared")
    return tmp_path / "prepared"


def test_a_prepared_corpus_gives_its_manifest_hash_and_dtype(tmp_path):
    from workers.manifest import read_manifest

    manifest = read_manifest(_prepared(tmp_path))
    (spec,) = expand_plan(_load(tmp_path, "  source: tokens\n  root: prepared")).specs
    assert spec.data.content_hash == manifest.content_hash
    assert spec.data.token_dtype == manifest.dtype == "uint16"
    with pytest.raises(PlanError, match=r"data\.token_dtype: .* was prepared as uint16"):
        _load(tmp_path, "  source: tokens\n  root: prepared\n  token_dtype: uint32")


def test_a_prepared_corpus_that_disagrees_with_its_manifest_is_a_plan_error(tmp_path):
    root = _prepared(tmp_path)
    np.arange(10, dtype=np.uint16).tofile(root / "stray.bin")
    with pytest.raises(PlanError, match=r"plan.yaml:1[1-4] data\.root: .*does not list"):
        _load(tmp_path, "  source: tokens\n  root: prepared")


def test_the_fit_loss_is_nats_per_token_unless_the_plan_says_bits_per_byte(tmp_path):
    assert _load(tmp_path, "  source: bytes").fit_loss == "nats_per_token"
    plan = _load(tmp_path, "  source: bytes\nfit: {loss: bits_per_byte}")
    assert plan.fit_loss == "bits_per_byte"  # a byte a token
    _prepared(tmp_path)
    plan = _load(tmp_path, "  source: tokens\n  root: prepared\nfit: {loss: bits_per_byte}")
    assert plan.fit_loss == "bits_per_byte"  # the manifest says its bytes per token


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("  source: synthetic", "synthetic data has none"),
        ("  source: tokens\n  root: corpus", "corpus has none"),
    ],
)
def test_bits_per_byte_needs_data_that_knows_its_bytes_per_token(tmp_path, corpus, data, message):
    with pytest.raises(PlanError, match=r"plan.yaml:1[3-4] fit\.loss: bits_per_byte needs") as err:
        _load(tmp_path, f"{data}\nfit: {{loss: bits_per_byte}}")
    assert message in str(err.value)
    with pytest.raises(PlanError, match=r"fit\.loss: expected one of nats_per_token, bits_per"):
        _load(tmp_path, f"{data}\nfit: {{loss: bpb}}")


def test_the_experiments_copy_of_a_plan_names_its_corpus_absolutely(tmp_path, corpus):
    from orchestrator.planning import parse_plan

    plan = _load(tmp_path, "  source: tokens\n  root: corpus  # beside the plan")
    assert f'  root: "{corpus.resolve()}"  # beside the plan\n' in plan.text
    # Read back from the experiment's folder (`orch resume`, `orch fit`): the same runs.
    (tmp_path / "exp" / "corpus").mkdir(parents=True)
    again = parse_plan(plan.text, path=str(tmp_path / "exp" / "corpus" / "plan.yaml"))
    assert _run_ids(again) == _run_ids(plan)
