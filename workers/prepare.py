"""`orch prepare`: JSONL, Parquet and text files tokenized into token shards and a manifest.

What DIR holds when done:

    tokenizer.json     the tokenizer: trained here, or a copy of the one given
    train_<k>.bin      headerless uint16/uint32 ids: unit k's training documents, each
                       followed by the end-of-document id
    val_<k>.bin        unit k's validation documents (absent if it has none); the worker
                       holds `val_*` shards out of training
    manifest.json      written last (workers/manifest.py): a DIR with one is complete
    .progress/         what lets a re-run resume: the arguments, and one record per unit

Units: the input files, in order, packed into consecutive groups of at least
`pack_bytes` on disk (a large file is a unit alone), so that a source tree of small files
does not become thousands of tiny shards, in each of which the worker's windows, which
never cross a shard, would waste a window's length. Unit k's shard names depend on k
only. Units are tokenized in parallel, one pool process per core.

Resume: a unit's record (`.progress/<k>.json`) is written after its shards are renamed
into place, and names its files' sizes and modification times and the tokenizer's hash.
Running the same command again skips every unit whose record still holds and whose
shards are there, and redoes the rest (a file that was changed is read again), so an
interrupted run ends with the same shards, never duplicated, and the same content hash
as an uninterrupted one. Different arguments into a DIR prepared before are refused
unless `overwrite`, which removes this command's files (and only those) first.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workers.corpus import InputFile, PrepareError, find_inputs, is_validation, read_documents
from workers.manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest, write_manifest
from workers.prepared_dir import (
    PROGRESS_DIR,
    TOKENIZER_NAME,
    claim,
    finished_unit,
    read_json,
    record_path,
    remove_stale,
    remove_unlisted,
    unit_record,
    write_file,
    write_json,
)
from workers.shards import UnitDone, UnitJob, init_pool_process, tokenize_unit
from workers.spec import TokenDtype
from workers.tokenizer import (
    EOD_TOKEN,
    check_bpe_vocab,
    find_eod,
    load_tokenizer,
    token_dtype,
    train_bpe,
)
from workers.tokenizer import vocab_size as tokenizer_vocab

log = logging.getLogger(__name__)

DEFAULT_PACK_BYTES = 8 << 20  # small files packed into units of >= 8 MiB: ~2M tokens a shard


@dataclass(frozen=True, kw_only=True)
class PrepareProgress:
    """Where a preparation is, for a progress bar."""

    phase: Literal["train-bpe", "tokenize"]
    inputs_done: int  # input files
    inputs_total: int
    bytes_done: int  # of the input files, on disk
    bytes_total: int


@dataclass(frozen=True, kw_only=True)
class PrepareResult:
    """What `prepare` made, and how much of it an earlier run had made already."""

    directory: Path
    manifest: Manifest
    inputs: int  # input files read
    units: int  # shard pairs: groups of consecutive input files
    units_reused: int  # done by an earlier run of the same command, not redone
    tokenizer_trained: bool  # a BPE was trained by this call
    skipped: tuple[str, ...]  # walked text files that are not UTF-8: "path: reason"


def prepare(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    tokenizer: str | Path | None = None,
    train_bpe_vocab: int | None = None,
    eod_token: str | None = None,
    text_key: str = "text",
    val_frac: float = 0.005,
    pack_bytes: int = DEFAULT_PACK_BYTES,
    workers: int | None = None,
    overwrite: bool = False,
    on_progress: Callable[[PrepareProgress], None] | None = None,
) -> PrepareResult:
    """Tokenize `inputs` into shards and a manifest in `out` (see the module docstring).

    Args:
        tokenizer: a tokenizer.json to use; or else
        train_bpe_vocab: train a byte-level BPE of this many tokens on the training
            documents (not the validation ones, which it would otherwise favour).
        eod_token: the end-of-document token (default: the tokenizer's own, see
            `find_eod`; `<|endoftext|>` for a trained BPE).
        text_key: the JSON key or Parquet column holding each document's text.
        val_frac: the share of documents held out for validation, by a hash of each.
        pack_bytes: input files are packed into units of at least this many bytes.
        workers: pool processes (default: the CPUs this process may use).
        overwrite: start over in an `out` prepared with other arguments.
        on_progress: called as inputs are read, with where the work is.

    Raises:
        PrepareError: one line naming the file at fault (see workers/corpus.py and
            workers/tokenizer.py), or `out` not empty and prepared otherwise.
    """
    if (tokenizer is None) == (train_bpe_vocab is None):
        raise PrepareError("give a tokenizer file or a BPE vocab size to train, not both or none")
    if not 0 <= val_frac < 1:
        raise PrepareError(f"--val-frac must be in [0, 1), got {val_frac}")
    workers = _cpus() if workers is None else workers
    if workers < 1 or pack_bytes < 1:
        raise PrepareError(f"workers and pack_bytes must be positive, got {workers}, {pack_bytes}")
    if train_bpe_vocab is not None:
        check_bpe_vocab(train_bpe_vocab)
    directory = Path(out).expanduser().resolve()
    items = find_inputs(inputs, exclude=directory)
    # A given tokenizer is checked whole before `out` is claimed, so that a run refused
    # for it can be run again with, say, --eod-token, without --overwrite.
    given = _read_tokenizer(Path(tokenizer)) if tokenizer is not None else None
    layout = _layout(given, eod_token, str(tokenizer)) if given is not None else None
    arguments = {
        "format_version": FORMAT_VERSION,
        "inputs": [f.path for f in items],
        "tokenizer_sha256": _sha256(given) if given is not None else None,
        "train_bpe": train_bpe_vocab,
        "eod_token": eod_token,
        "text_key": text_key,
        "val_frac": val_frac,
        "pack_bytes": pack_bytes,
    }
    claim(directory, arguments, overwrite=overwrite)
    (directory / MANIFEST_NAME).unlink(missing_ok=True)  # until this run ends it again

    report = _Reporter(on_progress, items)
    tokenizer_path = directory / TOKENIZER_NAME
    if given is not None:
        write_file(tokenizer_path, given)
        trained = False
    else:
        assert train_bpe_vocab is not None
        trained = _train_unless_done(
            directory, items, train_bpe_vocab, eod_token or EOD_TOKEN, text_key, val_frac, report
        )
        given = tokenizer_path.read_bytes()
        layout = _layout(given, eod_token, str(tokenizer_path))
    assert layout is not None
    eod_name, eod_id, vocab, dtype = layout
    tokenizer_sha256 = _sha256(given)

    units = _pack(items, pack_bytes)
    remove_stale(directory, len(units))
    jobs = [
        UnitJob(index=k, inputs=unit, out=str(directory), tokenizer_path=str(tokenizer_path),
                tokenizer_sha256=tokenizer_sha256, eod_id=eod_id, dtype=dtype, text_key=text_key,
                val_frac=val_frac)
        for k, unit in enumerate(units)
    ]  # fmt: skip
    done = {job.index: d for job in jobs if (d := finished_unit(directory, job)) is not None}
    reused = len(done)
    report.start("tokenize", [u for k, u in enumerate(units) if k in done])

    def on_done(job: UnitJob, result: UnitDone) -> None:
        for reason in result.skipped:
            log.warning("skipped %s", reason)
        write_json(record_path(directory, job.index), unit_record(job, result))
        done[job.index] = result
        report.advance(job.inputs)

    _run([job for job in jobs if job.index not in done], workers, on_done)
    shards = tuple(sorted((s for d in done.values() for s in d.shards), key=lambda s: s.name))
    if not any(s.tokens for s in shards):
        raise PrepareError(f"no text in the {len(items)} input files (every document is empty)")
    remove_unlisted(directory, {s.name for s in shards})
    manifest = Manifest(
        tokenizer=TOKENIZER_NAME,
        tokenizer_sha256=tokenizer_sha256,
        vocab_size=vocab,
        eod_token=eod_name,
        eod_id=eod_id,
        dtype=dtype,
        shards=shards,
    )
    write_manifest(directory, manifest)
    return PrepareResult(
        directory=directory,
        manifest=manifest,
        inputs=len(items),
        units=len(units),
        units_reused=reused,
        tokenizer_trained=trained,
        skipped=tuple(r for k in sorted(done) for r in done[k].skipped),
    )


class _Reporter:
    """Counts inputs and bytes done in the current phase and tells `on_progress`."""

    def __init__(
        self, on_progress: Callable[[PrepareProgress], None] | None, items: list[InputFile]
    ):
        self.on_progress = on_progress
        self.inputs_total, self.bytes_total = len(items), sum(f.size_bytes for f in items)
        self.phase: Literal["train-bpe", "tokenize"] = "tokenize"
        self.inputs_done = self.bytes_done = 0

    def start(
        self, phase: Literal["train-bpe", "tokenize"], done: Sequence[Sequence[InputFile]]
    ) -> None:
        self.phase, self.inputs_done, self.bytes_done = phase, 0, 0
        self.advance([f for unit in done for f in unit])

    def advance(self, files: Sequence[InputFile]) -> None:
        self.inputs_done += len(files)
        self.bytes_done += sum(f.size_bytes for f in files)
        if self.on_progress is not None:
            self.on_progress(PrepareProgress(
                phase=self.phase, inputs_done=self.inputs_done, inputs_total=self.inputs_total,
                bytes_done=self.bytes_done, bytes_total=self.bytes_total,
            ))  # fmt: skip


def _train_unless_done(
    directory: Path,
    items: list[InputFile],
    vocab: int,
    eod_token: str,
    text_key: str,
    val_frac: float,
    report: _Reporter,
) -> bool:
    """Train the BPE into DIR/tokenizer.json, unless an earlier run of the same command
    trained it on these same files; True if trained now."""
    path = directory / TOKENIZER_NAME
    record = directory / PROGRESS_DIR / TOKENIZER_NAME
    trained_on = [list(f.stat) for f in items]
    if path.is_file():
        if read_json(record) == {
            "trained_on": trained_on,
            "sha256": _sha256(path.read_bytes()),
        }:
            return False

    def texts() -> Iterator[str]:
        for item in items:
            for text, data in read_documents(item, text_key=text_key, skipped=[]):
                if not is_validation(data, val_frac):
                    yield text
            report.advance([item])

    report.start("train-bpe", [])
    data = train_bpe(texts(), vocab_size=vocab, eod_token=eod_token).to_str(pretty=True).encode()
    write_file(path, data)
    write_json(record, {"trained_on": trained_on, "sha256": _sha256(data)})
    return True


def _pack(items: list[InputFile], pack_bytes: int) -> list[tuple[InputFile, ...]]:
    units: list[tuple[InputFile, ...]] = []
    current: list[InputFile] = []
    size = 0
    for item in items:
        current.append(item)
        size += item.size_bytes
        if size >= pack_bytes:
            units.append(tuple(current))
            current, size = [], 0
    if current:
        units.append(tuple(current))
    return units


def _run(jobs: list[UnitJob], workers: int, on_done: Callable[[UnitJob, UnitDone], None]) -> None:
    if workers == 1 or len(jobs) <= 1:  # no pool to start: the tokenizer's threads suffice
        for job in jobs:
            on_done(job, tokenize_unit(job))
        return
    # Spawned, not forked: a fork of a process whose tokenizer threads ran (BPE training)
    # can deadlock, and `tokenizers` would turn its parallelism off with a warning.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=context, initializer=init_pool_process
    ) as pool:
        futures = {pool.submit(tokenize_unit, job): job for job in jobs}
        handled = set()
        try:
            for future in as_completed(futures):
                handled.add(future)
                on_done(futures[future], future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # units running finish; none start
            for future, job in futures.items():  # record those that did: not redone next time
                if future not in handled and not future.cancelled() and not future.exception():
                    on_done(job, future.result())
            raise


def _layout(data: bytes, eod_token: str | None, source: str) -> tuple[str, int, int, TokenDtype]:
    """(end-of-document token, its id, vocab size, shard dtype) of a tokenizer file."""
    tokenizer = load_tokenizer(data, source=source)
    eod_name, eod_id = find_eod(tokenizer, name=eod_token, source=source)
    vocab = tokenizer_vocab(tokenizer)
    return eod_name, eod_id, vocab, token_dtype(vocab, source=source)


def _read_tokenizer(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PrepareError(f"{path}: cannot read the tokenizer: {err.strerror or err}") from err
    return data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
