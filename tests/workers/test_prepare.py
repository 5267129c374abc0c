"""`orch prepare` as a library: text in, shards that decode back to it, resumable, hashed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import workers.prepare as prepare_module
from tests.waiting import wait_for_exit, wait_until
from workers.corpus import PrepareError, is_validation
from workers.manifest import read_manifest
from workers.prepare import prepare
from workers.shards import tokenize_unit
from workers.tokenizer import token_dtype, train_bpe

ROOT = Path(__file__).resolve().parents[2]
WORDS = "the of and to in is was for on that with as by at from his her it an are were".split()


def _text(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, size=n_words))


def _docs(seed: int, n: int, n_words: int = 30) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"doc {seed}.{i}: {_text(rng, n_words)}" for i in range(n)]


def _jsonl(path: Path, texts: list[str], key: str = "text") -> Path:
    path.write_text("".join(json.dumps({key: t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    """A tiny byte-level BPE, trained here on text like the tests' documents."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe(_docs(99, 200), vocab_size=320).save(str(path))
    return path


def _decoded(directory: Path) -> dict[str, list[str]]:
    """Each split's documents, decoded from its shards in name order."""
    from tokenizers import Tokenizer

    m = read_manifest(directory)
    tok = Tokenizer.from_file(str(directory / m.tokenizer))
    out: dict[str, list[str]] = {"train": [], "val": []}
    for shard in m.shards:
        ids = np.fromfile(directory / shard.name, dtype=m.dtype)
        assert ids[-1] == m.eod_id  # every document, the last too, is ended
        ends = np.flatnonzero(ids == m.eod_id)
        starts = np.concatenate([[0], ends[:-1] + 1])
        out[shard.split] += [
            tok.decode(ids[a:b].tolist()) for a, b in zip(starts, ends, strict=True)
        ]
    return out


def _expected(texts: list[str], val_frac: float) -> dict[str, list[str]]:
    return {
        "train": [t for t in texts if not is_validation(t, val_frac)],
        "val": [t for t in texts if is_validation(t, val_frac)],
    }


