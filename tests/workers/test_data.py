"""Data sources: deterministic per (seed, rank, step), held-out splits, the Markov floor."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers.data import ByteSource, DataError, MarkovSource, _stationary, open_source
from workers.spec import DataSpec

SYNTHETIC = DataSpec(source="synthetic", markov_alpha=0.3)


def _same(a, b) -> bool:
    return all(bool((x == y).all()) for x, y in zip(a, b, strict=True))


def test_byte_batches_are_a_function_of_seed_rank_and_step():
    src = ByteSource(DataSpec(), seq_len=32)
    a = src.batch(seed=0, rank=0, step=5, micro=0, size=4)[0]
    assert (a == src.batch(seed=0, rank=0, step=5, micro=0, size=4)[0]).all()
    assert not (a == src.batch(seed=0, rank=1, step=5, micro=0, size=4)[0]).all()
    x, y = src.batch(seed=0, rank=0, step=0, micro=0, size=2)
    assert (x[:, 1:] == y[:, :-1]).all()  # targets are inputs shifted by one byte
    assert src.held_out.size > 0.01 * src.train.size


def test_stationary_distribution_of_a_two_state_chain():
    # pi P = pi for P = [[0.9, 0.1], [0.5, 0.5]]: pi = (5/6, 1/6).
    pi = _stationary(np.array([[0.9, 0.1], [0.5, 0.5]]))
    assert pi == pytest.approx([5 / 6, 1 / 6])


def test_markov_entropy_rate_matches_the_loss_of_the_chain_on_its_samples():
    src = MarkovSource(SYNTHETIC, seq_len=64, vocab=16)
    sample = [src.batch(seed=1, rank=0, step=s, micro=0, size=64) for s in range(16)]
    assert 0.5 < src.entropy_rate < np.log(16)
    # 64K transitions: the sample mean of -ln P is within ~4 standard errors (~0.01).
    assert src.chain_loss(sample) == pytest.approx(src.entropy_rate, abs=0.03)
    # The empirical next-token frequencies after token 0 are the chain's row 0.
    x = np.concatenate([b[0].numpy().ravel() for b in sample])
    y = np.concatenate([b[1].numpy().ravel() for b in sample])
    after0 = np.bincount(y[x == 0], minlength=16) / (x == 0).sum()
    assert np.abs(after0 - src.transitions[0]).max() < 0.05


def test_markov_batches_are_deterministic_and_held_out_is_a_separate_stream():
    a, b = (MarkovSource(SYNTHETIC, seq_len=32, vocab=16) for _ in range(2))
    assert np.array_equal(a.transitions, b.transitions)
    assert _same(
        a.batch(seed=0, rank=1, step=3, micro=1, size=8),
        b.batch(seed=0, rank=1, step=3, micro=1, size=8),
    )
    assert not _same(
        a.batch(seed=0, rank=0, step=3, micro=1, size=8),
        a.batch(seed=1, rank=0, step=3, micro=1, size=8),
    )
    ev = a.eval_batches(n_batches=2, size=8)
    assert _same(ev[0], b.eval_batches(n_batches=2, size=8)[0])
    assert not _same(ev[0], a.batch(seed=0, rank=0, step=0, micro=0, size=8))
    other_chain = MarkovSource(DataSpec(source="synthetic", markov_seed=1), seq_len=32, vocab=16)
    assert not np.array_equal(a.transitions, other_chain.transitions)


@pytest.fixture
def shards(tmp_path):
    """Three shards of consecutive ids, each in its own range, one per format."""
    np.save(tmp_path / "a.npy", np.arange(0, 1000, dtype=np.uint16))
    np.arange(10_000, 11_000, dtype=np.uint32).tofile(tmp_path / "b.bin")
    docs = [list(range(20_000 + 100 * i, 20_100 + 100 * i)) for i in range(10)]
    pq.write_table(pa.table({"ids": docs}), tmp_path / "c.parquet")
    return tmp_path


def _spec(root) -> DataSpec:
    return DataSpec(
        source="tokens", root=str(root), eval_frac=0.1, token_dtype="uint32", column="ids"
    )


def test_token_windows_stay_inside_one_shard_and_out_of_its_held_out_tail(shards):
    src = open_source(_spec(shards), seq_len=16, vocab=30_000)
    for step in range(50):
        x, y = src.batch(seed=0, rank=0, step=step, micro=0, size=8)
        w = np.concatenate([x.numpy(), y.numpy()[:, -1:]], axis=1)
        assert (np.diff(w, axis=1) == 1).all()  # consecutive ids: no shard boundary crossed
        assert ((w % 10_000) < 900).all()  # the last 10% of each shard is held out
    held = np.concatenate([x.numpy() for x, _ in src.eval_batches(n_batches=4, size=8)])
    assert ((held % 10_000) >= 900).all()
    assert {int(v) // 10_000 for v in held.ravel()} == {0, 1, 2}  # every shard's tail


def test_token_batches_are_deterministic(shards):
    a, b = (open_source(_spec(shards), seq_len=16, vocab=30_000) for _ in range(2))
    assert _same(
        a.batch(seed=3, rank=1, step=7, micro=0, size=4),
        b.batch(seed=3, rank=1, step=7, micro=0, size=4),
    )


def test_token_ids_beyond_the_vocab_are_refused(shards):
    src = open_source(_spec(shards), seq_len=16, vocab=1000)
    with pytest.raises(DataError, match="outside the model's vocab"):
        for step in range(20):
            src.batch(seed=0, rank=0, step=step, micro=0, size=8)


def test_missing_token_shards_are_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no token shards"):
        open_source(_spec(tmp_path), seq_len=16, vocab=100)


MARKER = 4_000  # a token id only the held-out data holds


def _train_ids(src, steps: int = 60) -> set[int]:
    seen: set[int] = set()
    for step in range(steps):
        x, y = src.batch(seed=0, rank=step % 2, step=step, micro=0, size=8)
        seen |= set(np.unique(x.numpy())) | set(np.unique(y.numpy()))
    return seen


def _eval_ids(src) -> set[int]:
    return {int(v) for x, y in src.eval_batches(n_batches=4, size=8) for v in np.unique(x)}


def test_a_nanogpt_pair_trains_on_train_bin_and_evaluates_on_val_bin_only(tmp_path):
    np.arange(0, 3000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.full(500, MARKER, dtype=np.uint16).tofile(tmp_path / "val.bin")
    src = open_source(DataSpec(source="tokens", root=str(tmp_path)), seq_len=16, vocab=5000)
    assert MARKER not in _train_ids(src)
    assert max(_train_ids(src)) > 2900  # train.bin's tail is trained on: nothing cut off it
    assert _eval_ids(src) == {MARKER}


def test_separate_validation_shards_never_reach_training(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "heldout").mkdir()
    for i in range(3):
        np.save(tmp_path / "train" / f"part{i}.npy", np.arange(1000 * i, 1000 * i + 900))
    np.save(tmp_path / "heldout" / "x.npy", np.full(300, MARKER, dtype=np.uint16))
    spec = DataSpec(
        source="tokens", root=str(tmp_path / "train"), eval_root=str(tmp_path / "heldout")
    )
    src = open_source(spec, seq_len=16, vocab=5000)
    assert MARKER not in _train_ids(src) and _eval_ids(src) == {MARKER}


def test_headerless_npy_memmaps_as_olmo_writes_them_are_read_with_their_dtype(tmp_path):
    np.arange(70_000, 72_000, dtype=np.uint32).tofile(tmp_path / "part-00.npy")  # no header
    spec = DataSpec(source="tokens", root=str(tmp_path), token_dtype="uint32", eval_frac=0.1)
    x, y = open_source(spec, seq_len=16, vocab=80_000).batch(
        seed=0, rank=0, step=0, micro=0, size=4
    )
    assert (np.diff(x.numpy(), axis=1) == 1).all() and int(x.min()) >= 70_000


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: (p / "a.bin").write_bytes(b""), "a.bin: empty token shard"),
        (lambda p: (p / "a.bin").write_bytes(b"\x01\x02\x03"), "is not a whole number of uint16"),
        (lambda p: np.zeros(5, np.uint8).tofile(p / "a.npy"), "a.npy: 5 bytes is not a whole"),
        (lambda p: np.save(p / "a.npy", np.zeros(64, np.float32)), "expected a 1-D array of token"),
        (
            lambda p: pq.write_table(pa.table({"text": ["a"]}), p / "a.parquet"),
            "cannot read token column 'tokens'",
        ),
    ],
)
def test_corrupt_empty_and_wrong_dtype_shards_name_the_file(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DataError, match=message):
        open_source(DataSpec(source="tokens", root=str(tmp_path)), seq_len=4, vocab=100)


def test_a_corpus_that_is_all_validation_is_refused(tmp_path):
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "val.bin")
    spec = DataSpec(source="tokens", root=str(tmp_path), eval_root=str(tmp_path / "val.bin"))
    with pytest.raises(DataError, match="every shard is held out"):
        open_source(spec, seq_len=4, vocab=100)


def test_a_corpus_changed_since_the_plan_is_refused_naming_its_root(tmp_path):
    from workers.data_hash import content_hash

    np.arange(0, 3000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(0, 500, dtype=np.uint16).tofile(tmp_path / "val.bin")
    spec = DataSpec(source="tokens", root=str(tmp_path), content_hash=content_hash(tmp_path))
    open_source(spec, seq_len=16, vocab=5000)  # as planned: accepted
    np.full(500, MARKER, dtype=np.uint16).tofile(tmp_path / "val.new")
    (tmp_path / "val.new").replace(tmp_path / "val.bin")
    with pytest.raises(DataError, match=f"token data at {tmp_path} changed since the plan"):
        open_source(spec, seq_len=16, vocab=5000)


def test_bytes_per_token_is_one_for_bytes_and_unknown_without_text(tmp_path):
    np.arange(0, 3000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    assert ByteSource(DataSpec(), seq_len=32).bytes_per_token == 1.0
    assert MarkovSource(SYNTHETIC, seq_len=8, vocab=16).bytes_per_token is None
    tokens = DataSpec(source="tokens", root=str(tmp_path))
    assert open_source(tokens, seq_len=16, vocab=5000).bytes_per_token is None


def test_each_rank_draws_its_own_windows(shards):
    # Each rank has its own stream, keyed by (seed, rank, step, micro): two ranks share a
    # window no more often than two draws of one rank (1 / n_windows a pair), where ranks
    # drawing alike would share every one.
    src = open_source(_spec(shards), seq_len=16, vocab=30_000)
    n_windows = src._train.n_windows
    shared = 0
    for step in range(50):
        a, b = (
            src.batch(seed=0, rank=r, step=step, micro=0, size=8)[0][:, 0].numpy() for r in (0, 1)
        )
        shared += int((a[:, None] == b[None, :]).sum())
    expected = 50 * 8 * 8 / n_windows  # about 1.2
    assert shared <= expected + 5 * expected**0.5 + 1


def test_token_ids_beyond_the_vocab_name_their_shard(tmp_path):
    np.arange(0, 1000, dtype=np.uint16).tofile(tmp_path / "a.bin")
    np.full(1000, 900, dtype=np.uint16).tofile(tmp_path / "b.bin")
    src = open_source(DataSpec(source="tokens", root=str(tmp_path)), seq_len=8, vocab=800)
    with pytest.raises(DataError, match=r"token id 9\d\d in .*/(a|b).bin is outside"):
        for step in range(20):
            src.batch(seed=0, rank=0, step=step, micro=0, size=8)
