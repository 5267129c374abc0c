"""Token shards read by position: `read(start, stop)` gives the ids [start, stop) of a shard.

- `.bin` and headerless `.npy` (nanoGPT's and OLMo's memmaps): a flat array of the
  spec's `token_dtype`. `.npy` with a header: the header says the dtype and where the
  array starts. A local file is memory mapped; on S3 each read is one ranged GET of just
  the bytes asked for (`read_at`), so a rank fetches the windows it draws, never a shard.
- `.parquet`: a column of token ids, or of lists of ids, one list a document. Documents
  are concatenated in row order, each followed by `eod_id` when one is given: the layout
  `orch prepare` writes (and nanoGPT's and OLMo's), so the same documents in Parquet lists
  and in prepared `.bin` shards are the same token stream; an empty document adds nothing.
  A file is read one row group at a time (`ParquetShard`), local or on S3 alike.

Pure numpy and pyarrow (no torch).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import tokenize
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workers.data_hash import ShardFile
from workers.errors import WorkerError

log = logging.getLogger(__name__)

_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER_BYTES = 1 << 16  # a .npy header is a few hundred bytes; numpy caps it at 10 KB


class DataError(WorkerError, ValueError):
    """A data source cannot be opened or yields tokens the model cannot take."""


class _Access:
    """Random access to a shard's bytes. An S3 handle is kept: opening one is a request, and
    a kept one holds no connection. A local file is opened for each use, so that a corpus
    of thousands of Parquet shards does not hold as many file descriptors."""

    def __init__(self, file: ShardFile):
        self.file = file
        self._kept: pa.NativeFile | None = None

    @contextlib.contextmanager
    def handle(self) -> Iterator[pa.NativeFile]:
        if self.file.is_local:
            with self.file.open() as f:
                yield f
            return
        if self._kept is None:
            self._kept = self.file.open()
        yield self._kept


class TokenShard(Protocol):
    where: str  # the file, for messages
    n_tokens: int

    def read(self, start: int, stop: int) -> np.ndarray:
        """Token ids [start, stop) of the shard: 1-D, of an integer dtype."""
        ...


class RowGroupCache:
    """The `max_groups` most recently used decoded Parquet row groups, of every shard of one
    source together, so that memory is bounded by the cache, not by the shards' number or
    size. A window across a row-group boundary needs two groups in turn, which 8 keep with
    room for the neighbours of a batch's other windows."""

    def __init__(self, max_groups: int = 8):
        self.max_groups = max_groups
        self.decoded = 0  # row groups decoded so far: one per miss
        self._groups: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._groups)

    def get(self, key: tuple[int, int], decode: Callable[[], np.ndarray]) -> np.ndarray:
        tokens = self._groups.get(key)
        if tokens is not None:
            self._groups.move_to_end(key)
            return tokens
        tokens = decode()
        self.decoded += 1
        self._groups[key] = tokens
        while len(self._groups) > self.max_groups:
            self._groups.popitem(last=False)
        return tokens


def open_shard(
    file: ShardFile, *, token_dtype: str, column: str, eod_id: int, cache: RowGroupCache
) -> TokenShard:
    """The shard in `file`, opened for reads by position (only headers and footers read).

    Raises:
        DataError: naming the file: empty, not a whole number of tokens, a header or
            footer that cannot be read, no such column, or ids that are not integers.
    """
    suffix = PurePosixPath(file.name).suffix
    try:
        if suffix == ".parquet":
            return ParquetShard(file, column=column, eod_id=eod_id, cache=cache)
        if file.size == 0:
            raise DataError(f"{file.where}: empty token shard")
        access = _Access(file)
        dtype, offset, n_tokens = _flat_layout(access, np.dtype(token_dtype), suffix)
    except OSError as err:  # unreadable, or an object store that keeps failing
        raise DataError(f"{file.where}: cannot read the token shard: {err}") from err
    if file.is_local:
        if n_tokens == 0:  # a header and no tokens: nothing to map (mmap refuses it)
            return _ArrayShard(file.where, np.empty(0, dtype))
        mapped = np.memmap(file.path, dtype=dtype, mode="r", offset=offset, shape=(n_tokens,))
        return _ArrayShard(file.where, mapped)
    return _RangeShard(access, dtype, offset, n_tokens)


