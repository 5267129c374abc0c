"""Run summaries: the one row per run that marks it ended, and what every reader reads.

A worker in its own process (a real run) writes its own `runs/<run_id>/summary.parquet`;
a backend that ends many runs at once in the driver's process (the simulated one)
group-commits their rows as one summary part (`write_many`, storage.parts.KeyedParts
under `summaries/`), one file for thousands of runs instead of one each. Every reader
(`row`, `rows`, `rebuild`, hence `orch status` and resume) reads both, one row per run:
the run's own file where it has one, else its row in the newest part holding it.
Experiments from before summary parts have none, and read as they always did.
`summary.parquet` at the experiment's root is all of them, rebuilt (`rebuild`) when a
study's runs have ended. `storage.store.Store` reaches these through its methods.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from storage import schema
from storage.errors import StoreError
from storage.fsio import list_files, read_table, write_table_atomic
from storage.names import check_name, is_name
from storage.parts import CHECKED_PARQUET, SUMMARY_PARTS_DIR, KeyedParts

log = logging.getLogger(__name__)

_SCAN_FILES = 512  # run summaries read per dataset scan (see `Summaries.rows`)
_SCAN_FROM = 64  # runs from which `Summaries.rows_of` scans every summary at once


class Summaries:
    """The summary rows of the experiment at `root` on filesystem `fs`."""

    def __init__(self, fs, root: str):
        self.fs, self.root = fs, root
        self._parts = KeyedParts(fs, f"{root}/{SUMMARY_PARTS_DIR}", schema.SUMMARY)

    def write(self, row: Mapping[str, Any], *, durable: bool = True) -> None:
        """Store a run's summary row as its own file: the mark that it ended, which resume
        trusts.

        Args:
            durable: flush it to disk before returning, so it survives a power loss (a
                killed process never leaves it torn either way).
        """
        table = _summary_table([row])
        path = f"{self.root}/runs/{row['run_id']}/summary.parquet"
        write_table_atomic(self.fs, path, table, fsync=durable)

    def write_many(self, rows: Sequence[Mapping[str, Any]], *, durable: bool = True) -> None:
        """Store many runs' summary rows at once, as one summary part (group commit): each
        run is ended, for every reader, once this returns, and a killed process leaves
        all of the rows or none.

        Args:
            durable: as for `write`, one fsync for all the rows.
        """
        if rows:
            self._parts.write(_summary_table(rows), durable=durable)

    def row(self, run_id: str) -> dict[str, Any] | None:
        """The run's summary row: its own file's, else its row in the summary parts; None
        if it has none yet. An unreadable file is logged as a warning and counts as none
        (the run then counts as unfinished and is run again)."""
        path = f"{self.root}/runs/{check_name(run_id, what='run')}/summary.parquet"
        try:
            table = read_table(self.fs, path)
        except StoreError as err:
            log.warning("ignoring the summary of run %s: %s", run_id, err)
            table = None
        if table is None or table.num_rows == 0:
            return self._parts.row(run_id)
        return schema.conform(table, schema.SUMMARY, source=path).to_pylist()[0]

    def rows(self) -> pa.Table:
        """Every run's summary row, sorted by run_id, from two listings and one scan
        (thousands of runs cost one read, not one each): each run's own file, and the
        rows of runs without one in the summary parts. Runs whose summary file is
        unreadable are left out, with a warning."""
        own = self._own_rows()
        parts = self._parts.rows()
        if parts.num_rows:
            have = pa.array(own.column("run_id").to_pylist() if own.num_rows else [], pa.string())
            parts = parts.filter(pc.invert(pc.is_in(parts.column("run_id"), value_set=have)))
            own = pa.concat_tables([own, parts])
        return own.sort_by("run_id").replace_schema_metadata(schema.SUMMARY.metadata)

    def _own_rows(self) -> pa.Table:
        """The rows of `runs/<run_id>/summary.parquet`, in one listing and one scan."""
        runs_dir = f"{self.root}/runs"
        paths = [  # runs/<run_id>/summary.parquet, in one listing
            i.path
            for i in list_files(self.fs, runs_dir, recursive=True)
            if i.base_name == "summary.parquet"
            and (run := i.path[len(runs_dir) + 1 :].split("/"))[1:] == ["summary.parquet"]
            and is_name(run[0])
        ]
        if not paths:
            return schema.SUMMARY.empty_table()
        try:
            # A few hundred files per scan: one dataset over ten thousand tiny files kept
            # about 60 KB of native memory per file (300 MB at 5,000) for the table's life.
            return pa.concat_tables(
                ds.dataset(
                    paths[k : k + _SCAN_FILES],
                    schema=schema.SUMMARY,
                    format=CHECKED_PARQUET,
                    filesystem=self.fs,
                )
                .to_table()
                .combine_chunks()
                for k in range(0, len(paths), _SCAN_FILES)
            )
        except (pa.ArrowException, OSError) as err:
            log.debug("one scan of %d run summaries failed (%s); one by one", len(paths), err)
            rows = [self._own_row(p) for p in paths]
            return pa.Table.from_pylist([r for r in rows if r is not None], schema=schema.SUMMARY)

    def _own_row(self, path: str) -> dict[str, Any] | None:
        try:
            table = read_table(self.fs, path)
        except StoreError as err:
            log.warning("ignoring the summary of run %s: %s", path.rsplit("/", 2)[-2], err)
            return None
        if table is None or table.num_rows == 0:
            return None
        return schema.conform(table, schema.SUMMARY, source=path).to_pylist()[0]

    def rows_of(self, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The summary rows of `run_ids` that have a readable one, by run id: read one by
        one for a few runs, by one scan of every summary (`rows`) for many."""
        run_ids = list(run_ids)
        if len(run_ids) <= _SCAN_FROM:
            rows = ((r, self.row(r)) for r in run_ids)
            return {r: row for r, row in rows if row is not None}
        wanted = set(run_ids)
        return {r["run_id"]: r for r in self.rows().to_pylist() if r["run_id"] in wanted}

    def compact(self) -> None:
        """Merge the summary parts into one. Killed halfway it loses nothing and readers
        see no run twice (storage.parts); the next call finishes the job."""
        self._parts.compact()

    def rebuild(self) -> pa.Table:
        """Rewrite `summary.parquet` from every run's summary row (`rows`), and
        return it. The summary parts are merged into one first (the driver calls this
        when a study's runs have ended), so later reads list one part, not one per poll."""
        self.compact()
        table = self.rows()
        write_table_atomic(self.fs, f"{self.root}/summary.parquet", table)
        return table

    def table(self) -> pa.Table:
        """One row per ended run, as of the last `rebuild()` (storage.schema.SUMMARY).

        Raises:
            StoreError: summary.parquet is corrupt (rebuild it from the runs).
        """
        path = f"{self.root}/summary.parquet"
        table = read_table(self.fs, path)
        if table is None:
            return schema.SUMMARY.empty_table()
        return schema.conform(table, schema.SUMMARY, source=path)


def _summary_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Summary rows as a SUMMARY table, each checked to have a run_id and known columns."""
    for row in rows:
        if "run_id" not in row:
            raise StoreError("a run summary row needs a run_id")
        check_name(row["run_id"], what="run")
        unknown = set(row) - set(schema.SUMMARY.names)
        if unknown:
            raise StoreError(
                f"run {row['run_id']}: unknown summary columns {sorted(unknown)}",
                hint=f"columns are {', '.join(schema.SUMMARY.names)}",
            )
    return pa.Table.from_pylist([dict(r) for r in rows], schema=schema.SUMMARY)
