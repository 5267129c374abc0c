"""Store: one experiment's directory on any pyarrow filesystem.

Layout (DESIGN.md, Experiment store):

    <experiment>/plan.yaml                      copy of the submitted plan
    <experiment>/ledger.parquet                 budget per stage (storage.schema.LEDGER)
    <experiment>/runs/<run_id>/spec.json        the RunSpec
    <experiment>/specs/<time_ns>-<token>.parquet  many runs' specs, written at once
    <experiment>/events/*.log                   every run's state transitions (storage.events)
    <experiment>/runs/<run_id>/summary.parquet  one row, written when the run ends
    <experiment>/summaries/<time_ns>-<token>.parquet  many runs' rows, written at once
    <experiment>/runs/<run_id>/logs/attempt-<k>.rank<r>.log   each rank's log, per attempt
    <experiment>/metrics/run_id=<id>/part-*.parquet, compact-*.parquet  (storage.parts)
    <experiment>/summary.parquet                all runs' summary rows, rebuilt from the two above
    <experiment>/fits/<fit_id>.json
    <experiment>/checkpoints/<run_id>/

The store is the driver's only state: what is finished is read from here, never kept
in memory across processes. Every file is written whole (storage.fsio), so a reader in
another process sees each file complete or not at all.

A run's summary row marks it ended: the run's own `runs/<run_id>/summary.parquet`, or
its row in a summary part that a backend ending many runs at once group-commits
(storage.summaries, which every summary reader goes through).

Specs likewise: a round of many runs (`write_specs`, from `_SPEC_PART_FROM` runs) stores
its specs as one spec part, a smaller one (or a single `write_spec`) a spec.json per run;
`read_spec` and `run_ids` read both, the run's own file first.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from storage import schema
from storage.compaction import compact_run
from storage.errors import StoreError
from storage.events import EventLog
from storage.fsio import (
    exists,
    is_local,
    join_uri,
    list_files,
    read_bytes,
    read_table,
    redact,
    resolve,
    write_bytes_atomic,
    write_table_atomic,
)
from storage.names import check_name, is_name
from storage.parts import (
    KEYS,
    RANK,
    SPEC_PARTS_DIR,
    KeyedParts,
    latest_per_step,
    read_parts,
)
from storage.summaries import Summaries
from storage.writer import MetricsWriter

log = logging.getLogger(__name__)

_PARALLEL_REQUESTS = 16  # object store requests `write_specs` keeps in flight
# Specs written at once from which they go in one spec part: a file per run costs 0.1 to
# 1 ms on a local disk (most of a 10,000-run simulated study's driver time), nothing for a
# few hundred runs, whose own directories are where people look for them.
_SPEC_PART_FROM = 256
_LOG_NAME = re.compile(r"^attempt-(\d+)\.rank(\d+)\.log$")


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:  # also UnicodeDecodeError
        return False


def experiment_uri(store_uri: str, name: str) -> str:
    """The URI of experiment `name` under `store_uri`, keeping any S3 query options.

    `experiment_uri("s3://b/exps?endpoint_override=h:9000", "x")` is
    `"s3://b/exps/x?endpoint_override=h:9000"`.

    Raises:
        StoreError: `name` could escape `store_uri` (see `check_name`).
    """
    return join_uri(store_uri, check_name(name, what="experiment"))


class Store:
    """The experiment at `uri`: a local path, `file:///abs/path`, or `s3://bucket/prefix`.

    For an S3-compatible endpoint put pyarrow's options in the query string,
    `s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http`, or set the standard
    AWS_ENDPOINT_URL; credentials come from the standard AWS environment variables (or
    the SDK's other usual sources), never from the URI. The URI is all a worker process
    needs to open the same store.
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = resolve(uri)
        self._events = EventLog(self.fs, self.root)
        self._summaries = Summaries(self.fs, self.root)
        self._spec_parts = KeyedParts(self.fs, f"{self.root}/{SPEC_PARTS_DIR}", schema.SPECS)
        self._whole_specs: set[str] = set()  # runs whose spec.json this object wrote or read whole

    def __repr__(self) -> str:
        return f"Store({redact(self.uri)!r})"

    @classmethod
    def existing(cls, uri: str) -> Store:
        """The experiment at `uri`, which must already exist (readers never create one).

        Raises:
            StoreError: nothing is stored at `uri`.
        """
        store = cls(uri)
        hint = "give the experiment directory `orch submit` printed, e.g. experiments/local"
        if not exists(store.fs, store.root):
            raise StoreError(f"{redact(uri)}: no such experiment", hint=hint)
        # Something is there; an experiment has its plan, its runs or its summary (a
        # directory holding none of them, say /etc, would read as an empty study).
        marks = ("plan.yaml", "runs", "summary.parquet")
        if not any(exists(store.fs, f"{store.root}/{m}") for m in marks):
            raise StoreError(
                f"{redact(uri)} is not an experiment (no plan.yaml, runs/ or summary.parquet)",
                hint=hint,
            )
        return store

    # -- layout ---------------------------------------------------------------------
    def _run_dir(self, run_id: str) -> str:
        return f"{self.root}/runs/{check_name(run_id, what='run')}"

    @property
    def metrics_dir(self) -> str:
        return f"{self.root}/metrics"

    def checkpoint_dir(self, run_id: str) -> str:
        """Local path of a run's checkpoints, where DeepSpeed saves them directly.

        Raises:
            StoreError: the store is on object storage, which DeepSpeed cannot write: its
                checkpoints pass through a local staging directory (storage.checkpoints).
        """
        if not is_local(self.fs):
            raise StoreError(
                f"run {run_id}: a store on object storage ({redact(self.uri)}) has no local "
                "checkpoint directory",
                hint="stage and transfer checkpoints with storage.checkpoints",
            )
        return f"{self.root}/checkpoints/{check_name(run_id, what='run')}"

    # -- plan and specs -------------------------------------------------------------
    def write_plan(self, text: str) -> None:
        write_bytes_atomic(self.fs, f"{self.root}/plan.yaml", text.encode())

    def write_spec(self, run_id: str, spec_json: str) -> None:
        """Store a run's spec once, as its own spec.json; one that is not whole JSON (a
        copy of the experiment cut short, a power loss, a damaged disk) is replaced, not
        kept forever, unless a spec part holds the run's spec (`read_spec` reads it there).

        Not flushed to disk: a spec is a pure function of the plan, so whatever a power
        loss leaves is rewritten by the next submit or resume. A run whose spec this
        object already wrote or found whole costs nothing (the driver stores each spec
        when it opens a round and again when it runs it).
        """
        if run_id in self._whole_specs:
            return
        path = f"{self._run_dir(run_id)}/spec.json"
        old = read_bytes(self.fs, path)
        if (old is not None and _is_json_object(old)) or self._spec_parts.has(run_id):
            self._whole_specs.add(run_id)  # readers find it whole there (see `read_spec`)
            return
        if old is not None:
            log.warning("run %s: replacing its damaged spec.json", run_id)
        write_bytes_atomic(self.fs, path, spec_json.encode(), fsync=False)
        self._whole_specs.add(run_id)

    def write_specs(self, specs: Mapping[str, str]) -> None:
        """Store many (run_id, spec JSON): from `_SPEC_PART_FROM` not stored yet, as one
        spec part (one file, not one per run); fewer, as `write_spec` each (on an object
        store side by side, as each is a request or two)."""
        new = {r: text for r, text in specs.items() if r not in self._whole_specs}
        if len(new) >= _SPEC_PART_FROM:
            in_parts = self._spec_parts.run_ids()
            missing = {r: text for r, text in new.items() if r not in in_parts}
            if len(missing) >= _SPEC_PART_FROM:
                for run_id in missing:
                    check_name(run_id, what="run")
                rows = {"run_id": list(missing), "spec_json": list(missing.values())}
                # Not flushed to disk, as spec.json: a spec is rewritten by the next submit.
                self._spec_parts.write(pa.table(rows, schema=schema.SPECS), durable=False)
                # Arrow's allocator keeps what building and encoding a large part freed
                # (~40 MB at 10,000 specs) for reuse that never comes: hand it back.
                pa.default_memory_pool().release_unused()
                missing = {}
            self._whole_specs.update(r for r in new if r not in missing)
            new = missing
        if is_local(self.fs) or len(new) < 2:
            for run_id, text in new.items():
                self.write_spec(run_id, text)
            return
        with ThreadPoolExecutor(max_workers=_PARALLEL_REQUESTS) as pool:
            list(pool.map(lambda item: self.write_spec(*item), new.items()))

    def read_spec(self, run_id: str) -> dict[str, Any]:
        """The run's spec as a dict: its own spec.json, else its row in the spec parts
        (ValueError if it has only a spec.json that is not whole JSON)."""
        data = read_bytes(self.fs, f"{self._run_dir(run_id)}/spec.json")
        if data is None or not _is_json_object(data):
            row = self._spec_parts.row(run_id)
            if row is not None:
                return json.loads(row["spec_json"])
        if data is None:
            raise StoreError(f"run {run_id} has no spec.json in {redact(self.uri)}")
        return json.loads(data)

    def run_ids(self) -> list[str]:
        """Every run with a directory under runs/ or a spec in a spec part, sorted."""
        selector = pafs.FileSelector(f"{self.root}/runs", allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        dirs = {
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory and is_name(i.base_name)  # skip strays
        }
        return sorted(dirs | self._spec_parts.run_ids())

    # -- events ---------------------------------------------------------------------
    def events(self, run_id: str) -> pa.Table:
        """The run's state transitions, oldest first (storage.schema.EVENTS)."""
        rows = self._events.by_run().get(run_id, [])
        return pa.Table.from_pylist(rows, schema=schema.EVENTS)

    def event_states(self) -> dict[str, list[str]]:
        """Every run's states, oldest first, from one read of the log."""
        return {r: [e["state"] for e in rows] for r, rows in self._events.by_run().items()}

    def append_event(
        self,
        run_id: str,
        *,
        attempt: int,
        state: str,
        detail: str = "",
        durable: bool = True,
        must_survive_power_loss: bool = True,
    ) -> None:
        """Record a state transition in the experiment's event log (storage.events).

        The record is handed to the operating system before this returns, so a killed
        process never loses it; it survives a power loss once flushed.

        Args:
            durable: flush it to disk now. The driver passes False and calls
                `flush_events` once for all the transitions of one loop turn (group
                commit) before it acts on them.
            must_survive_power_loss: False lets `flush_events` skip its fsync when only
                such events are new (a run's start: after a power loss it simply starts
                again); the event still reaches the operating system at once.
        """
        self._events.append(
            {
                "run_id": check_name(run_id, what="run"),
                "attempt": int(attempt),
                "state": state,
                "time_unix_s": time.time(),
                "detail": detail,
            },
            sync=must_survive_power_loss,
        )
        if durable:
            self._events.flush(durable=True)

    def flush_events(self, *, durable: bool = True) -> None:
        """Make the events appended so far visible to other processes (object stores
        hold them until now) and, with `durable`, safe from a power loss."""
        self._events.flush(durable=durable)

    def close_events(self) -> None:
        """Flush the events and end this process's session of the log (on object stores
        its objects are merged into one). Appending again starts a new session."""
        self._events.close()

    def last_event(self, run_id: str) -> dict[str, Any] | None:
        rows = self._events.by_run().get(run_id)
        return dict(rows[-1]) if rows else None

    # -- logs -----------------------------------------------------------------------
    def log_path(self, run_id: str, *, attempt: int, rank: int) -> str:
        """Path (in this store's filesystem) of one rank's log of one attempt:
        `runs/<run_id>/logs/attempt-<k>.rank<r>.log`."""
        return f"{self._run_dir(run_id)}/logs/attempt-{int(attempt)}.rank{int(rank)}.log"

    def log_files(self, run_id: str) -> list[str]:
        """A run's log files, as paths a user can open (local) or copy (`s3://...`),
        oldest attempt first, rank 0 first within an attempt."""
        infos = list_files(self.fs, f"{self._run_dir(run_id)}/logs")
        found = [
            (int(m[1]), int(m[2]), i.path)
            for i in infos
            if (m := _LOG_NAME.match(i.base_name)) is not None
        ]
        prefix = "" if is_local(self.fs) else f"{self.fs.type_name}://"
        return [prefix + path for _, _, path in sorted(found)]

    def upload_log(self, run_id: str, *, attempt: int, rank: int, data: bytes) -> str:
        """Store a log written elsewhere (a worker logs to local disk when the store is
        on object storage, and uploads it whole at the end of the attempt)."""
        path = self.log_path(run_id, attempt=attempt, rank=rank)
        write_bytes_atomic(self.fs, path, data)
        return path

    # -- metrics --------------------------------------------------------------------
    def metrics_writer(self, run_id: str, *, attempt: int, **options: Any) -> MetricsWriter:
        """A writer for the rows of one attempt; options as in `MetricsWriter`."""
        check_name(run_id, what="run")
        return MetricsWriter(self.fs, self.metrics_dir, run_id=run_id, attempt=attempt, **options)

    def metrics(
        self, run_ids: Iterable[str] | None = None, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Metric rows sorted by (run_id, step), one per (run_id, step): where a retried
        attempt logged a step again, its row replaces the earlier attempt's.

        Only the directories of `run_ids` are listed and only `columns` are read, so one
        run's curve costs the same in an experiment of ten runs or ten thousand. A corrupt
        or truncated part is skipped with a warning naming it.

        Args:
            run_ids: runs to read (a single id is accepted too); None reads every run.
            columns: METRICS columns to return, in this order; None returns all.
        """
        if isinstance(run_ids, str):
            run_ids = [run_ids]
        if run_ids is not None:
            run_ids = [check_name(r, what="run") for r in run_ids]
        if columns is not None:
            columns = list(columns)
            unknown = [c for c in columns if c not in schema.METRICS.names]
            if unknown:
                raise StoreError(
                    f"unknown metrics columns {unknown}",
                    hint=f"columns are {', '.join(schema.METRICS.names)}",
                )
        wanted = list(dict.fromkeys([*KEYS, *(columns or schema.METRICS.names)]))
        read = read_parts(self.fs, self.metrics_dir, run_ids, wanted)
        table = latest_per_step(read.table, ["run_id", "step"]).drop_columns([RANK])
        if columns is not None:
            return table.select(columns)
        return table.select(schema.METRICS.names).replace_schema_metadata(schema.METRICS.metadata)

    def compact_run(self, run_id: str) -> str | None:
        """Merge a run's metric part files into one file; returns its path (None: no rows).

        Call it when a run has ended. Safe to call twice, concurrently, or while readers
        read; killed halfway it loses nothing and readers see no row twice (see
        storage.compaction); the next call finishes the job.
        """
        return compact_run(self.fs, self.metrics_dir, check_name(run_id, what="run"))

    def compact_runs(self, run_ids: Iterable[str]) -> None:
        """`compact_run` for each of `run_ids` that has metrics, found by one listing (a
        study of thousands of runs without curves lists one directory, not one a run)."""
        selector = pafs.FileSelector(self.metrics_dir, allow_not_found=True)
        listed = {i.base_name for i in self.fs.get_file_info(selector)}
        for run_id in run_ids:
            if f"run_id={run_id}" in listed:
                self.compact_run(run_id)

    # -- summary (storage.summaries) ------------------------------------------------
    def write_run_summary(self, row: Mapping[str, Any], *, durable: bool = True) -> None:
        """Store a run's summary row as its own file: the mark that it ended."""
        self._summaries.write(row, durable=durable)

    def write_run_summaries(
        self, rows: Sequence[Mapping[str, Any]], *, durable: bool = True
    ) -> None:
        """Store many runs' summary rows at once, as one summary part (group commit)."""
        self._summaries.write_many(rows, durable=durable)

    def run_summary(self, run_id: str) -> dict[str, Any] | None:
        """The run's summary row, or None if it has none yet."""
        return self._summaries.row(run_id)

    def run_summaries(self) -> pa.Table:
        """Every run's summary row, sorted by run_id."""
        return self._summaries.rows()

    def run_summaries_of(self, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The summary rows of `run_ids` that have a readable one, by run id."""
        return self._summaries.rows_of(run_ids)

    def compact_summaries(self) -> None:
        """Merge the summary parts into one."""
        self._summaries.compact()

    def rebuild_summary(self) -> pa.Table:
        """Rewrite `summary.parquet` from every run's summary row, and return it."""
        return self._summaries.rebuild()

    def summary(self) -> pa.Table:
        """One row per ended run, as of the last `rebuild_summary()`."""
        return self._summaries.table()

    # -- ledger ---------------------------------------------------------------------
    def write_ledger(self, table: pa.Table | Sequence[Mapping[str, Any]]) -> None:
        """Replace `ledger.parquet` with `table` (storage.schema.LEDGER columns; rows as
        mappings are accepted too). Only the driver writes it."""
        rows = None if isinstance(table, pa.Table) else [dict(r) for r in table]
        names = set(table.column_names) if rows is None else {k for r in rows for k in r}
        unknown = names - set(schema.LEDGER.names)
        if unknown or (rows is None and "stage" not in names):
            raise StoreError(
                f"ledger columns {sorted(unknown) or sorted(names)} do not fit",
                hint=f"columns are {', '.join(schema.LEDGER.names)}; stage is required",
            )
        if rows is not None:
            table = pa.Table.from_pylist(rows, schema=schema.LEDGER)
        table = schema.conform(table, schema.LEDGER)
        write_table_atomic(self.fs, f"{self.root}/ledger.parquet", table)

    def ledger(self) -> pa.Table:
        path = f"{self.root}/ledger.parquet"
        table = read_table(self.fs, path)
        if table is None:
            return schema.LEDGER.empty_table()
        return schema.conform(table, schema.LEDGER, source=path)

    # -- fits -----------------------------------------------------------------------
    def fit_path(self, fit_id: str) -> str:
        return f"{self.root}/fits/{check_name(fit_id, what='fit')}.json"

    def write_fit(self, fit_id: str, record: Mapping[str, Any]) -> str:
        path = self.fit_path(fit_id)
        write_bytes_atomic(self.fs, path, json.dumps(record, indent=2, sort_keys=True).encode())
        return path

    def read_fit(self, fit_id: str) -> dict[str, Any]:
        path = self.fit_path(fit_id)
        data = read_bytes(self.fs, path)
        if data is None:
            raise StoreError(f"no fit {fit_id} in {redact(self.uri)}")
        try:
            return json.loads(data)
        except ValueError as err:
            raise StoreError(f"cannot read {path}: {err}", hint="the file is corrupt") from err

    def fit_ids(self) -> list[str]:
        files = list_files(self.fs, f"{self.root}/fits")
        return sorted(i.base_name[: -len(".json")] for i in files if i.base_name.endswith(".json"))

    def fits(self) -> pa.Table:
        """One row per stored fit (storage.schema.FITS), sorted by fit_id."""
        rows = []
        for fit_id in self.fit_ids():
            try:
                record = self.read_fit(fit_id)
            except StoreError as err:
                log.warning("skipping fit %s: %s", fit_id, err)
                continue
            rows.append(
                {
                    "fit_id": fit_id,
                    "form": record.get("form"),
                    "created_utc": record.get("created_utc"),
                    "n_obs": record.get("n_obs"),
                    "n_runs": len(record.get("run_ids") or ()),
                    "data_hash": record.get("data_hash"),
                    "reliable": record.get("reliable"),
                    "record_json": json.dumps(record, sort_keys=True),
                }
            )
        return pa.Table.from_pylist(rows, schema=schema.FITS)