def _flat_layout(access: _Access, raw: np.dtype, suffix: str) -> tuple[np.dtype, int, int]:
    """(dtype, byte offset of the first token, tokens) of a flat `.bin` or `.npy` shard."""
    file = access.file
    head = b""
    if suffix == ".npy":  # with a header, or headerless (OLMo's): the first bytes say
        with access.handle() as f:
            head = f.read_at(min(file.size, _NPY_HEADER_BYTES), 0)
    if head.startswith(_NPY_MAGIC):
        dtype, offset, shape = _npy_header(file, head)
        if len(shape) != 1 or dtype.kind not in "iu":
            raise DataError(
                f"{file.where}: expected a 1-D array of token ids, got {dtype} of shape {shape}"
            )
        if offset + shape[0] * dtype.itemsize > file.size:
            raise DataError(
                f"{file.where}: the header says {shape[0]} {dtype} tokens, the file is "
                f"{file.size} bytes: cut short"
            )
        return dtype, offset, shape[0]
    # Headerless, as nanoGPT writes .bin and OLMo its .npy memmaps.
    if file.size % raw.itemsize:
        raise DataError(
            f"{file.where}: {file.size} bytes is not a whole number of {raw.name} tokens",
            hint="data.token_dtype: the dtype the shard was written with (uint16 or uint32)",
        )
    return raw, 0, file.size // raw.itemsize


def _npy_header(file: ShardFile, head: bytes) -> tuple[np.dtype, int, tuple[int, ...]]:
    fh = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"format version {version} is not one this code reads (1.0, 2.0)")
    # A cut-short or garbled header: numpy parses it as a Python literal, so the errors
    # of Python's tokenizer and parser come through.
    except (ValueError, SyntaxError, tokenize.TokenError) as err:
        raise DataError(f"{file.where}: cannot read the .npy header: {err}") from err
    return np.dtype(dtype), fh.tell(), tuple(shape)


class _ArrayShard:
    """A local shard, memory mapped: only the windows read are paged in."""

    def __init__(self, where: str, tokens: np.ndarray):
        self.where = where
        self.tokens = tokens
        self.n_tokens = len(tokens)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.tokens[start:stop]


class _RangeShard:
    """A flat shard on an object store: each read is one ranged request."""

    def __init__(self, access: _Access, dtype: np.dtype, offset: int, n_tokens: int):
        self.where = access.file.where
        self.n_tokens = n_tokens
        self._access, self._dtype, self._offset = access, dtype, offset

    def read(self, start: int, stop: int) -> np.ndarray:
        width = self._dtype.itemsize
        try:
            with self._access.handle() as f:
                data = f.read_at((stop - start) * width, self._offset + start * width)
        except OSError as err:
            raise DataError(f"{self.where}: cannot read tokens {start}-{stop}: {err}") from err
        if len(data) != (stop - start) * width:  # the object shrank since it was listed
            raise DataError(f"{self.where}: tokens {start}-{stop} are past the end of the file")
        return np.frombuffer(data, dtype=self._dtype)


