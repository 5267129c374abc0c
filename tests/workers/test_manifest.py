"""The corpus manifest: what its content hash covers, and one clear error for a bad file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from workers.manifest import Manifest, ManifestError, ShardInfo, read_manifest, write_manifest


def _shard(name: str, split: str = "train", tokens: int = 4, sha: str = "aa") -> ShardInfo:
    return ShardInfo(
        name=name, split=split, documents=1, tokens=tokens, source_bytes=10, sha256=sha
    )


def _manifest(*shards: ShardInfo) -> Manifest:
    return Manifest(
        tokenizer="tokenizer.json",
        tokenizer_sha256="t" * 64,
        vocab_size=300,
        eod_token="<|endoftext|>",
        eod_id=0,
        dtype="uint16",
        shards=shards or (_shard("train_00000.bin"), _shard("val_00000.bin", "val", 2, "bb")),
    )


@pytest.fixture
def corpus(tmp_path) -> Path:
    m = _manifest()
    for s in m.shards:
        (tmp_path / s.name).write_bytes(b"\x00\x00" * s.tokens)
    write_manifest(tmp_path, m)
    return tmp_path


def test_a_written_manifest_reads_back_equal_with_its_totals(corpus):
    m = read_manifest(corpus)
    assert m == _manifest()
    data = json.loads((corpus / "manifest.json").read_text())
    assert data["format_version"] == 1 and data["content_hash"] == m.content_hash
    assert data["splits"]["train"] == {
        "shards": 1, "documents": 1, "tokens": 4, "source_bytes": 10, "bytes_per_token": 2.5,
    }  # fmt: skip
    assert data["bytes_per_token"] == pytest.approx(20 / 6)


def test_the_content_hash_covers_the_tokenizer_and_each_shards_name_and_hash_only():
    base = _manifest()
    a, b = base.shards
    assert _manifest(b, a).content_hash == base.content_hash  # listing order is not identity
    assert dataclasses.replace(base, eod_token="</s>").content_hash == base.content_hash
    moved = {
        "shard bytes": _manifest(a, dataclasses.replace(b, sha256="bc")),
        "shard name": _manifest(a, dataclasses.replace(b, name="val_00001.bin")),
        "tokenizer": dataclasses.replace(base, tokenizer_sha256="u" * 64),
        "a shard more": _manifest(a, b, _shard("train_00001.bin")),
    }
    assert all(m.content_hash != base.content_hash for m in moved.values())
    assert len({m.content_hash for m in moved.values()}) == len(moved)


def _edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))


BAD = {
    "no field": ({"vocab_size": None}, "vocab_size: expected int, got missing"),
    "wrong type": ({"eod_id": "0"}, "eod_id: expected int, got str"),
    "newer format": ({"format_version": 2}, "format_version 2 is not one this code reads"),
    "bad dtype": ({"dtype": "int8"}, "dtype must be uint16 or uint32"),
    "edited hash": ({"content_hash": "0" * 64}, "content_hash '000"),
    "edited totals": ({"splits": {"train": {}, "val": {}}}, "splits: the totals disagree"),
    "shard path": ({"shards": [{**dataclasses.asdict(_shard("../x.bin"))}]}, "is not a file name"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_manifest_is_one_error_naming_the_file(case, corpus):
    changes, message = BAD[case]
    _edit(corpus / "manifest.json", **changes)
    with pytest.raises(ManifestError) as err:
        read_manifest(corpus)
    text = str(err.value)
    assert text.startswith(f"{corpus / 'manifest.json'}: ") and message in text, text
    assert "\n" not in text


def test_a_missing_unreadable_or_incomplete_corpus_is_one_error_naming_the_file(corpus):
    (corpus / "val_00000.bin").write_bytes(b"\x00\x00")  # cut short: 1 token of 2
    with pytest.raises(ManifestError, match=r"shard val_00000.bin is 2 bytes, expected 4"):
        read_manifest(corpus)
    assert read_manifest(corpus, check_shards=False).content_hash == _manifest().content_hash
    (corpus / "val_00000.bin").unlink()
    with pytest.raises(ManifestError, match=r"shard val_00000.bin is missing"):
        read_manifest(corpus)
    (corpus / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"manifest.json: cannot read the manifest"):
        read_manifest(corpus)
    with pytest.raises(ManifestError, match=rf"^{corpus / 'nowhere'}/manifest.json: no manifest"):
        read_manifest(corpus / "nowhere")
