"""One unit of `orch prepare`: a few input files tokenized into a train and a val shard.

`tokenize_unit` runs in a pool process (or inline with one worker). It streams the
documents of its files through the tokenizer in batches and appends each document's ids
and the end-of-document id to `train_<k>.bin` or `val_<k>.bin` (`is_validation`). Each
shard is written under a temporary name, flushed to disk and renamed into place, so a
shard file is whole or absent; the caller records the unit as done only after both.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from storage.fsio import TMP_PREFIX
from workers.corpus import InputFile, PrepareError, is_validation, read_documents
from workers.manifest import SPLITS, ShardInfo, Split
from workers.spec import TokenDtype
from workers.tokenizer import encode, load_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"  # a shard being written: `.tmp-<name>.<pid>.partial`, not a shard
_BATCH_DOCS = 1024  # documents per call into the tokenizer...
_BATCH_BYTES = 4 << 20  # ...or this much text, whichever comes first: bounded memory
# Little-endian whatever the machine: the layout nanoGPT's and OLMo's memmaps use.
_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
_TOKENIZERS: dict[tuple[str, str], Tokenizer] = {}  # per process: loaded once, not per unit


def shard_name(split: Split, index: int) -> str:
    """The file name of unit `index`'s shard of `split`: a function of the position only."""
    return f"{split}_{index:05d}.bin"


@dataclass(frozen=True, kw_only=True)
class UnitJob:
    """What one pool process needs to tokenize unit `index` (picklable)."""

    index: int
    inputs: tuple[InputFile, ...]
    out: str  # the corpus directory
    tokenizer_path: str
    tokenizer_sha256: str
    eod_id: int
    dtype: TokenDtype
    text_key: str
    val_frac: float


@dataclass(frozen=True, kw_only=True)
class UnitDone:
    index: int
    shards: tuple[ShardInfo, ...]  # train first; a split without documents has none
    skipped: tuple[str, ...]  # walked text files that are not UTF-8: "path: reason"


def init_pool_process() -> None:
    """Set up a pool process before its first unit."""
    # One process per core already: the tokenizer's own threads would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # Ctrl-C reaches every process of the terminal's group. The parent reports it; a pool
    # process just stops, without a traceback of its own (its partial shard is a
    # temporary file that the next run removes).
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


def tokenize_unit(job: UnitJob) -> UnitDone:
    """Tokenize `job`'s files into its shards.

    Raises:
        PrepareError: an input cannot be read (see `read_documents`), a file named on
            the command line holds no text, or a shard cannot be written.
    """
    tokenizer = _tokenizer(job.tokenizer_path, job.tokenizer_sha256)
    out = Path(job.out)
    writers = {split: _ShardWriter(out, shard_name(split, job.index), split, job.dtype)
               for split in SPLITS}  # fmt: skip
    skipped: list[str] = []
    try:
        for item in job.inputs:
            batch: list[tuple[str, bytes]] = []
            size = documents = 0
            for text, data in read_documents(item, text_key=job.text_key, skipped=skipped):
                batch.append((text, data))
                size += len(data)
                documents += 1
                if len(batch) >= _BATCH_DOCS or size >= _BATCH_BYTES:
                    _write_batch(batch, tokenizer, writers, job)
                    batch, size = [], 0
            _write_batch(batch, tokenizer, writers, job)
            if documents == 0 and item.named:
                raise PrepareError(f"{item.path}: no text (no non-empty document)")
        shards = tuple(info for w in writers.values() if (info := w.finish()) is not None)
    except BaseException:
        for w in writers.values():
            w.discard()
        raise
    log.info("unit %d: %d files -> %s", job.index, len(job.inputs), [s.name for s in shards])
    return UnitDone(index=job.index, shards=shards, skipped=tuple(skipped))


def _tokenizer(path: str, sha256: str) -> Tokenizer:
    key = (path, sha256)
    if key not in _TOKENIZERS:
        data = Path(path).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise PrepareError(f"{path}: the tokenizer changed while the corpus was prepared")
        _TOKENIZERS.clear()
        _TOKENIZERS[key] = load_tokenizer(data, source=path)
    return _TOKENIZERS[key]


def _write_batch(
    batch: list[tuple[str, bytes]],
    tokenizer: Tokenizer,
    writers: dict[Split, _ShardWriter],
    job: UnitJob,
) -> None:
    if not batch:
        return
    ids: dict[Split, list[int]] = {split: [] for split in SPLITS}
    documents = dict.fromkeys(SPLITS, 0)
    source_bytes = dict.fromkeys(SPLITS, 0)
    for (_, data), doc_ids in zip(batch, encode(tokenizer, [t for t, _ in batch]), strict=True):
        split: Split = "val" if is_validation(data, job.val_frac) else "train"
        ids[split] += doc_ids
        ids[split].append(job.eod_id)
        documents[split] += 1
        source_bytes[split] += len(data)
    for split in SPLITS:
        if documents[split]:
            writers[split].write(
                ids[split], documents=documents[split], source_bytes=source_bytes[split]
            )


class _ShardWriter:
    """A shard file written under a temporary name, renamed into place by `finish`."""

    def __init__(self, directory: Path, name: str, split: Split, dtype: TokenDtype):
        self.path = directory / name
        # The pid keeps two processes (a run, and a pool process orphaned by a killed
        # earlier one) from writing into one temporary file.
        self.tmp = directory / f"{TMP_PREFIX}{name}.{os.getpid()}{PARTIAL_SUFFIX}"
        self.name, self.split, self.dtype = name, split, _DTYPES[dtype]
        self._file = None
        self._hash = hashlib.sha256()
        self.documents = self.tokens = self.source_bytes = 0

    def write(self, ids: list[int], *, documents: int, source_bytes: int) -> None:
        data = np.asarray(ids, dtype=self.dtype).tobytes()
        try:
            if self._file is None:
                self._file = open(self.tmp, "wb")  # noqa: SIM115 (closed by finish/discard)
            self._file.write(data)
        except OSError as err:  # a full or read-only disk
            raise PrepareError(f"cannot write {self.tmp}: {err.strerror or err}") from err
        self._hash.update(data)
        self.documents += documents
        self.tokens += len(ids)
        self.source_bytes += source_bytes

    def finish(self) -> ShardInfo | None:
        """Rename the shard into place; None (and no file) if it got no documents."""
        if self._file is None:
            self.path.unlink(missing_ok=True)  # an earlier run's, with other contents
            return None
        try:
            self._file.flush()
            os.fsync(self._file.fileno())  # whole or absent after a power loss, never empty
            self._file.close()
            os.replace(self.tmp, self.path)
        except OSError as err:
            raise PrepareError(f"cannot write {self.path}: {err.strerror or err}") from err
        return ShardInfo(
            name=self.name,
            split=self.split,
            documents=self.documents,
            tokens=self.tokens,
            source_bytes=self.source_bytes,
            sha256=self._hash.hexdigest(),
        )

    def discard(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        self.tmp.unlink(missing_ok=True)