class ParquetShard:
    """A Parquet shard read one row group at a time.

    Opening reads the footer only: each row group's token count comes from its column
    chunk's metadata (values, and when the statistics say there is no null, that is, no
    empty or null document and no null id, the values are the ids and the rows the
    documents). A row group whose statistics cannot say is decoded once to count it.
    A read decodes only the row groups it touches, through the source's shared
    `RowGroupCache`; the shard's tokens are numbered across its row groups in order, so
    a read may span a boundary (see `TokenSource` for why windows may).
    """

    _ids = itertools.count()  # cache keys: shards of one source never share one

    def __init__(self, file: ShardFile, *, column: str, eod_id: int, cache: RowGroupCache):
        self.where = file.where
        self._access, self._column, self._cache = _Access(file), column, cache
        self._key = next(self._ids)
        try:
            with self._access.handle() as f:
                parquet = pq.ParquetFile(f)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{self.where}: not a readable Parquet file: {err}") from err
        self._metadata = parquet.metadata
        schema = parquet.schema_arrow
        if column not in schema.names:
            raise DataError(
                f"{self.where}: cannot read token column {column!r}: the file has "
                f"{', '.join(schema.names) or 'no columns'}",
                hint="data.column: the column of token ids",
            )
        kind = schema.field(column).type
        self._lists = pa.types.is_list(kind) or pa.types.is_large_list(kind)
        self._lists |= pa.types.is_fixed_size_list(kind)
        ids = kind.value_type if self._lists else kind
        if not pa.types.is_integer(ids):
            raise DataError(
                f"{self.where}: column {column!r} holds {kind}, expected integer token ids "
                "or lists of them"
            )
        self._eod = eod_id if self._lists and eod_id >= 0 else -1
        self._leaf = self._leaf_column(column)
        self.n_row_groups = self._metadata.num_row_groups
        # Each row group's token count by its metadata, or None where that cannot say.
        self._said = [self._metadata_count(g) for g in range(self.n_row_groups)]
        counts = [len(self._group(g)) if n is None else n for g, n in enumerate(self._said)]
        self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.n_tokens = int(self._starts[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        pieces = []
        group = first
        while group < self.n_row_groups and self._starts[group] < stop:
            base = int(self._starts[group])
            if self._starts[group + 1] > base:  # an empty row group is not decoded
                pieces.append(self._group(group)[max(start - base, 0) : stop - base])
            group += 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _leaf_column(self, column: str) -> int:
        schema = self._metadata.schema
        for i in range(len(schema)):
            path = schema.column(i).path
            if path == column or path.startswith(f"{column}."):
                return i
        raise DataError(f"{self.where}: no leaf column for {column!r}")  # pragma: no cover

    def _metadata_count(self, group: int) -> int | None:
        meta = self._metadata.row_group(group)
        if meta.num_rows == 0:
            return 0
        chunk = meta.column(self._leaf)
        stats = chunk.statistics
        if stats is not None and stats.has_null_count and stats.null_count == 0:
            return chunk.num_values + (meta.num_rows if self._eod >= 0 else 0)
        log.debug("%s: row group %d has no null count; decoding it to count", self.where, group)
        return None

    def _group(self, group: int) -> np.ndarray:
        return self._cache.get((self._key, group), lambda: self._decode(group))

    def _decode(self, group: int) -> np.ndarray:
        try:
            with self._access.handle() as f:
                parquet = pq.ParquetFile(f, metadata=self._metadata)
                table = parquet.read_row_group(group, columns=[self._column])
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{self.where}: cannot read row group {group}: {err}") from err
        column = table.column(self._column).combine_chunks()
        tokens = self._stream(column, group)
        said = self._said[group]
        if said is not None and len(tokens) != said:  # windows were numbered by it
            raise DataError(
                f"{self.where}: row group {group} holds {len(tokens)} tokens, its "
                f"metadata says {said}",
                hint="the file is corrupt; write it again",
            )
        return tokens

    def _stream(self, column: pa.Array, group: int) -> np.ndarray:
        """The row group's token stream: the ids, each document followed by the eod id."""
        values = column.flatten() if self._lists else column
        if values.null_count:
            raise DataError(f"{self.where}: row group {group} holds a null token id")
        ids = _narrow(values.to_numpy(zero_copy_only=False))
        if self._eod < 0:
            return ids
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        kept = lengths > 0  # an empty (or null) document adds no end-of-document id
        ends = np.cumsum(lengths + kept)  # one past each document's eod
        eod_at = ends[kept] - 1
        out = np.empty(len(ids) + len(eod_at), dtype=np.promote_types(ids.dtype, _fit(self._eod)))
        is_id = np.ones(len(out), dtype=bool)
        is_id[eod_at] = False
        out[is_id] = ids
        out[eod_at] = self._eod
        return out


def _narrow(ids: np.ndarray) -> np.ndarray:
    """`ids` as uint32 where they fit (Parquet lists are often int64): half the cache."""
    if ids.dtype.itemsize > 4 and len(ids) and 0 <= ids.min() and ids.max() < 2**32:
        return ids.astype(np.uint32)
    return ids


def _fit(value: int) -> np.dtype:
    return np.min_scalar_type(value)
