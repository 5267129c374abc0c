"""The documents of a raw-text corpus, as `orch prepare` reads them.

Inputs are files or directories. A file is read by its name: `.jsonl` / `.ndjson`
(optionally `.gz`; `.json` too when named on the command line) as one JSON object per line
with the document's text under a key; `.parquet` as a string column, one document per
row, read one batch of rows at a time; anything else as one document of UTF-8 text.
Directories are walked in sorted order, taking only those kinds and text files with a
known suffix (`TEXT_SUFFIXES`), and skipping hidden, `__pycache__` and installed-package
folders, so the same tree gives the same input list on every machine.

A document goes to the validation split by a hash of its text (`is_validation`), not by
its position: identical documents always land in the same split, so a duplicate cannot
leak a validation document into training, and adding a file moves no other document.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from storage.errors import OrchError

if TYPE_CHECKING:
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)

InputKind = Literal["jsonl", "parquet", "text"]
TEXT_SUFFIXES = frozenset(
    {".txt", ".md", ".rst", ".tex", ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp",
     ".rs", ".go", ".java", ".js", ".ts", ".sh", ".html", ".css", ".toml", ".yaml", ".yml"}
)  # fmt: skip
_JSONL_ENDINGS = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
_NAMED_JSONL_ENDINGS = (".json", ".json.gz")  # often JSON lines, but only when named
_SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages", "node_modules"})
_PARQUET_BATCH_ROWS = 1024  # rows read at a time: memory stays bounded on large files


class PrepareError(OrchError, ValueError):
    """An input, tokenizer or output directory of `orch prepare` cannot be used as given."""


@dataclass(frozen=True, kw_only=True)
class InputFile:
    """One input file, in the order the corpus is read."""

    path: str  # absolute
    kind: InputKind
    size_bytes: int  # on disk (compressed, for .gz)
    mtime_ns: int
    named: bool  # named on the command line, not found by walking a directory

    @property
    def stat(self) -> tuple[str, int, int]:
        """What says the file is unchanged since it was read: path, size, mtime."""
        return (self.path, self.size_bytes, self.mtime_ns)


def find_inputs(inputs: Sequence[str | Path], *, exclude: Path | None = None) -> list[InputFile]:
    """The input files, in the order given, directories expanded in sorted order.

    Args:
        exclude: a directory never read (the output directory, if it lies under an input).

    Raises:
        PrepareError: no inputs; an input that does not exist; a named file that is
            empty; a named directory that holds no input files.
    """
    if not inputs:
        raise PrepareError("no inputs given", hint="name JSONL, Parquet or text files or folders")
    found: list[InputFile] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            walked = [_input(p, named=False) for p in _walk(path.resolve(), exclude)]
            if not walked:
                raise PrepareError(
                    f"{given}: no input files under it",
                    hint="expected .jsonl, .parquet or text files "
                    f"({', '.join(sorted(TEXT_SUFFIXES))})",
                )
            found += walked
        elif path.is_file():
            item = _input(path.resolve(), named=True)
            if item.size_bytes == 0:
                raise PrepareError(f"{given}: empty file, no text")
            found.append(item)
        else:
            raise PrepareError(f"{given}: no such file or directory")
    unique: dict[str, InputFile] = {}
    for item in found:  # a file named and also under a folder named: read once, where first
        unique.setdefault(item.path, item)
    log.info("%d input files, %d bytes", len(unique), sum(f.size_bytes for f in unique.values()))
    return list(unique.values())


def read_documents(
    item: InputFile, *, text_key: str = "text", skipped: list[str] | None = None
) -> Iterator[tuple[str, bytes]]:
    """(text, its UTF-8 bytes) of each document of `item`, in file order; empty documents
    are left out.

    Args:
        skipped: where a text file found by walking a directory that is not UTF-8 is
            noted ("path: reason") instead of failing: a source tree holds the odd
            Latin-1 test file. Without it, or for a named file, that is an error.

    Raises:
        PrepareError: naming the file (and line, for JSONL): not UTF-8, not JSON, no
            `text_key`, a value that is not a string, no such column or not a text column.
    """
    if item.kind == "jsonl":
        yield from _jsonl(item.path, text_key)
    elif item.kind == "parquet":
        yield from _parquet(item.path, text_key)
    else:
        data = _read(item.path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            reason = f"{item.path}: not UTF-8 text (byte {err.start}: {err.reason})"
            if item.named or skipped is None:
                raise PrepareError(reason) from err
            skipped.append(reason)  # the caller warns, once, in the parent process
            return
        if text:
            yield text, data


def is_validation(text: str | bytes, val_frac: float) -> bool:
    """Whether a document with this text is in the validation split: the first 8 bytes of
    sha256(UTF-8 text), as a fraction of 2^64, fall below `val_frac`."""
    data = text.encode() if isinstance(text, str) else text
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") < val_frac * 2**64


def _input(path: Path, *, named: bool) -> InputFile:
    st = path.stat()
    kind = _kind(path, named=named)
    assert kind is not None  # _walk only yields files of a known kind
    return InputFile(
        path=str(path), kind=kind, size_bytes=st.st_size, mtime_ns=st.st_mtime_ns, named=named
    )


def _kind(path: Path, *, named: bool) -> InputKind | None:
    name = path.name.lower()
    if name.endswith(_JSONL_ENDINGS) or (named and name.endswith(_NAMED_JSONL_ENDINGS)):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if named or path.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    return None


def _walk(root: Path, exclude: Path | None) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and d not in _SKIP_DIRS and here / d != exclude
        )  # fmt: skip
        for name in sorted(filenames):
            path = here / name
            if not name.startswith(".") and _kind(path, named=False) and path.is_file():
                yield path


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise PrepareError(f"{path}: cannot read: {err.strerror or err}") from err


def _jsonl(path: str, key: str) -> Iterator[tuple[str, bytes]]:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    yield from _jsonl_line(line, key, f"{path}:{lineno}")
    except (OSError, EOFError, zlib.error) as err:  # unreadable; a corrupt or cut-short .gz
        raise PrepareError(f"{path}: cannot read: {err}") from err


def _jsonl_line(line: bytes, key: str, where: str) -> Iterator[tuple[str, bytes]]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise PrepareError(f"{where}: not JSON ({err.msg} at column {err.colno})") from err
    except UnicodeDecodeError as err:
        raise PrepareError(f"{where}: not UTF-8 ({err.reason})") from err
    if not isinstance(record, dict):
        raise PrepareError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise PrepareError(
            f"{where}: no key {key!r} (keys: {', '.join(map(str, list(record)[:8]))})",
            hint="--text-key names the field that holds the text",
        )
    text = record[key]
    if not isinstance(text, str):
        raise PrepareError(f"{where}: {key!r} is {type(text).__name__}, not a string")
    try:
        data = text.encode()
    except UnicodeEncodeError as err:  # a lone surrogate escape such as "\ud800"
        raise PrepareError(f"{where}: {key!r} is not valid Unicode ({err.reason})") from err
    if text:
        yield text, data


def _parquet(path: str, key: str) -> Iterator[tuple[str, bytes]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise PrepareError(f"{path}: not a readable Parquet file: {err}") from err
    with pf:
        yield from _parquet_column(pf, path, key)


def _parquet_column(pf: pq.ParquetFile, path: str, key: str) -> Iterator[tuple[str, bytes]]:
    import pyarrow as pa

    schema = pf.schema_arrow
    if schema.get_field_index(key) < 0:
        raise PrepareError(
            f"{path}: no column {key!r} (columns: {', '.join(schema.names[:8])})",
            hint="--text-key names the column that holds the text",
        )
    kind = schema.field(key).type
    value_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    if not (pa.types.is_string(value_kind) or pa.types.is_large_string(value_kind)
            or pa.types.is_string_view(value_kind)):  # fmt: skip
        raise PrepareError(f"{path}: column {key!r} is {kind}, not text (a string column)")
    try:
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[key]):
            for text in batch.column(0).to_pylist():
                if text:  # a null is a row without a document
                    yield text, text.encode()
    except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
        raise PrepareError(f"{path}: cannot read column {key!r}: {err}") from err
