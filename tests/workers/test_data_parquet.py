"""Parquet token shards: documents ended by the eod id, read one row group at a time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.specs import tiny_spec
from workers.data import DataError, open_source
from workers.data_hash import list_shards
from workers.spec import DataSpec, SpecError
from workers.token_readers import RowGroupCache, open_shard

EOD = 7
MARKER = 40_000  # a token id only the held-out tail holds


def _docs(n: int, length: int = 100) -> list[list[int]]:
    """Document i holds the consecutive ids 1000 (i + 1) .. 1000 (i + 1) + length - 1."""
    return [list(range(1000 * (i + 1), 1000 * (i + 1) + length)) for i in range(n)]


def _write(path: Path, docs, *, row_group_size: int | None = None, **kw) -> Path:
    pq.write_table(pa.table({"tokens": docs}), path, row_group_size=row_group_size, **kw)
    return path


def _shard(path: Path, *, eod_id: int = EOD, cache: RowGroupCache | None = None):
    (file,) = list_shards(path)
    cache = RowGroupCache() if cache is None else cache
    return open_shard(file, token_dtype="uint16", column="tokens", eod_id=eod_id, cache=cache)


def _stream(docs, eod_id: int = EOD) -> np.ndarray:
    """Each non-empty document followed by the eod id: the layout `orch prepare` writes."""
    return np.array([t for d in docs if d for t in [*d, eod_id]])


def _spec(root: Path, **kw) -> DataSpec:
    return DataSpec(source="tokens", root=str(root), eod_id=EOD, **kw)


def _windows(src, *, steps: int = 40, size: int = 8) -> list[np.ndarray]:
    out = []
    for step in range(steps):
        x, y = src.batch(seed=0, rank=step % 2, step=step, micro=0, size=size)
        out.append(np.concatenate([x.numpy(), y.numpy()[:, -1:]], axis=1))
    return out


def test_the_eod_id_follows_every_document_the_last_of_a_shard_too(tmp_path):
    docs = _docs(5, length=4)
    shard = _shard(_write(tmp_path / "a.parquet", docs))
    stream = shard.read(0, shard.n_tokens)
    assert stream.tolist() == _stream(docs).tolist()
    assert np.flatnonzero(stream == EOD).tolist() == [4, 9, 14, 19, 24]  # after each document
    plain = _shard(tmp_path / "a.parquet", eod_id=-1)  # no eod id: documents run on
    assert plain.read(0, plain.n_tokens).tolist() == [t for d in docs for t in d]


def test_empty_and_null_documents_add_no_eod_id(tmp_path):
    docs = [[1, 2], [], None, [3], []]
    shard = _shard(_write(tmp_path / "a.parquet", docs))
    assert shard.read(0, shard.n_tokens).tolist() == [1, 2, EOD, 3, EOD]


@pytest.mark.parametrize("stats", [True, False])
def test_many_row_groups_read_as_one_stream_and_windows_cross_their_boundaries(tmp_path, stats):
    docs = _docs(40, length=10)  # 11 tokens a document with its eod: groups of 33 tokens
    path = _write(tmp_path / "a.parquet", docs, row_group_size=3, write_statistics=stats)
    cache = RowGroupCache()
    shard = _shard(path, cache=cache)
    assert shard.n_row_groups == 14 and shard.n_tokens == 40 * 11
    # With statistics, opening reads the footer only; without, each group is counted once.
    assert cache.decoded == (0 if stats else 14)
    expected = _stream(docs)
    for start, stop in [(0, 440), (30, 36), (32, 100), (0, 1), (439, 440), (65, 67)]:
        assert shard.read(start, stop).tolist() == expected[start:stop].tolist()


def test_training_windows_are_slices_of_the_stream_and_cross_row_groups(tmp_path):
    docs = _docs(30, length=10)
    _write(tmp_path / "a.parquet", docs, row_group_size=2)  # 22 tokens a group
    src = open_source(_spec(tmp_path, eval_frac=0.1), seq_len=16, vocab=40_000)
    expected = _stream(docs)
    position = {int(t): i for i, t in enumerate(expected) if t != EOD}
    crossing = 0
    for w in np.concatenate(_windows(src)):
        first = next(i for i, t in enumerate(w) if t != EOD)  # locate the window by an id
        start = position[int(w[first])] - first
        assert w.tolist() == expected[start : start + 17].tolist()
        crossing += start // 22 != (start + 16) // 22
    assert crossing > 50  # of 320 windows of 17 tokens over groups of 22: most cross


def test_the_held_out_tail_is_the_last_documents_and_never_reaches_training(tmp_path):
    docs = [*_docs(9, length=100), [MARKER] * 100]  # 1010 tokens; the tail: the last 101
    _write(tmp_path / "a.parquet", docs, row_group_size=4)
    src = open_source(_spec(tmp_path, eval_frac=0.1), seq_len=16, vocab=50_000)
    trained = np.concatenate(_windows(src, steps=120))
    assert MARKER not in trained and EOD in trained
    held = {int(v) for x, _ in src.eval_batches(n_batches=4, size=8) for v in np.unique(x)}
    assert held == {MARKER}


def test_memory_stays_bounded_by_the_row_group_cache_whatever_the_shard_size(tmp_path):
    _write(tmp_path / "a.parquet", _docs(400, length=30), row_group_size=5)  # 80 groups
    src = open_source(_spec(tmp_path, eval_frac=0.05), seq_len=16, vocab=500_000)
    cache = src._cache
    assert cache.decoded == 0  # opened from the footer
    for step in range(30):
        before = cache.decoded
        src.batch(seed=0, rank=0, step=step, micro=0, size=8)
        assert len(cache) <= cache.max_groups
        assert cache.decoded - before <= 2 * 8  # at most two row groups a window
    assert cache.decoded < 30 * 16
    src.eval_batches(n_batches=2, size=8)
    after_eval = cache.decoded
    src.eval_batches(n_batches=2, size=8)  # evaluated again: kept, nothing read
    assert cache.decoded == after_eval


def test_flat_integer_columns_take_no_eod_id(tmp_path):
    pq.write_table(
        pa.table({"tokens": pa.array(range(100, 400), pa.uint16())}), tmp_path / "a.parquet"
    )
    shard = _shard(tmp_path / "a.parquet")
    assert shard.read(0, shard.n_tokens).tolist() == list(range(100, 400))


def test_an_eod_id_outside_the_vocab_is_one_clear_error(tmp_path):
    _write(tmp_path / "a.parquet", _docs(3))
    with pytest.raises(DataError, match=r"data.eod_id 5000 is outside the model's vocab \(5000\)"):
        open_source(
            DataSpec(source="tokens", root=str(tmp_path), eod_id=5000), seq_len=4, vocab=5000
        )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"tokens": [[1.5, 2.0]]}), "column 'tokens' holds list<.*: double>, expected"),
        (pa.table({"tokens": [[1, None, 3]]}), "row group 0 holds a null token id"),
        (pa.table({"text": ["a"]}), "cannot read token column 'tokens': the file has text"),
    ],
)
def test_bad_parquet_shards_name_the_file(tmp_path, table, message):
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=f"bad.parquet: {message}"):
        src = open_source(_spec(tmp_path), seq_len=1, vocab=100)
        src.batch(seed=0, rank=0, step=0, micro=0, size=1)


def test_a_corrupt_parquet_shard_names_the_file(tmp_path):
    path = _write(tmp_path / "a.parquet", _docs(3))
    path.write_bytes(path.read_bytes()[:-20])  # the footer cut off
    with pytest.raises(DataError, match=r"a.parquet: not a readable Parquet file"):
        open_source(_spec(tmp_path), seq_len=4, vocab=5000)


def test_the_eod_id_is_identity_only_when_given():
    tokens = DataSpec(source="tokens", root="/c")
    spec = tiny_spec(data=tokens)
    assert tiny_spec(data=dataclasses.replace(tokens, eod_id=-1)).run_id == spec.run_id
    assert tiny_spec(data=dataclasses.replace(tokens, eod_id=0)).run_id != spec.run_id
    with pytest.raises(SpecError, match="data.eod_id must be a token id"):
        DataSpec(source="bytes", eod_id=3).validate()
    with pytest.raises(SpecError, match="data.eod_id must be a token id"):
        DataSpec(source="tokens", root="/c", eod_id=-2).validate()
