"""The event log (storage/events.py): appended, read back in order, and whole after any
interruption, on local disk and on S3 (moto's server)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from storage import events as events_module
from storage.events import EventLog, encode
from storage.store import Store
from tests.storage.conftest import BUCKET
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def _states(store: Store, run_id: str) -> list[str]:
    return store.events(run_id).column("state").to_pylist()


def test_events_of_many_runs_read_back_per_run_in_order(store_uri):
    store = Store(store_uri)
    for k in range(50):
        store.append_event(f"r{k % 5}", attempt=k // 5, state="running", durable=False)
    store.flush_events()
    other = Store(store_uri)  # another reader, as `orch status` is
    for k in range(5):
        assert other.events(f"r{k}").column("attempt").to_pylist() == list(range(10))
    store.append_event("r0", attempt=10, state="finished")
    assert other.last_event("r0")["state"] == "finished"  # what changed is read again
    assert len(other.events("r0")) == 11


def test_stores_in_one_process_share_one_session_so_order_holds(store_uri):
    a, b = Store(store_uri), Store(store_uri)
    a.append_event("x", attempt=0, state="running", durable=False)
    b.append_event("x", attempt=0, state="failed", durable=False)
    a.append_event("x", attempt=1, state="running")
    assert _states(Store(store_uri), "x") == ["running", "failed", "running"]


def test_a_new_session_reads_after_the_old_one(store_uri):
    store = Store(store_uri)
    store.append_event("x", attempt=0, state="running")
    store.close_events()  # a driver that ended; the next one starts a new session
    store.append_event("x", attempt=0, state="finished")
    assert _states(Store(store_uri), "x") == ["running", "finished"]


def test_a_torn_last_record_reads_back_as_the_events_before_it(tmp_path):
    store = Store(str(tmp_path / "exp"))
    for state in ("running", "preempted", "running"):
        store.append_event("x", attempt=0, state=state)
    store.close_events()
    (log,) = (tmp_path / "exp" / "events").iterdir()
    whole = log.read_bytes()
    record = encode({"run_id": "x", "attempt": 1, "state": "finished", "time_unix_s": 1.0})
    for cut in (1, 9, len(record) // 2, len(record) - 1):  # every way a write is cut short
        log.write_bytes(whole + record[:cut])
        assert _states(Store(str(tmp_path / "exp")), "x") == ["running", "preempted", "running"]


def test_a_segment_another_process_has_created_but_not_yet_written_reads_as_empty(tmp_path):
    store = Store(str(tmp_path / "exp"))
    store.append_event("x", attempt=0, state="running")
    store.close_events()
    # A new session's file between its creation (O_CREAT) and its first record.
    (tmp_path / "exp" / "events" / f"{'9' * 19}-0123abcd.log").touch()
    reader = Store(str(tmp_path / "exp"))
    assert _states(reader, "x") == ["running"]
    assert _states(reader, "x") == ["running"]  # and again, from what was read


def test_a_damaged_record_is_skipped_with_a_warning_and_the_rest_read(tmp_path, caplog):
    store = Store(str(tmp_path / "exp"))
    for state in ("running", "failed", "running", "finished"):
        store.append_event("x", attempt=0, state=state)
    store.close_events()
    (log,) = (tmp_path / "exp" / "events").iterdir()
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"failed", b"faileD")  # a flipped bit: the checksum disagrees
    log.write_bytes(b"".join(lines))
    with caplog.at_level(logging.WARNING, logger="storage"):
        assert _states(Store(str(tmp_path / "exp")), "x") == ["running", "running", "finished"]
    assert "damaged event record" in caplog.text and log.name in caplog.text


def test_a_writer_killed_while_appending_leaves_only_whole_records(tmp_path):
    exp = tmp_path / "exp"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from storage.store import Store
        store = Store({str(exp)!r})
        k = 0
        while True:
            store.append_event(f"r{{k % 7}}", attempt=k, state="running", detail="x" * (k % 300))
            if k % 50 == 0:
                store.flush_events()
            k += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        wait_until(
            lambda: sum(len(v) for v in _log(exp).by_run().values()) > 2000,
            timeout_s=120,
            what="the writer to append 2,000 events",
            proc=proc,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rows = _log(exp).rows()
    attempts = [r["attempt"] for r in rows]
    assert attempts == list(range(len(attempts)))  # a prefix: nothing lost inside, no dupes
    assert all(r["detail"] == "x" * (r["attempt"] % 300) for r in rows)


def test_group_commit_is_one_fsync_for_many_events(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "exp"))
    store.append_event("warm", attempt=0, state="running")  # the session file exists
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(events_module.os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    for k in range(100):
        store.append_event(f"r{k}", attempt=0, state="finished", durable=False)
    assert calls == []  # appended, in the file, not yet flushed to disk
    assert len(Store(str(tmp_path / "exp")).event_states()) == 101  # yet visible to readers
    store.flush_events()
    assert len(calls) == 1
    store.flush_events()  # nothing new: no fsync
    assert len(calls) == 1
    # Starts a power loss may drop (the run just starts again) cost no fsync on their own;
    # one event that must survive brings them all to disk with it.
    for k in range(10):
        store.append_event(
            f"r{k}", attempt=1, state="running", durable=False, must_survive_power_loss=False
        )
    store.flush_events()
    assert len(calls) == 1
    store.append_event("r0", attempt=1, state="failed", durable=False)
    store.flush_events()
    assert len(calls) == 2


def test_on_s3_events_appear_at_each_flush_and_a_closed_session_is_one_object(s3_uri):
    store_uri = s3_uri
    store = Store(store_uri)
    reader = Store(store_uri)
    for flush in range(3):
        for k in range(4):
            store.append_event(f"r{k}", attempt=flush, state="running", durable=False)
        assert len(_objects(store)) == flush  # held in memory until the flush puts them
        assert len(reader.event_states()) == 4  # though this process sees them already
        store.flush_events()
    objects = _objects(store)
    assert len(objects) == 3
    store.close_events()
    (merged,) = _objects(store)
    assert "-upto-00000003" in merged
    assert reader.events("r2").column("attempt").to_pylist() == [0, 1, 2]


def test_on_s3_a_merge_cut_short_duplicates_nothing(s3_uri):
    store_uri = s3_uri
    store = Store(store_uri)
    for k in range(2):
        store.append_event("x", attempt=k, state="running")
    # The merged object written, the pieces not yet deleted: a kill in between.
    pieces = _objects(store)
    data = b"".join(store.fs.open_input_stream(p).read() for p in pieces)
    session = pieces[0].rsplit("/", 1)[1].rsplit("-", 1)[0]
    with store.fs.open_output_stream(f"{store.root}/events/{session}-upto-00000002.log") as out:
        out.write(data)
    assert Store(store_uri).events("x").column("attempt").to_pylist() == [0, 1]


@pytest.fixture
def s3_uri(s3_endpoint):
    """A fresh experiment on S3 only (local files are appended in place, not merged)."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}/exp?endpoint_override={s3_endpoint}&scheme=http"


def _log(exp: Path) -> EventLog:
    store = Store(str(exp))
    return EventLog(store.fs, store.root)


def _objects(store: Store) -> list[str]:
    from storage.fsio import list_files

    return sorted(i.path for i in list_files(store.fs, f"{store.root}/events"))


def test_events_of_many_runs_go_to_one_file(tmp_path):
    # What made the per-run events.parquet costly: a file rewritten per event.
    store = Store(str(tmp_path / "exp"))
    for k in range(200):
        store.append_event(f"r{k}", attempt=0, state="running", durable=False)
    store.flush_events()
    assert len(list((tmp_path / "exp" / "events").iterdir())) == 1
    assert not (tmp_path / "exp" / "runs").exists()  # no file per run, as before
