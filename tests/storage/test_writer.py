"""MetricsWriter: off the hot path, never drops rows, says clearly what went wrong."""

import sys
import threading

import pyarrow.fs as pafs
import pytest

from storage import writer as writer_module
from storage.errors import StoreError
from storage.store import Store
from storage.writer import MetricsWriter
from tests.waiting import run_child, wait_until

# Liveness bound for waits on background work (not a timing claim: see bench/ingest.py);
# generous, for a loaded 2-core machine.
_PATIENCE_S = 120


class _DiskHandler(pafs.FileSystemHandler):
    """A local disk whose writes can be stalled (`gate` cleared) or made to fail."""

    def __init__(self, root):
        self.fs = pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem())
        self.gate = threading.Event()
        self.gate.set()
        self.failures_left = 0
        self.opened_for_write = 0

    def open_output_stream(self, path, metadata):
        self.opened_for_write += 1
        self.gate.wait()
        if self.failures_left:
            self.failures_left -= 1
            raise OSError("simulated: the disk is full")
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        return self.fs.open_output_stream(path)

    def get_type_name(self):
        return "stallable-disk"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path)


@pytest.fixture
def disk(tmp_path):
    return _DiskHandler(tmp_path)


def _writer(disk, **options):
    return MetricsWriter(pafs.PyFileSystem(disk), "exp/metrics", run_id="r", attempt=0, **options)


def _stored_steps(disk) -> list[int]:
    store = Store(str(disk.fs.base_path.rstrip("/") + "/exp"))
    return store.metrics(["r"], columns=["step"]).column("step").to_pylist()


def _write_in_thread(writer, steps: range) -> tuple[threading.Thread, list[int]]:
    """Write one row per step in a thread of its own, as a training loop would; the thread
    and the steps whose write() has returned so far (what a failed wait reports)."""
    returned: list[int] = []

    def write_all() -> None:
        for step in steps:
            writer.write({"step": step})
            returned.append(step)

    thread = threading.Thread(target=write_all, daemon=True)
    thread.start()
    return thread, returned


def _wait_for_writes(done: threading.Thread, returned: list[int], what: str, disk) -> None:
    wait_until(
        lambda: not done.is_alive(),
        timeout_s=_PATIENCE_S,
        what=what,
        seen=lambda: (
            f"{len(returned)} write() calls returned; "
            f"{disk.opened_for_write} part files opened; disk gate open: {disk.gate.is_set()}"
        ),
    )


def test_write_does_not_wait_for_a_stalled_disk(disk):
    writer = _writer(disk, flush_rows=10, max_pending=3)
    disk.gate.clear()
    # Up to max_pending full buffers, plus the one filling, are taken while the disk is
    # stalled: the training step goes on.
    done, returned = _write_in_thread(writer, range(39))
    _wait_for_writes(done, returned, "39 writes to return while the disk is stalled", disk)
    assert _stored_steps(disk) == []
    disk.gate.set()
    writer.close()
    assert _stored_steps(disk) == list(range(39))


def test_writer_waits_rather_than_dropping_rows_when_the_disk_is_behind(disk):
    writer = _writer(disk, flush_rows=10, max_pending=2)
    disk.gate.clear()
    done, returned = _write_in_thread(writer, range(100))
    done.join(0.5)
    assert done.is_alive()  # blocked: two buffers waiting and the third one full
    disk.gate.set()
    _wait_for_writes(done, returned, "100 writes to return once the disk is back", disk)
    writer.close()
    assert _stored_steps(disk) == list(range(100))


def test_an_old_buffer_is_written_without_further_writes(tmp_path):
    store_dir = tmp_path / "exp"
    store = Store(str(store_dir))
    writer = store.metrics_writer("r", attempt=0, flush_rows=1000, flush_s=0.05)
    writer.write({"step": 7, "loss": 2.5})
    wait_until(
        lambda: store.metrics(["r"]).num_rows,
        timeout_s=_PATIENCE_S,
        what="the writer to store its one buffered row by itself (flush_s=0.05)",
        seen=lambda: f"no rows; files in the store: {sorted(p.name for p in store_dir.rglob('*'))}",
        interval_s=0.02,
    )
    assert store.metrics(["r"], columns=["step", "loss"]).to_pylist() == [{"step": 7, "loss": 2.5}]
    writer.close()


