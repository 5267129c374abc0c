"""The experiment's event log: every run's state transitions, appended, never rewritten.

    <experiment>/events/<session>.log           local: one file per driver process
    <experiment>/events/<session>-<seq>.log     object stores: one object per flush
    <experiment>/events/<session>-upto-<seq>.log  object stores: a session's objects merged

Each record is one line, `<crc32 hex> <json>\\n`, so a reader can tell a whole record
from a torn one: a record cut short by a killed writer or a power loss (no newline, or a
checksum that does not match) is skipped, and everything before it reads back. Locally
each record is one `write()` to a file opened for appending, so a killed process never
loses one it returned from; `flush(durable=True)` fsyncs them all at once (group commit),
which is what made a per-event rewrite and fsync of `events.parquet` the driver's main
cost per run. Object stores cannot append: records wait in memory until `flush()` puts
them as one object, and `close()` merges a session's objects into one, so readers list
few objects however many runs a study has.

Sessions sort by their start time (their names begin with it in nanoseconds), and one
process shares one session per experiment, so events read back in the order they were
written as long as one driver writes at a time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
import zlib
from typing import Any

import pyarrow.fs as pafs

from storage.errors import StoreIOError
from storage.fsio import is_local, list_files, read_bytes, sync_dir, write_bytes_atomic

log = logging.getLogger(__name__)

DIR = "events"
_SEGMENT = re.compile(r"^(\d{19}-[0-9a-f]{8})(?:-(upto-)?(\d{8}))?\.log$")


def encode(row: dict[str, Any]) -> bytes:
    body = json.dumps(row, separators=(",", ":"), allow_nan=False)
    return f"{zlib.crc32(body.encode()):08x} {body}\n".encode()


def decode(data: bytes, *, source: str) -> tuple[list[dict[str, Any]], int]:
    """The whole records at the start of `data`, and how many bytes they take.

    A last line without its newline is left unread (a writer may be in the middle of it);
    a line whose checksum does not match is skipped with a warning naming `source`.
    """
    rows: list[dict[str, Any]] = []
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        crc, _, body = line.partition(b" ")
        try:
            ok = int(crc, 16) == zlib.crc32(body)
            row = json.loads(body) if ok else None
        except ValueError:
            ok, row = False, None
        if ok and isinstance(row, dict):
            rows.append(row)
        elif line:
            log.warning("%s: skipping a damaged event record", source)
    return rows, end


class _Writer:
    """This process's session of one experiment's log."""

    def __init__(self, fs: pafs.FileSystem, directory: str):
        self.fs, self.directory = fs, directory
        self.session = f"{time.time_ns():019d}-{uuid.uuid4().hex[:8]}"
        self.fd: int | None = None
        self.synced = True  # every record appended with `sync` is on disk
        self.seq = 0  # object stores: objects flushed so far
        self.pending: list[bytes] = []  # object stores: records not yet put
        self.lock = threading.Lock()

    @property
    def local(self) -> bool:
        return is_local(self.fs)

    def append(self, record: bytes, *, sync: bool = True) -> None:
        with self.lock:
            if not self.local:
                self.pending.append(record)
                return
            if self.fd is None:
                os.makedirs(self.directory, exist_ok=True)
                path = f"{self.directory}/{self.session}.log"
                self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                sync_dir(self.fs, self.directory)  # the file itself survives a power loss
            _write_all(self.fd, record)
            self.synced = self.synced and not sync

    def flush(self, *, durable: bool) -> None:
        with self.lock:
            if not self.local:
                if self.pending:
                    self.seq += 1
                    path = f"{self.directory}/{self.session}-{self.seq:08d}.log"
                    write_bytes_atomic(self.fs, path, b"".join(self.pending))
                    self.pending.clear()
            elif durable and not self.synced and self.fd is not None:
                os.fsync(self.fd)
                self.synced = True

    def close(self) -> None:
        """Flush; on an object store merge this session's objects into one."""
        self.flush(durable=True)
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            if self.local or self.seq < 2:
                return
            pieces = [
                f"{self.directory}/{self.session}-{k:08d}.log" for k in range(1, self.seq + 1)
            ]
            data = b"".join(read_bytes(self.fs, p) or b"" for p in pieces)
            # Written before the pieces go: readers ignore pieces an `upto` object covers,
            # so a kill between the two steps duplicates nothing.
            merged = f"{self.directory}/{self.session}-upto-{self.seq:08d}.log"
            write_bytes_atomic(self.fs, merged, data)
            for p in pieces:
                self.fs.delete_file(p)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# One session per (process, experiment): Store objects made anywhere in the driver share
