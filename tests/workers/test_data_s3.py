"""Token shards under an s3:// prefix (a moto server on 127.0.0.1): the same shards, batches,
held-out split and content hash as on disk, read by ranges and row groups."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import tests.storage.conftest as storage_fixtures
from workers.data import DataError, open_source
from workers.data_hash import content_hash
from workers.spec import DataSpec
from workers.token_readers import ParquetShard

s3_endpoint = storage_fixtures.s3_endpoint  # the session's moto server on 127.0.0.1

MARKER = 4_000  # a token id only the held-out data holds


class _Bucket:
    """A fresh prefix of the test bucket: files are written with pyarrow's S3 filesystem."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http")
        self.prefix = f"{storage_fixtures.BUCKET}/{uuid.uuid4().hex[:12]}"

    def uri(self, rel: str = "") -> str:
        path = f"{self.prefix}/{rel}".rstrip("/")
        return f"s3://{path}?endpoint_override={self.endpoint}&scheme=http"

    def upload(self, local: Path, rel: str = "") -> str:
        """Every file under `local` (or `local` itself), under `rel`; returns its URI."""
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        for path in files:
            name = path.name if path == local else path.relative_to(local).as_posix()
            with self.fs.open_output_stream(
                f"{self.prefix}/{rel}/{name}".replace("//", "/")
            ) as out:
                out.write(path.read_bytes())
        return self.uri(rel)


@pytest.fixture
def bucket(s3_endpoint) -> _Bucket:
    return _Bucket(s3_endpoint)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """One shard of each format, in its own id range; the Parquet one in many row groups."""
    root = tmp_path / "corpus"
    (root / "more").mkdir(parents=True)
    np.save(root / "a.npy", np.arange(0, 1000, dtype=np.uint16))  # with a header
    np.arange(10_000, 11_000, dtype=np.uint32).tofile(root / "b.bin")
    np.arange(20_000, 21_000, dtype=np.uint32).tofile(root / "more" / "c.npy")  # headerless
    docs = [list(range(30_000 + 100 * i, 30_090 + 100 * i)) for i in range(12)]
    pq.write_table(pa.table({"ids": docs}), root / "d.parquet", row_group_size=3)
    return root


def _tokens(root: str, **kw) -> DataSpec:
    return DataSpec(
        source="tokens", root=root, eval_frac=0.1, token_dtype="uint32", column="ids", **kw
    )


def _rows(batch) -> np.ndarray:
    x, y = batch
    return np.concatenate([x.numpy(), y.numpy()[:, -1:]], axis=1)


def _train_ids(src, steps: int = 60) -> set[int]:
    seen: set[int] = set()
    for step in range(steps):
        seen |= set(np.unique(_rows(src.batch(seed=0, rank=step % 2, step=step, micro=0, size=8))))
    return seen


def _eval_ids(src) -> set[int]:
    return {int(v) for x, _ in src.eval_batches(n_batches=4, size=8) for v in np.unique(x)}