def test_a_transient_write_error_is_retried(disk, monkeypatch):
    monkeypatch.setattr(writer_module, "_RETRY_DELAYS_S", (0.0, 0.0))
    disk.failures_left = 2
    with _writer(disk, flush_rows=5) as writer:
        for step in range(10):
            writer.write({"step": step})
    assert _stored_steps(disk) == list(range(10))


def test_a_lasting_write_error_is_raised_with_the_rows_lost(disk, monkeypatch):
    monkeypatch.setattr(writer_module, "_RETRY_DELAYS_S", (0.0,))
    disk.failures_left = 10**6
    writer = _writer(disk, flush_rows=5)
    for step in range(3):
        writer.write({"step": step})
    with pytest.raises(StoreError, match=r"run r attempt 0: cannot write .* 3 rows are not stored"):
        writer.flush()
    with pytest.raises(StoreError, match="disk is full"):
        writer.write({"step": 4})
    with pytest.raises(StoreError, match="cannot write"):
        writer.close()


def test_a_row_of_the_wrong_type_fails_the_flush_naming_the_column(tmp_path):
    writer = Store(str(tmp_path / "exp")).metrics_writer("r", attempt=0)
    writer.write({"step": 1, "loss": "low"})
    with pytest.raises(StoreError, match="metric column 'loss'"):
        writer.close()


def test_rows_without_a_step_or_with_unknown_columns_are_refused(tmp_path):
    with Store(str(tmp_path / "exp")).metrics_writer("r", attempt=0) as writer:
        with pytest.raises(StoreError, match="needs a step"):
            writer.write({"loss": 1.0})
        with pytest.raises(StoreError, match=r"unknown columns \['run_id'\]"):
            writer.write({"step": 1, "run_id": "other"})  # the writer sets run_id itself


@pytest.mark.parametrize(
    "options", [{"flush_rows": 0}, {"flush_s": -1}, {"max_pending": 0}, {"flush_rows": 1.5}]
)
def test_writer_options_are_validated(tmp_path, options):
    with pytest.raises(StoreError, match="must be a number"):
        Store(str(tmp_path / "exp")).metrics_writer("r", attempt=0, **options)


def test_close_is_idempotent_and_writing_after_it_fails(tmp_path):
    store = Store(str(tmp_path / "exp"))
    writer = store.metrics_writer("r", attempt=0)
    writer.write({"step": 1})
    writer.close()
    writer.close()
    with pytest.raises(StoreError, match="closed"):
        writer.write({"step": 2})
    assert store.metrics(["r"]).num_rows == 1


def test_a_batch_becomes_one_part_after_the_buffered_rows(tmp_path):
    import pyarrow as pa

    store = Store(str(tmp_path / "exp"))
    with store.metrics_writer("r", attempt=3, flush_rows=100) as writer:
        writer.write({"step": 0, "loss": 9.0})
        writer.write_batch(pa.table({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0]}))
    table = store.metrics(["r"], columns=["step", "attempt", "loss"])
    assert table.column("loss").to_pylist() == [9.0, 3.0, 2.0, 1.0]
    assert set(table.column("attempt").to_pylist()) == {3}
    assert len(list((tmp_path / "exp" / "metrics" / "run_id=r").iterdir())) == 2


def test_rows_of_a_writer_never_closed_are_written_at_exit(tmp_path):
    uri = str(tmp_path / "exp")
    code = (
        "from storage.store import Store\n"
        f"w = Store({uri!r}).metrics_writer('r', attempt=0, flush_rows=1000)\n"
        "for s in range(25): w.write({'step': s})\n"
    )
    done = run_child(
        [sys.executable, "-c", code], timeout_s=120, what="a process that exits with a writer open"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert Store(uri).metrics(["r"]).num_rows == 25