# it, so their events keep their order. Keyed by pid too: a forked child starts its own.
_WRITERS: dict[tuple[int, str], _Writer] = {}
_WRITERS_LOCK = threading.Lock()


class EventLog:
    """Read and append the log in `<root>/events` of filesystem `fs`."""

    def __init__(self, fs: pafs.FileSystem, root: str):
        self.fs = fs
        self.directory = f"{root}/{DIR}"
        self._read: dict[str, tuple[int, list[dict[str, Any]]]] = {}  # path -> (bytes, rows)
        self._grouped: dict[str, list[dict[str, Any]]] = {}
        self._grouped_key: tuple = ()

    def _writer(self, *, create: bool) -> _Writer | None:
        key = (os.getpid(), self.directory)
        with _WRITERS_LOCK:
            writer = _WRITERS.get(key)
            if writer is None and create:
                writer = _WRITERS[key] = _Writer(self.fs, self.directory)
            return writer

    def append(self, row: dict[str, Any], *, sync: bool = True) -> None:
        """Append one record (on disk at once locally; fsynced only by `flush`).

        Args:
            sync: the next durable `flush` must fsync for this record; False for a record
                a power loss may drop (an fsync per poll for those alone was, at thousands
                of short runs, the loop's largest cost after the rewrites it replaced).
        """
        try:
            self._writer(create=True).append(encode(row), sync=sync)
        except OSError as err:
            raise StoreIOError(
                f"cannot append to the event log in {self.directory}: {err}",
                hint="nothing stored earlier was changed; free space or fix access, then retry",
            ) from err

    def flush(self, *, durable: bool = True) -> None:
        """Make what was appended visible to other processes, and with `durable` survive
        a power loss: one fsync (or one object) for every record since the last flush."""
        writer = self._writer(create=False)
        if writer is None:
            return
        try:
            writer.flush(durable=durable)
        except OSError as err:
            raise StoreIOError(f"cannot flush the event log in {self.directory}: {err}") from err

    def close(self) -> None:
        key = (os.getpid(), self.directory)
        with _WRITERS_LOCK:
            writer = _WRITERS.pop(key, None)
        if writer is not None:
            writer.close()

    def rows(self) -> list[dict[str, Any]]:
        """Every record, oldest first."""
        return [row for _, rows in self._segments() for row in rows]

    def by_run(self) -> dict[str, list[dict[str, Any]]]:
        """Every run's records, oldest first. Only what changed since the last call is
        read (a local segment from where the last read stopped, an object once), and the
        grouping is redone only when something did, so a reader asking run by run over
        thousands of runs pays for one listing per question."""
        segments = self._segments()
        key = tuple(k for k, _ in segments)
        if key != self._grouped_key:
            runs: dict[str, list[dict[str, Any]]] = {}
            for _, rows in segments:
                for row in rows:
                    runs.setdefault(row.get("run_id"), []).append(row)
            self._grouped, self._grouped_key = runs, key
        return self._grouped

    def _segments(self) -> list[tuple[tuple, list[dict[str, Any]]]]:
        """(what was read, its records) per segment, in order."""
        segments = []
        for info in list_files(self.fs, self.directory):
            m = _SEGMENT.match(info.base_name)
            if m is not None:  # else a temporary file, or a stranger
                segments.append((m[1], int(m[3] or 0), bool(m[2]), info))
        merged = {s: seq for s, seq, upto, _ in segments if upto}
        out = []
        for session, seq, upto, info in sorted(segments, key=lambda s: (s[0], s[1], not s[2])):
            if not upto and seq and seq <= merged.get(session, 0):
                continue  # already in the session's merged object
            rows = self._segment(info)
            out.append(((info.path, self._read[info.path][0]), rows))
        writer = self._writer(create=False)
        if writer is not None and writer.pending:  # this process's unflushed records
            pending = [row for r in writer.pending for row in decode(r, source="memory")[0]]
            out.append((("memory", writer.seq, len(pending)), pending))
        return out

    def _segment(self, info: pafs.FileInfo) -> list[dict[str, Any]]:
        # Kept from the first sight on, even of an empty file: another process's segment
        # exists empty between its creation and its first record, and the caller reads
        # back how far each segment was read (a reader under load once failed there).
        done, rows = self._read.setdefault(info.path, (0, []))
        if info.size is not None and info.size == done:
            return rows
        if is_local(self.fs):
            with open(info.path, "rb") as f:
                f.seek(done)
                data = f.read()
        else:
            data = (read_bytes(self.fs, info.path) or b"")[done:]
        new, used = decode(data, source=info.path)
        rows.extend(new)
        self._read[info.path] = (done + used, rows)
        return rows
