"""The content hash of a tokens source: it moves with every byte of the shards, and only then."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import workers.data_hash as data_hash
from tests.corpora import prepared_corpus
from workers.data_hash import bytes_per_token, content_hash
from workers.manifest import ManifestError, read_manifest


def _corpus(path: Path, *, first: int = 0) -> Path:
    """A nanoGPT-style pair and a Parquet-free nested shard: three files, two folders."""
    (path / "more").mkdir(parents=True)
    np.arange(first, first + 3000, dtype=np.uint16).tofile(path / "train.bin")
    np.arange(100, dtype=np.uint16).tofile(path / "val.bin")
    np.save(path / "more" / "part0.npy", np.arange(500, dtype=np.uint32))
    return path


def _replace_bytes(path: Path, offset: int, new: bytes) -> None:
    """Edit a file as a re-run of a preparation tool would: a new file renamed into place."""
    data = bytearray(path.read_bytes())
    data[offset : offset + len(new)] = new
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)


def test_the_same_shards_hash_the_same_wherever_they_are(tmp_path):
    a = content_hash(_corpus(tmp_path / "a"))
    assert len(a) == 64 and int(a, 16) >= 0
    assert content_hash(_corpus(tmp_path / "b")) == a  # moved or copied: same content
    assert content_hash(tmp_path / "a" / "train.bin") != a  # a single shard is other data


@pytest.mark.parametrize("name", ["train.bin", "val.bin", "more/part0.npy"])
def test_one_changed_byte_in_any_shard_changes_the_hash(tmp_path, name):
    root = _corpus(tmp_path / "c")
    before = content_hash(root)
    _replace_bytes(root / name, 200, b"\xff")
    assert content_hash(root) != before


def test_a_renamed_added_or_removed_shard_changes_the_hash(tmp_path):
    root = _corpus(tmp_path / "c")
    hashes = {content_hash(root)}
    (root / "val.bin").rename(root / "val2.bin")
    hashes.add(content_hash(root))
    np.arange(10, dtype=np.uint16).tofile(root / "extra.bin")
    hashes.add(content_hash(root))
    (root / "extra.bin").unlink()
    (root / "more" / "part0.npy").unlink()
    hashes.add(content_hash(root))
    assert len(hashes) == 4
    (root / "notes.txt").write_text("not a shard")  # not read by the worker: not hashed
    assert content_hash(root) in hashes


def test_a_separate_eval_root_is_part_of_the_hash(tmp_path):
    root, held = _corpus(tmp_path / "c"), _corpus(tmp_path / "h", first=7)
    both = content_hash(root, eval_root=held)
    assert both not in (content_hash(root), content_hash(held))
    _replace_bytes(held / "val.bin", 0, b"\x09")
    assert content_hash(root, eval_root=held) != both


def test_a_file_is_read_once_per_process_until_it_changes(tmp_path, monkeypatch):
    root = _corpus(tmp_path / "c")
    reads: list[str] = []
    real_open = Path.open

    def counting_open(self, *args, **kwargs):
        reads.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(data_hash, "_FILE_HASHES", {})
    monkeypatch.setattr(Path, "open", counting_open)
    first = content_hash(root)
    assert sorted(reads) == ["part0.npy", "train.bin", "val.bin"]
    assert content_hash(root) == first and len(reads) == 3  # every file unchanged: no reads
    # Edited in place, same size: its size, inode and times give it away (mtime set apart
    # here, as two writes within one clock tick could share a ctime).
    with real_open(root / "val.bin", "r+b") as fh:
        fh.write(b"\x07")
    st = (root / "val.bin").stat()
    os.utime(root / "val.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert content_hash(root) != first and reads[3:] == ["val.bin"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("prepared")
    words = "the cat sat on a mat while a dog ran after it"
    prepared_corpus(base, words, docs=80, words_per_doc=40, seed=0, out="out", val_frac=0.2)
    return base / "out"


def test_a_prepared_corpus_is_identified_by_its_manifest(prepared):
    manifest = read_manifest(prepared)
    assert manifest.split("val").tokens > 0
    assert content_hash(prepared) == manifest.content_hash
    assert bytes_per_token(prepared) == pytest.approx(manifest.split("val").bytes_per_token)
    assert bytes_per_token(prepared / "train_00000.bin") is None  # a bare shard says nothing


def test_a_shard_the_manifest_does_not_list_is_refused(prepared, tmp_path):
    copy = shutil.copytree(prepared, tmp_path / "copy")
    assert content_hash(copy) == content_hash(prepared)
    np.arange(10, dtype=np.uint16).tofile(copy / "stray.bin")  # the worker would train on it
    with pytest.raises(ManifestError, match=r"does not list \(stray.bin\)"):
        content_hash(copy)
    (copy / "stray.bin").unlink()
    (copy / "val_00000.bin").write_bytes(b"\x00\x00")  # truncated
    with pytest.raises(ManifestError, match="shard val_00000.bin is 2 bytes"):
        content_hash(copy)


def test_the_hash_of_a_folder_of_shards_is_the_one_earlier_plans_recorded(tmp_path):
    # Pinned: run ids of tokens plans include it, so it must not move with the code.
    (tmp_path / "more").mkdir()
    np.arange(3000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "val.bin")
    np.arange(500, dtype="<u4").tofile(tmp_path / "more" / "part0.bin")
    assert content_hash(tmp_path) == (
        "8dec21b6e3914fe8d842f489f6ff290b75ceca45d55c9ead19db6a387d2e602e"
    )
