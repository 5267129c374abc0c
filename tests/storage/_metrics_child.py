"""Processes the crash and concurrency tests start, and often SIGKILL.

They fork from a forkserver that has already imported pyarrow and the store, so each
starts in milliseconds instead of seconds; each is still a separate process, with its
own writer thread and its own S3 client, killed with a real SIGKILL.

Each child's disk is made slow (every rename, compaction write and delete waits
`SLOW_S` first) so that kills at random times land inside each step of a write or a
compaction, not only between them; the logic under test is unchanged.

`stream` writes one row per step, paced like a fast training loop, and after each
`write()` returns stores how many steps it has handed over (`step + 1`) in an 8-byte
file through a shared mapping, so the parent knows exactly what a killed writer had
been given. `compact` compacts a run. Both report "ready" once set up and then the
seconds their work took. `summaries` group-commits batches of run summaries for ever
(merging the parts as a driver does), and stores how many batches were reported written.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import signal
import struct
import time

import pytest

import storage.compaction
import storage.parts
from storage.store import Store
from tests.waiting import wait_until

_PACE_ROWS, _PACE_S = 16, 0.002  # about 5,000 rows/s: many flushes per second
_PATIENCE_S = 120  # liveness bound for a child to report (a loaded 2-core machine)
SLOW_S = 0.004
_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["storage.store", "_metrics_child"])


def stream(uri, run, attempt, start, stop, flush_rows, max_pending, counter, conn) -> None:
    """Write steps start..stop-1 (forever if stop is None) for one attempt of `run`."""
    shared = None
    if counter is not None:
        with open(counter, "r+b") as f:
            shared = mmap.mmap(f.fileno(), 8)
    writer = Store(uri).metrics_writer(
        run, attempt=attempt, flush_rows=flush_rows, max_pending=max_pending
    )
    conn.send("ready")
    t0 = time.monotonic()
    step = start
    while stop is None or step < stop:
        writer.write({"step": step, "tokens": step * 4096, "loss": 10.0 / (1 + step)})
        if shared is not None:
            struct.pack_into("<q", shared, 0, step + 1)
        step += 1
        if step % _PACE_ROWS == 0:
            time.sleep(_PACE_S)
    writer.close()
    conn.send(time.monotonic() - t0)


def summaries(uri, start, batch_rows, counter, conn) -> None:
    """Write batches start, start + 1, ... of `batch_rows` summary rows each, one summary
    part per batch (runs `b<batch>-<k>`), for ever."""
    with open(counter, "r+b") as f:
        shared = mmap.mmap(f.fileno(), 8)
    store = Store(uri)
    conn.send("ready")
    batch = start
    while True:
        rows = [
            {"run_id": f"b{batch:06d}-{k:02d}", "status": "finished", "steps": batch}
            for k in range(batch_rows)
        ]
        store.write_run_summaries(rows)
        struct.pack_into("<q", shared, 0, batch + 1)  # reported: these runs ended
        batch += 1


def compact(uri, run, conn) -> None:
    store = Store(uri)
    conn.send("ready")
    t0 = time.monotonic()
    store.compact_run(run)
    conn.send(time.monotonic() - t0)


def _with_env(env, target, *args) -> None:
    os.environ.update(env)
    _slow(os, "replace")  # the rename of a finished temporary file into place
    _slow(storage.compaction, "write_table_atomic")
    _slow(storage.compaction, "delete_quietly")
    _slow(storage.parts, "write_table_atomic")  # a summary part, or a merge of them
    _slow(storage.parts, "delete_quietly")  # a merged summary part
    target(*args)


def _slow(module, name) -> None:
    real = getattr(module, name)

    def slow(*args, **kwargs):
        time.sleep(SLOW_S)
        return real(*args, **kwargs)

    setattr(module, name, slow)


class Child:
    """A started child process and the end of its pipe."""

    def __init__(self, target, *args):
        self._conn, child_conn = _CTX.Pipe(duplex=False)
        # The forkserver's environment is that of the first test to start a child: hand
        # each child today's (the S3 fixture's credentials) explicitly.
        env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        self.process = _CTX.Process(
            target=_with_env, args=(env, target, *args, child_conn), daemon=True
        )
        self.process.start()
        child_conn.close()
        assert self._recv("ready") == "ready"

    def _recv(self, what: str):
        # A child that dies before it reports ends the wait at once (its end of the pipe
        # closes: poll() is true and recv() finds no message), with its exit code.
        wait_until(
            lambda: self._conn.poll() or not self.process.is_alive(),
            timeout_s=_PATIENCE_S,
            what=f"the child to report {what}",
            seen=self._state,
            interval_s=0.01,
        )
        try:
            if self._conn.poll():
                return self._conn.recv()
        except EOFError:
            pass
        pytest.fail(f"the child ended before it reported {what}: {self._state()}")

    def _wait_exited(self, what: str) -> None:
        wait_until(
            lambda: not self.process.is_alive(),
            timeout_s=_PATIENCE_S,
            what=what,
            seen=self._state,
            interval_s=0.01,
        )

    def _state(self) -> str:
        alive = self.process.is_alive()
        return f"child pid {self.process.pid} " + (
            "still running" if alive else f"exited with code {self.process.exitcode}"
        )

    def kill(self) -> None:
        """SIGKILL, wherever the child is (a child that already finished is left be)."""
        self.process.kill()
        self._wait_exited("the child to exit on SIGKILL")
        assert self.process.exitcode in (0, -signal.SIGKILL), self._state()
        self._conn.close()

    def finish(self) -> float:
        """Wait for the child to end its work; the seconds the work took."""
        seconds = self._recv("the seconds its work took")
        self._wait_exited("the child to exit once it reported")
        assert self.process.exitcode == 0, self._state()
        self._conn.close()
        return seconds
