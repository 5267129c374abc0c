"""Part files: metric parts, and keyed parts (many runs' summary rows or specs in one file).

A run's metrics live in `metrics/run_id=<run>/` as immutable Parquet files:

    part-<attempt>-<seq>-<token>.parquet      one flush of one writer
    compact-<attempt>-<seq>-<token>.parquet   a compaction of earlier files

`seq` counts a writer's flushes (a writer for an attempt that already has parts starts
after them), and `token` is random per writer, so two processes never write the same
name. Files are ranked by (attempt, seq, compact-after-part): when two rows share
(run_id, step), the row from the higher attempt wins, then the one from the
higher-ranked file. A compaction is named after the newest file it absorbed, so it
ranks with the rows it holds.

Listing and reading are not one atomic step: a compaction may delete a listed file
before it is opened. Such a file is told apart from a corrupt one by looking again, and
the read starts over from a fresh listing, which then holds the compacted file.

Keyed parts (`KeyedParts`, one row per run_id) are a group commit of per-run files:

    summaries/<time_ns>-<token>.parquet   summary rows of the runs one poll of an
                                          in-process backend (the simulated one) ended,
                                          instead of a runs/<run_id>/summary.parquet each
    specs/<time_ns>-<token>.parquet       the specs of a large round (run_id, spec_json),
                                          instead of a runs/<run_id>/spec.json each

Each is immutable and written whole (storage.fsio). The same run in two parts (it cannot
happen from one driver, but costs nothing to resolve) reads as the row of the newer
part; merging parts (`KeyedParts.compact`) writes `<newest absorbed name>-compact.parquet`,
which ranks right after the newest part it absorbed, and only then deletes the parts, so
a kill between the two leaves rows twice, which readers resolve to one.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from storage import schema
from storage.errors import StoreError
from storage.fsio import delete_quietly, exists, list_files, read_table, write_table_atomic

log = logging.getLogger(__name__)

_PART = re.compile(r"^(part|compact)-(\d+)-(\d+)(?:-([0-9a-f]+))?\.parquet$")
_PARTITION = "run_id="
KEYS = ["run_id", "attempt", "step"]
RANK = "_rank"  # a read's own column: the file's rank, higher is newer
_RELISTS = 50  # a busy experiment (many writers, compactions) can change under a read
_PER_RUN_LISTING_MAX = 64  # more runs than this: one recursive listing is cheaper
_KEYED_PART = re.compile(r"^(\d{19})-([0-9a-f]{8})(-compact)?\.parquet$")
SUMMARY_PARTS_DIR = "summaries"
SPEC_PARTS_DIR = "specs"
# Parts one writer adds before it merges every part into one: a reader asking run by run
# (`orch status`) lists the directory per question, so it must stay short while a study
# of short runs writes a summary part per poll for hours.
_MERGE_AFTER = 16
CHECKED_PARQUET = ds.ParquetFileFormat(  # verify the page checksums every writer stores
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True)
)


@dataclass(frozen=True, order=True)
class PartName:
    """The parsed name of a metric file; sorts in rank order (oldest first)."""

    attempt: int
    seq: int
    compacted: bool
    token: str = ""

    @classmethod
    def parse(cls, base_name: str) -> PartName | None:
        match = _PART.match(base_name)
        if match is None:
            return None
        kind, attempt, seq, token = match.groups()
        return cls(int(attempt), int(seq), kind == "compact", token or "")

    @property
    def file_name(self) -> str:
        kind = "compact" if self.compacted else "part"
        token = f"-{self.token}" if self.token else ""
        return f"{kind}-{self.attempt:03d}-{self.seq:06d}{token}.parquet"


@dataclass(frozen=True)
class Part:
    run_id: str
    name: PartName
    path: str
    size_bytes: int


@dataclass(frozen=True)
class PartsRead:
    """What one read saw: the rows (with RANK), the files they came from, and the files
    skipped as unreadable."""

    table: pa.Table
    read: list[Part]
    corrupt: list[Part]


def partition_dir(metrics_dir: str, run_id: str) -> str:
    return f"{metrics_dir}/{_PARTITION}{run_id}"


def list_parts(fs: pafs.FileSystem, metrics_dir: str, run_ids: Iterable[str] | None) -> list[Part]:
    """The metric files of `run_ids` (all runs if None), ordered by run, then rank.

    A few runs are listed directory by directory, so reading one run's curve never lists
    (let alone opens) the rest of a large experiment.
    """
    wanted = None if run_ids is None else set(run_ids)
    if wanted is not None and len(wanted) <= _PER_RUN_LISTING_MAX:
        infos = [i for r in sorted(wanted) for i in list_files(fs, partition_dir(metrics_dir, r))]
    else:
        infos = list_files(fs, metrics_dir, recursive=True)
    parts = []
    for info in infos:
        parent = info.path.rsplit("/", 2)[-2]
        name = PartName.parse(info.base_name)
        if name is None or not parent.startswith(_PARTITION):
            continue  # temporary files of writers at work, or strays
        run_id = parent[len(_PARTITION) :]
        if wanted is None or run_id in wanted:
            parts.append(Part(run_id, name, info.path, info.size))
    return sorted(parts, key=lambda p: (p.run_id, p.name))


def read_parts(
    fs: pafs.FileSystem,
    metrics_dir: str,
    run_ids: Iterable[str] | None,
    columns: list[str],
) -> PartsRead:
    """Every row of the listed files, `columns` plus RANK; corrupt files skipped with a
    warning naming them. Rows are not yet resolved across attempts (see `latest_per_step`).

    Raises:
        StoreError: files kept vanishing under the read (compactions faster than reads).
    """
    run_ids = None if run_ids is None else list(run_ids)
    for _ in range(_RELISTS):
        parts = list_parts(fs, metrics_dir, run_ids)
        try:
            return _read_listed(fs, parts, columns)
        except _Vanished as gone:
            log.debug("metrics part %s vanished during a read; listing again", gone)
    raise StoreError(
        f"metric files under {metrics_dir} kept changing during {_RELISTS} reads",
        hint="retry the read; is something deleting parts in a loop?",
    )


class _Vanished(Exception):
    """A listed file was deleted before it was read (by a compaction)."""


def _read_listed(fs: pafs.FileSystem, parts: list[Part], columns: list[str]) -> PartsRead:
    paths = [p.path for p in parts]
    if not parts:
        return PartsRead(_empty(columns), [], [])
    try:
        return PartsRead(_scan(fs, parts, columns, paths), parts, [])
    except (pa.ArrowException, OSError) as err:
        log.debug(
            "one scan of %d metric files failed (%s); reading them one by one", len(paths), err
        )
    # Some file is unreadable or gone: find which, one file at a time.
    tables, read, corrupt = [], [], []
    for part in parts:
        try:
            tables.append(_scan(fs, [part], columns, paths))
            read.append(part)
        except (pa.ArrowException, OSError) as err:
            if not exists(fs, part.path):
                raise _Vanished(part.path) from err
            log.warning("skipping unreadable metrics part %s: %s", part.path, err)
            corrupt.append(part)
    table = pa.concat_tables(tables) if tables else _empty(columns)
    return PartsRead(table, read, corrupt)


def _scan(
    fs: pafs.FileSystem, parts: list[Part], columns: list[str], ranked: list[str]
) -> pa.Table:
    # One dataset over many files: pyarrow reads them in parallel, only `columns`, and
    # fills columns a file lacks (older schema versions) with nulls. The sizes from the
    # listing spare one request per file on an object store.
    fragments = [
        CHECKED_PARQUET.make_fragment(p.path, filesystem=fs, file_size=p.size_bytes) for p in parts
    ]
    dataset = ds.FileSystemDataset(fragments, schema.METRICS, CHECKED_PARQUET, fs)
    table = dataset.to_table(columns=[*columns, "__filename"])
    rank = pc.index_in(table.column("__filename"), value_set=pa.array(ranked))
    assert rank.null_count == 0, "a row came from a file not in the listing"
    return table.drop_columns(["__filename"]).append_column(RANK, rank)


def _empty(columns: list[str]) -> pa.Table:
    return (
        schema.METRICS.empty_table().select(columns).append_column(RANK, pa.array([], pa.int32()))
    )


def latest_per_step(table: pa.Table, keys: list[str]) -> pa.Table:
    """One row per `keys` (e.g. run_id, step), from the highest attempt, then the newest
    file; sorted by `keys`. `table` must hold `keys`, `attempt` and RANK."""
    order = [(k, "ascending") for k in keys]
    order += [(k, "descending") for k in ("attempt", RANK) if k not in keys]
    table = table.sort_by(order)
    n = table.num_rows
    if n <= 1:
        return table
    same = None
    for key in keys:
        column = table.column(key)
        equal = pc.equal(column.slice(1), column.slice(0, n - 1))
        same = equal if same is None else pc.and_(same, equal)
    same = pc.fill_null(same, False)  # a null key (a file lacking it) equals nothing
    keep = pa.concat_arrays([pa.array([True]), pc.invert(same).combine_chunks()])
    return table.filter(keep)


# -- keyed parts ----------------------------------------------------------------------


class KeyedParts:
    """The parts in `directory` of rows with `table_schema`, one per run_id (see the
    module docstring).

    A part never changes once written (but for a merged part absorbing more under its
    own name, which its new size tells), so this reader keeps each one it has read (and
    each one this object wrote) and, on each look, only lists the directory and reads
    the parts it has not seen: a driver that asks run by run pays one listing a question.
    """

    def __init__(self, fs: pafs.FileSystem, directory: str, table_schema: pa.Schema):
        self.fs, self.directory, self.schema = fs, directory, table_schema
        # path -> (its size in bytes, its rows or None if unreadable); a part rewritten
        # under its own name (a merge absorbing into it) has a new size and is read again
        self._parts: dict[str, tuple[int, pa.Table | None]] = {}
        self._seen: tuple = ()  # the (path, size) pairs `_rows` and `_index` were made from
        self._rows = table_schema.empty_table()
        self._index: dict[str, int] = {}  # run_id -> its row in `_rows`
        self._unmerged = 0  # parts written by this object since it last merged

    def write(self, table: pa.Table, *, durable: bool) -> None:
        """Write `table` (rows of `schema`) as one new part. Atomic (storage.fsio): a killed
        writer leaves the whole part or none, never a part of the rows. Every
        `_MERGE_AFTER` parts, the parts are merged into one (`compact`)."""
        name = f"{time.time_ns():019d}-{uuid.uuid4().hex[:8]}.parquet"
        path = f"{self.directory}/{name}"
        table = table.replace_schema_metadata(self.schema.metadata)
        size = write_table_atomic(self.fs, path, table, fsync=durable, use_dictionary=False)
        self._parts[path] = (size, table)  # what we wrote is what a read would return
        self._unmerged += 1
        if self._unmerged >= _MERGE_AFTER:
            self.compact()

    def rows(self) -> pa.Table:
        """One row per run in any part (the newest part's), in part order."""
        return self._look()[0]

    def run_ids(self) -> set[str]:
        """The runs with a row in some part."""
        return set(self._look()[1])

    def has(self, run_id: str) -> bool:
        """Whether the run has a row in some part."""
        return run_id in self._look()[1]

    def row(self, run_id: str) -> dict | None:
        """The run's row in the parts, or None."""
        rows, index = self._look()
        k = index.get(run_id)
        return None if k is None else rows.slice(k, 1).to_pylist()[0]

    def compact(self) -> str | None:
        """Merge every readable part into one (unreadable ones are left, as evidence);
        the merged part's path, or None when there were fewer than two parts."""
        self._unmerged = 0
        paths = self._listing()
        readable = [p for p in paths if self._parts[p][1] is not None]
        if len(readable) < 2:
            return None
        rows = self._merged(readable)[0]
        newest = readable[-1]
        path = newest if newest.endswith("-compact.parquet") else f"{newest[:-8]}-compact.parquet"
        # Durable before the parts go: they may hold rows a caller flushed to disk.
        size = write_table_atomic(self.fs, path, rows, use_dictionary=False)
        self._parts[path] = (size, rows)
        for p in readable:
            if p != path and delete_quietly(self.fs, p):
                self._parts.pop(p, None)
        log.info("merged %d parts (%d runs) into %s", len(readable), rows.num_rows, path)
        return path

    def _look(self) -> tuple[pa.Table, dict[str, int]]:
        paths = self._listing()
        seen = tuple((p, self._parts[p][0]) for p in paths)
        if seen != self._seen:
            self._rows, self._index = self._merged(paths)
            self._seen = seen
        return self._rows, self._index

    def _listing(self) -> tuple[str, ...]:
        """The parts now in the directory, oldest first, each read (or known unreadable).

        Raises:
            StoreError: parts kept vanishing under the read (merges faster than reads).
        """
        for _ in range(_RELISTS):
            found = []
            for info in list_files(self.fs, self.directory):
                m = _KEYED_PART.match(info.base_name)
                if m is not None:  # else a writer's temporary file, or a stranger
                    found.append(((int(m[1]), m[2], bool(m[3])), info.path, info.size))
            found.sort()
            paths = tuple(path for _, path, _ in found)
            try:
                for _, path, size in found:
                    if self._parts.get(path, (None,))[0] != size:
                        self._parts[path] = (size, self._read(path))
            except _Vanished as gone:
                log.debug("part %s vanished during a read; listing again", gone)
                continue
            for path in set(self._parts) - set(paths):  # merged away
                del self._parts[path]
            return paths
        raise StoreError(
            f"parts under {self.directory} kept changing during {_RELISTS} reads",
            hint="retry the read; is something merging parts in a loop?",
        )

    def _read(self, path: str) -> pa.Table | None:
        try:
            table = read_table(self.fs, path)
        except StoreError as err:
            if isinstance(err, OSError):  # the store failed us, not the file: no verdict
                raise
            log.warning("skipping unreadable part %s: %s", path, err)
            return None
        if table is None:
            raise _Vanished(path)
        return schema.conform(table, self.schema, source=path)

    def _merged(self, paths: Iterable[str]) -> tuple[pa.Table, dict[str, int]]:
        tables = [t for t in (self._parts[p][1] for p in paths) if t is not None]
        if not tables:
            return self.schema.empty_table(), {}
        rows = pa.concat_tables(tables)
        index = {run_id: k for k, run_id in enumerate(rows.column("run_id").to_pylist())}
        if len(index) < rows.num_rows:  # a run in two parts: the newer part's row
            rows = rows.take(sorted(index.values()))
            index = {run_id: k for k, run_id in enumerate(rows.column("run_id").to_pylist())}
        return rows.combine_chunks(), index