def test_jsonl_parquet_and_text_files_decode_back_to_their_documents(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    jsonl = _docs(1, 40) + [
        "crlf\r\nand tabs\t, ünïcödé ✓ 日本語",
        'quotes "<|endoftext|>" mid-text',
    ]
    _jsonl(src / "a.jsonl", jsonl)
    rows = _docs(2, 30)
    pq.write_table(pa.table({"text": [*rows, None, ""]}), src / "b.parquet", row_group_size=7)
    (src / "c.txt").write_text("a plain text file\nof two lines\n")
    (src / "d.md").write_text("# a markdown file\n")
    (src / "e.bin").write_bytes(b"\x00\x01 not read: not a known text suffix")
    result = prepare([src], tmp_path / "out", train_bpe_vocab=400, val_frac=0.3, workers=1)
    texts = [*jsonl, *rows, "a plain text file\nof two lines\n", "# a markdown file\n"]
    assert _decoded(tmp_path / "out") == _expected(texts, 0.3)
    m = result.manifest
    assert (m.dtype, m.eod_token, m.eod_id) == ("uint16", "<|endoftext|>", 0)
    assert 300 < m.vocab_size <= 400  # the merges a corpus this small has
    train, val = m.split("train"), m.split("val")
    assert train.documents + val.documents == len(texts) and val.documents > 0
    assert train.source_bytes + val.source_bytes == sum(len(t.encode()) for t in texts)
    tokens = sum((tmp_path / "out" / s.name).stat().st_size // 2 for s in m.shards)
    assert train.tokens + val.tokens == tokens
    assert m.bytes_per_token == pytest.approx((train.source_bytes + val.source_bytes) / tokens)
    assert read_manifest(tmp_path / "out") == m


def test_a_given_tokenizer_is_used_and_copied_into_the_directory(tmp_path, tokenizer_file):
    texts = _docs(3, 50)
    _jsonl(tmp_path / "a.jsonl", texts, key="body")
    result = prepare(
        [tmp_path / "a.jsonl"], tmp_path / "out", tokenizer=tokenizer_file, text_key="body"
    )
    copied = tmp_path / "out" / "tokenizer.json"
    assert copied.read_bytes() == tokenizer_file.read_bytes()
    assert not result.tokenizer_trained and result.manifest.eod_id == 0
    assert _decoded(tmp_path / "out") == _expected(texts, 0.005)


def _wordlevel_tokenizer(path: Path, vocab: int) -> Path:
    """A word-level tokenizer of `vocab` ids, its end-of-document token the last."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    ids = {w: i for i, w in enumerate(WORDS)} | {f"w{i}": i for i in range(len(WORDS), vocab - 1)}
    tok = Tokenizer(models.WordLevel(ids | {"<|endoftext|>": vocab - 1}, unk_token="w30"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(path))
    return path


def test_shards_are_uint16_up_to_65536_ids_and_uint32_beyond(tmp_path):
    assert [token_dtype(v, source="t") for v in (256, 2**16, 2**16 + 1, 2**32)] == [
        "uint16", "uint16", "uint32", "uint32",
    ]  # fmt: skip
    with pytest.raises(PrepareError, match=r"^big\.json: a vocab of 4294967297 token ids"):
        token_dtype(2**32 + 1, source="big.json")
    tok = _wordlevel_tokenizer(tmp_path / "big.json", 70_000)
    (tmp_path / "a.txt").write_text("the of and w69000 w12345")
    m = prepare([tmp_path / "a.txt"], tmp_path / "out", tokenizer=tok, val_frac=0).manifest
    assert (m.dtype, m.vocab_size, m.eod_id) == ("uint32", 70_000, 69_999)
    ids = np.fromfile(tmp_path / "out" / m.shards[0].name, dtype="<u4")
    assert ids.tolist() == [0, 1, 2, 69_000, 12_345, 69_999]


def test_the_validation_split_is_a_deterministic_hash_of_each_documents_text(tmp_path):
    texts = _docs(4, 2000, n_words=3)
    chosen = [is_validation(t, 0.1) for t in texts]
    assert chosen == [is_validation(t, 0.1) for t in texts]
    assert 0.07 < np.mean(chosen) < 0.13  # 2000 draws: ~4 standard errors either side
    assert not any(is_validation(t, 0.0) for t in texts)
    # A duplicated document lands in one split both times: it cannot leak into training.
    _jsonl(tmp_path / "a.jsonl", texts[:200] + texts[:200])
    out = [prepare([tmp_path / "a.jsonl"], tmp_path / d, train_bpe_vocab=300, val_frac=0.1)
           for d in ("x", "y")]  # fmt: skip
    assert out[0].manifest == out[1].manifest
    decoded = _decoded(tmp_path / "x")
    assert not set(decoded["train"]) & set(decoded["val"]) and decoded["val"]


def _four_inputs(src: Path) -> list[Path]:
    src.mkdir(exist_ok=True)
    paths = [_jsonl(src / f"{k}.jsonl", _docs(10 + k, 20)) for k in range(3)]
    (src / "3.txt").write_text(" ".join(_docs(13, 20)))
    return [*paths, src / "3.txt"]


def test_an_interrupted_run_resumes_without_redoing_or_duplicating_shards(tmp_path, monkeypatch):
    inputs = _four_inputs(tmp_path / "src")
    kw = dict(train_bpe_vocab=300, val_frac=0.2, pack_bytes=1, workers=1)
    reference = prepare(inputs, tmp_path / "ref", **kw).manifest
    out = tmp_path / "out"
    prepare(inputs, out, **kw)
    # What a crash leaves: no manifest yet, unit 2 not recorded, a half-written shard.
    (out / "manifest.json").unlink()
    (out / ".progress" / "00002.json").unlink()
    (out / ".tmp-train_00002.bin.123.partial").write_bytes(b"\x01\x00" * 7)
    redone = []

    def counted(job):
        redone.append(job.index)
        return tokenize_unit(job)

    monkeypatch.setattr(prepare_module, "tokenize_unit", counted)
    result = prepare(inputs, out, **kw)
    assert redone == [2] and result.units_reused == 3 and not result.tokenizer_trained
    assert result.manifest == reference
    assert read_manifest(out).content_hash == reference.content_hash
    assert sorted(p.name for p in out.glob("*.bin")) == sorted(s.name for s in reference.shards)
    assert not list(out.glob(".tmp-*"))


def test_a_run_stopped_by_a_bad_line_resumes_after_the_fix(tmp_path, tokenizer_file):
    inputs = _four_inputs(tmp_path / "src")
    good = inputs[2].read_text()
    inputs[2].write_text(good + '{"text": "cut short\n')
    kw = dict(tokenizer=tokenizer_file, val_frac=0.2, pack_bytes=1, workers=1)
    with pytest.raises(PrepareError, match=rf"^{re.escape(str(inputs[2]))}:21: not JSON"):
        prepare(inputs, tmp_path / "out", **kw)
    assert not (tmp_path / "out" / "manifest.json").exists()
    inputs[2].write_text(good)
    resumed = prepare(inputs, tmp_path / "out", **kw)
    assert resumed.units_reused == 2  # the two inputs before the bad one
    assert resumed.manifest == prepare(inputs, tmp_path / "fresh", **kw).manifest


def test_a_killed_run_completes_when_run_again(tmp_path, tokenizer_file):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(12):
        _jsonl(src / f"{k:02d}.jsonl", _docs(k, 400, n_words=60))
    argv = [src, "--out", tmp_path / "out", "--tokenizer", tokenizer_file, "--pack-mib", "0"]
    argv = [sys.executable, "-m", "orchestrator.cli", "prepare", *map(str, argv), "--workers", "2"]
    # A session of its own, killed whole: as a crash or the OOM killer would stop it.
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_until(
            lambda: list((tmp_path / "out" / ".progress").glob("0*.json")),
            timeout_s=120,
            what="the first input recorded as done",
            proc=proc,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have finished first
            os.killpg(proc.pid, signal.SIGKILL)
        wait_for_exit(proc, timeout_s=60, what="the killed prepare")
    resumed = prepare([src], tmp_path / "out", tokenizer=tokenizer_file, pack_bytes=1, workers=1)
    assert resumed.units_reused >= 1
    fresh = prepare([src], tmp_path / "fresh", tokenizer=tokenizer_file, pack_bytes=1, workers=2)
    assert resumed.manifest == fresh.manifest


def test_changing_one_byte_of_one_input_changes_the_content_hash(tmp_path, tokenizer_file):
    inputs = _four_inputs(tmp_path / "src")
    kw = dict(tokenizer=tokenizer_file, pack_bytes=1, workers=1)
    before = prepare(inputs, tmp_path / "a", **kw).manifest.content_hash
    text = inputs[3].read_text()
    st = inputs[3].stat()
    inputs[3].write_text(text.replace("the", "thE", 1))
    # A change is seen by size and modification time; a coarse clock could give this
    # same-size write the time of the first, so the time is set apart explicitly.
    os.utime(inputs[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = prepare(inputs, tmp_path / "b", **kw)
    assert after.manifest.content_hash != before
    # The same command again in the first directory redoes only the changed input.
    again = prepare(inputs, tmp_path / "a", **kw)
    assert again.units_reused == 3 and again.manifest.content_hash == after.manifest.content_hash


def _make_bad_inputs(tmp: Path) -> None:
    (tmp / "empty_dir").mkdir()
    (tmp / "empty.txt").write_text("")
    (tmp / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp / "bad.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    (tmp / "nokey.jsonl").write_text('{"body": "x"}\n')
    (tmp / "notstr.jsonl").write_text('{"text": 7}\n')
    (tmp / "blank.jsonl").write_text('{"text": ""}\n\n')
    pq.write_table(pa.table({"body": ["x"]}), tmp / "nocol.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp / "ints.parquet")
    (tmp / "broken.json").write_text('{"model": ')
    no_eod = _wordlevel_tokenizer(tmp / "noeod.json", 100)
    no_eod.write_text(no_eod.read_text().replace("<|endoftext|>", "<|sep|>"))
    (tmp / "ok.txt").write_text("some text")


# The input at fault, and how the message goes on after its path.
BAD_INPUTS = {
    "missing": ("nope.jsonl", ": no such file"),
    "empty dir": ("empty_dir", ": no input files"),
    "empty file": ("empty.txt", ": empty file"),
    "not utf-8": ("latin1.txt", ": not UTF-8 text"),
    "not json": ("bad.jsonl", ":2: not JSON"),
    "no key": ("nokey.jsonl", ":1: no key 'text'"),
    "not a string": ("notstr.jsonl", ":1: 'text' is int"),
    "no text": ("blank.jsonl", ": no text"),
    "no column": ("nocol.parquet", ": no column 'text'"),
    "not text": ("ints.parquet", ": column 'text' is int64"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_each_bad_input_is_one_clear_error_naming_the_file(case, tmp_path, tokenizer_file):
    _make_bad_inputs(tmp_path)
    name, then = BAD_INPUTS[case]
    with pytest.raises(PrepareError) as err:
        prepare([tmp_path / name], tmp_path / "out", tokenizer=tokenizer_file, workers=1)
    assert str(err.value).startswith(f"{tmp_path / name}{then}") and "\n" not in str(err.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


# The tokenizer at fault ("" for the tests' good one), options, the message after its path.
BAD_TOKENIZERS = {
    "not loadable": ("broken.json", {}, ": cannot load the tokenizer"),
    "no eod token": ("noeod.json", {}, ": no end-of-document token"),
    "unknown eod token": ("", {"eod_token": "<eot>"}, ": no token '<eot>'"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENIZERS))
def test_each_bad_tokenizer_is_one_clear_error_naming_the_file(case, tmp_path, tokenizer_file):
    _make_bad_inputs(tmp_path)
    name, options, then = BAD_TOKENIZERS[case]
    tok = tmp_path / name if name else tokenizer_file
    with pytest.raises(PrepareError) as err:
        prepare([tmp_path / "ok.txt"], tmp_path / "out", tokenizer=tok, **options)
    assert str(err.value).startswith(f"{tok}{then}") and "\n" not in str(err.value)
    # Refused before the output directory was claimed: fixed, the next run needs no --overwrite.
    assert not (tmp_path / "out").exists()
    with pytest.raises(PrepareError, match=r"^--train-bpe 100: a byte-level BPE needs"):
        prepare([tmp_path / "ok.txt"], tmp_path / "out", train_bpe_vocab=100)


def test_a_walked_file_that_is_not_utf8_is_skipped_with_a_warning(tmp_path, tokenizer_file, caplog):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("fine text")
    (tmp_path / "src" / "b.txt").write_bytes(b"caf\xe9")
    caplog.set_level(logging.WARNING, logger="workers.prepare")
    result = prepare([tmp_path / "src"], tmp_path / "out", tokenizer=tokenizer_file, workers=1)
    assert len(result.skipped) == 1 and result.skipped[0].startswith(str(tmp_path / "src/b.txt"))
    assert caplog.text.count("b.txt: not UTF-8") == 1  # warned once, by the parent
    assert result.manifest.split("train").documents == 1


def test_a_directory_prepared_otherwise_is_refused_unless_overwrite(tmp_path, tokenizer_file):
    (tmp_path / "a.txt").write_text("some text")
    out = tmp_path / "out"
    prepare([tmp_path / "a.txt"], out, tokenizer=tokenizer_file)
    with pytest.raises(PrepareError, match=rf"^{re.escape(str(out))}: prepared before .*val_frac"):
        prepare([tmp_path / "a.txt"], out, tokenizer=tokenizer_file, val_frac=0.5)
    (out / "notes.md").write_text("mine")
    redone = prepare(
        [tmp_path / "a.txt"], out, tokenizer=tokenizer_file, val_frac=0.5, overwrite=True
    )
    assert redone.units_reused == 0 and (out / "notes.md").read_text() == "mine"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.csv").write_text("a,b")
    with pytest.raises(PrepareError, match="not empty, and not a preparation"):
        prepare([tmp_path / "a.txt"], tmp_path / "other", tokenizer=tokenizer_file)


def test_a_pool_of_processes_gives_the_same_shards_as_one(tmp_path, tokenizer_file):
    inputs = _four_inputs(tmp_path / "src")
    kw = dict(tokenizer=tokenizer_file, val_frac=0.2, pack_bytes=1)
    assert (prepare(inputs, tmp_path / "one", workers=1, **kw).manifest
            == prepare(inputs, tmp_path / "two", workers=2, **kw).manifest)  # fmt: skip


def test_prepared_shards_feed_the_worker_and_validation_text_never_reaches_training(tmp_path):
    from tokenizers import Tokenizer

    from workers.data import open_source
    from workers.spec import DataSpec

    tok = train_bpe(_docs(5, 100), vocab_size=300)
    tok.add_tokens(["ZYZZYVA"])  # one id, found only in validation documents
    tok.save(str(tmp_path / "tok.json"))
    marker = Tokenizer.from_file(str(tmp_path / "tok.json")).token_to_id("ZYZZYVA")
    candidates = [f"ZYZZYVA {t}" for t in _docs(6, 200)]
    val = [t for t in candidates if is_validation(t, 0.1)][:5]
    train = [t for t in _docs(7, 200) if not is_validation(t, 0.1)]
    _jsonl(tmp_path / "a.jsonl", train[:100] + val + train[100:])
    m = prepare([tmp_path / "a.jsonl"], tmp_path / "out", tokenizer=tmp_path / "tok.json",
                val_frac=0.1).manifest  # fmt: skip
    assert m.split("val").documents == 5
    spec = DataSpec(source="tokens", root=str(tmp_path / "out"), token_dtype=m.dtype)
    src = open_source(spec, seq_len=16, vocab=m.vocab_size)
    seen: set[int] = set()
    for step in range(40):
        x, y = src.batch(seed=0, rank=step % 2, step=step, micro=0, size=16)
        seen |= set(np.unique(x.numpy())) | set(np.unique(y.numpy()))
    held = {int(v) for x, _ in src.eval_batches(n_batches=4, size=8) for v in np.unique(x)}
    assert marker not in seen and marker in held and m.eod_id in seen