def test_each_format_on_s3_gives_the_batches_it_gives_on_disk(bucket, corpus):
    uri = bucket.upload(corpus, "corpus")
    spec = _tokens(uri, eod_id=5, content_hash=content_hash(corpus))
    on_disk = open_source(_tokens(str(corpus), eod_id=5), seq_len=16, vocab=40_000)
    on_s3 = open_source(spec, seq_len=16, vocab=40_000)
    for rank in range(3):
        for step in range(10):
            a = on_disk.batch(seed=1, rank=rank, step=step, micro=0, size=8)
            b = on_s3.batch(seed=1, rank=rank, step=step, micro=0, size=8)
            assert np.array_equal(_rows(a), _rows(b))
    disk_eval, s3_eval = (s.eval_batches(n_batches=4, size=8) for s in (on_disk, on_s3))
    assert all(np.array_equal(_rows(a), _rows(b)) for a, b in zip(disk_eval, s3_eval, strict=True))
    assert {v // 10_000 for v in _train_ids(on_s3)} == {0, 1, 2, 3}  # every shard is read
    # The Parquet shard is read by row group, not whole.
    (parquet,) = [s for s, _, _ in on_s3._train.spans if isinstance(s, ParquetShard)]
    assert parquet.n_row_groups == 4 and len(on_s3._cache) <= on_s3._cache.max_groups


def test_the_content_hash_of_an_s3_prefix_is_that_of_the_same_files_on_disk(bucket, corpus):
    uri = bucket.upload(corpus, "corpus")
    assert content_hash(uri) == content_hash(corpus)
    held = bucket.upload(corpus / "b.bin", "held")
    assert content_hash(uri, eval_root=held) == content_hash(corpus, eval_root=corpus / "b.bin")
    assert content_hash(bucket.uri("corpus/b.bin")) == content_hash(corpus / "b.bin")


def test_a_changed_s3_corpus_is_refused(bucket, corpus):
    uri = bucket.upload(corpus, "corpus")
    spec = _tokens(uri, content_hash=content_hash(uri))
    open_source(spec, seq_len=16, vocab=40_000)  # as planned: accepted
    np.arange(10_000, 10_999, dtype=np.uint32).tofile(corpus / "b.bin")  # one token fewer
    bucket.upload(corpus / "b.bin", "corpus")
    with pytest.raises(DataError, match="changed since the plan was made"):
        open_source(spec, seq_len=16, vocab=40_000)


def test_a_nanogpt_pair_on_s3_never_trains_on_val_bin(bucket, tmp_path):
    np.arange(0, 3000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.full(500, MARKER, dtype=np.uint16).tofile(tmp_path / "val.bin")
    src = open_source(
        DataSpec(source="tokens", root=bucket.upload(tmp_path, "pair")), seq_len=16, vocab=5000
    )
    trained = _train_ids(src)
    assert MARKER not in trained and max(trained) > 2900  # train.bin's tail is trained on
    assert _eval_ids(src) == {MARKER}


def test_an_s3_eval_root_never_reaches_training(bucket, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "held").mkdir()
    docs = [list(range(1000 * i, 1000 * i + 500)) for i in range(3)]
    pq.write_table(pa.table({"tokens": docs}), tmp_path / "train" / "part.parquet")
    pq.write_table(pa.table({"tokens": [[MARKER] * 300]}), tmp_path / "held" / "x.parquet")
    spec = DataSpec(
        source="tokens",
        root=bucket.upload(tmp_path / "train", "train"),
        eval_root=bucket.upload(tmp_path / "held", "held"),
    )
    src = open_source(spec, seq_len=16, vocab=5000)
    assert MARKER not in _train_ids(src) and _eval_ids(src) == {MARKER}


def test_an_eval_root_inside_the_s3_root_is_held_out_however_it_is_spelled(bucket, tmp_path):
    np.arange(0, 3000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.full(500, MARKER, dtype=np.uint16).tofile(tmp_path / "heldout.bin")  # not named val
    root = bucket.upload(tmp_path, "inside")
    path = f"{bucket.prefix}/inside/heldout.bin"
    eval_root = f"s3://{path}?scheme=http&endpoint_override={bucket.endpoint}"  # reordered
    src = open_source(
        DataSpec(source="tokens", root=root, eval_root=eval_root), seq_len=16, vocab=5000
    )
    assert MARKER not in _train_ids(src) and _eval_ids(src) == {MARKER}


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("a.bin", b"", "a.bin: empty token shard"),
        ("a.bin", b"\x01\x02\x03", "a.bin: 3 bytes is not a whole number of uint16"),
        ("a.npy", np.zeros(5, np.uint8).tobytes(), "a.npy: 5 bytes is not a whole"),
        ("a.parquet", b"PAR1 not really", "a.parquet: not a readable Parquet file"),
        ("a.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': garbled", "a.npy: cannot read the .npy"),
    ],
)
def test_bad_s3_shards_are_one_error_naming_the_object(bucket, tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    root = bucket.upload(tmp_path / name, "bad")
    with pytest.raises(DataError, match=f"s3://{bucket.prefix}/bad/{message}"):
        open_source(DataSpec(source="tokens", root=root), seq_len=4, vocab=100)


def test_a_float_npy_on_s3_is_refused_naming_the_object(bucket, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(64, np.float32))
    root = bucket.upload(tmp_path / "a.npy", "float")
    with pytest.raises(DataError, match=r"float/a.npy: expected a 1-D array of token ids"):
        open_source(DataSpec(source="tokens", root=root), seq_len=4, vocab=100)


def test_token_ids_past_the_vocab_on_s3_name_the_object(bucket, corpus):
    src = open_source(_tokens(bucket.upload(corpus, "corpus")), seq_len=16, vocab=15_000)
    where = f"s3://{bucket.prefix}/corpus/(more/c.npy|d.parquet)"
    with pytest.raises(DataError, match=rf"token id [23]\d{{4}} in {where} is outside the model's"):
        for step in range(40):
            src.batch(seed=0, rank=0, step=step, micro=0, size=8)


def test_an_empty_s3_prefix_is_a_clear_error(bucket):
    with pytest.raises(DataError, match=f"no token shards under s3://{bucket.prefix}/none"):
        open_source(DataSpec(source="tokens", root=bucket.uri("none")), seq_len=4, vocab=100)


def test_a_prepared_corpus_on_s3_is_identified_by_its_manifest(bucket, tmp_path):

    from tests.corpora import prepared_corpus
    from workers.data_hash import bytes_per_token
    from workers.manifest import ManifestError

    words = "a corpus prepared on disk and uploaded to a bucket as it is"
    out = tmp_path / "out"
    manifest = prepared_corpus(
        tmp_path, words, docs=40, words_per_doc=30, seed=0, out="out", val_frac=0.2
    ).manifest
    uri = bucket.upload(out, "prepared")
    assert content_hash(uri) == manifest.content_hash == content_hash(out)
    assert bytes_per_token(uri) == pytest.approx(bytes_per_token(out))
    spec = DataSpec(source="tokens", root=uri, content_hash=manifest.content_hash)
    src = open_source(spec, seq_len=8, vocab=manifest.vocab_size)
    assert src.bytes_per_token == pytest.approx(manifest.split("val").bytes_per_token)
    with bucket.fs.open_output_stream(f"{bucket.prefix}/prepared/val_00000.bin") as stream:
        stream.write(b"\x00\x00")  # cut short
    with pytest.raises(ManifestError, match=r"prepared/manifest.json: shard val_00000.bin is 2"):
        content_hash(uri)


def test_a_plan_reads_an_s3_root_and_hashes_it_as_on_disk(bucket, corpus, tmp_path):
    from orchestrator.planning import PlanError, load_plan
    from orchestrator.planning.expand import expand_plan

    uri = bucket.upload(corpus, "corpus")
    plan = tmp_path / "plan.yaml"
    text = (
        "name: s3corpus\nstore: ./exp\nmodel: {vocab: 40000, seq_len: 16}\n"
        "grid:\n  compute_flops: [1e10]\n  sizes:\n    - {n_layer: 2, d_model: 32, n_head: 2}\n"
        "train:\n  global_batch: 16\ndata:\n  source: tokens\n  token_dtype: uint32\n"
        "  column: ids\n  eod_id: 5\n  root: {root}\n"
    )
    plan.write_text(text.replace("{root}", f'"{uri}"'))
    (spec,) = expand_plan(load_plan(plan)).specs
    assert spec.data.root == uri and spec.data.eod_id == 5
    assert spec.data.content_hash == content_hash(corpus)
    plan.write_text(text.replace("{root}", f'"{bucket.uri("nothing")}"'))
    with pytest.raises(PlanError, match=r"plan.yaml:15 data\.root: no token shards"):
        load_plan(plan)
    plan.write_text(text.replace("{root}", "gs://bucket/corpus"))
    with pytest.raises(PlanError, match=r"plan.yaml:15 data\.root: expected a path or an s3://"):
        load_plan(plan)
