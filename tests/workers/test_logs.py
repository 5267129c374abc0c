"""Each attempt's log file: what goes in, what stays out, and the upload from S3 stores."""

from __future__ import annotations

import logging
import uuid

import pytest

import tests.storage.conftest as storage_fixtures
from storage.fsio import read_bytes
from storage.store import Store
from workers.logs import attempt_log

RUN = "0123456789abcdef"
s3_endpoint = storage_fixtures.s3_endpoint  # the session's moto server on 127.0.0.1


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    """A fresh experiment on local disk, then on S3 (where logs are uploaded at the end)."""
    if request.param == "local":
        return Store(str(tmp_path / "exp"))
    endpoint = request.getfixturevalue("s3_endpoint")
    prefix = f"s3://{storage_fixtures.BUCKET}/{uuid.uuid4().hex[:12]}"
    return Store(f"{prefix}/exp?endpoint_override={endpoint}&scheme=http")


def _log_text(store: Store, *, attempt: int, rank: int) -> str:
    data = read_bytes(store.fs, store.log_path(RUN, attempt=attempt, rank=rank))
    assert data is not None, "no log file"
    return data.decode()


def test_attempt_log_holds_worker_and_deepspeed_records_and_the_traceback(store):
    deepspeed = logging.getLogger("DeepSpeed")
    with pytest.raises(RuntimeError, match="boom"):
        with attempt_log(store, RUN, attempt=2, rank=1):
            logging.getLogger("workers.train").info("step %d done", 7)
            deepspeed.info("zero stage 2 ready")
            logging.getLogger("storage.writer").debug("too fine to keep")
            raise RuntimeError("boom")
    logging.getLogger("workers.train").warning("after the attempt")
    text = _log_text(store, attempt=2, rank=1)
    assert "INFO workers.train [rank 1]: step 7 done" in text
    assert "INFO DeepSpeed [rank 1]: zero stage 2 ready" in text
    assert "ended by an exception" in text and "RuntimeError: boom" in text
    assert "Traceback" in text
    assert "too fine to keep" not in text and "after the attempt" not in text
    listed = store.log_files(RUN)
    assert [p.rsplit("/", 1)[-1] for p in listed] == ["attempt-2.rank1.log"]
    assert listed[0].startswith("s3://" if store.uri.startswith("s3://") else "/")


def test_attempt_log_restores_levels_and_handlers(tmp_path):
    store = Store(str(tmp_path / "exp"))
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in ("workers", "DeepSpeed")}
    with attempt_log(store, RUN, attempt=0, rank=0):
        assert logging.getLogger("workers").getEffectiveLevel() <= logging.INFO
    assert root.handlers == handlers
    assert {name: logging.getLogger(name).level for name in levels} == levels


def test_attempts_and_ranks_get_separate_files_listed_in_order(tmp_path):
    store = Store(str(tmp_path / "exp"))
    for attempt, rank in ((1, 0), (0, 1), (0, 0), (1, 1)):
        with attempt_log(store, RUN, attempt=attempt, rank=rank):
            logging.getLogger("workers.x").info("attempt %d rank %d", attempt, rank)
    names = [p.rsplit("/", 1)[-1] for p in store.log_files(RUN)]
    assert names == [
        "attempt-0.rank0.log",
        "attempt-0.rank1.log",
        "attempt-1.rank0.log",
        "attempt-1.rank1.log",
    ]
    assert "attempt 1 rank 0" in _log_text(store, attempt=1, rank=0)
    assert "attempt 0 rank 0" not in _log_text(store, attempt=1, rank=0)
