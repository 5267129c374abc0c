"""One log file per rank per attempt, written by the worker process itself.

`attempt_log` attaches a file handler for the duration of one attempt, so the file holds
this project's own logging (workers, storage) and DeepSpeed's at INFO, plus any
traceback that ends the attempt: `<experiment>/runs/<run_id>/logs/attempt-<k>.rank<r>.log`
(`Store.log_path`). `orch status` lists these files.

DeepSpeed's logger does not propagate to the root logger, so it gets the handler too;
its own stdout handler stays at WARNING, which keeps its INFO chatter out of terminals
and Ray's worker logs while the file still has it.

On object storage the file is written to local disk and uploaded whole when the attempt
ends (a PUT per line would be slow and costly). A worker killed mid-attempt (a lost node)
therefore leaves no log on S3 for that attempt; its Ray worker log on the node remains.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.errors import OrchError
from storage.fsio import is_local
from storage.store import Store

log = logging.getLogger(__name__)

# Loggers whose INFO records belong in the file; the root logger catches the rest
# (warnings and errors from torch and others) at the level it already has.
_CAPTURED = ("workers", "storage", "DeepSpeed")
_FORMAT = "%(asctime)s %(levelname)s %(name)s [rank {rank}]: %(message)s"


@contextmanager
def attempt_log(store: Store, run_id: str, *, attempt: int, rank: int) -> Iterator[str]:
    """Logs this process's records to the attempt's log file while inside; yields its path.

    An exception leaving the block is logged (with its traceback) before it propagates.
    """
    target = store.log_path(run_id, attempt=attempt, rank=rank)
    local = is_local(store.fs)
    if local:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        path = target
    else:
        fd, path = tempfile.mkstemp(prefix=f"orch-{run_id}-a{attempt}-r{rank}-", suffix=".log")
        os.close(fd)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT.format(rank=rank)))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    saved_levels = {name: logging.getLogger(name).level for name in _CAPTURED}
    root.addHandler(handler)
    logging.getLogger("DeepSpeed").addHandler(handler)  # propagate=False: not seen by root
    for name in _CAPTURED:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    for h in logging.getLogger("DeepSpeed").handlers:  # its stdout stays quiet
        if h is not handler and h.level < logging.WARNING:
            h.setLevel(logging.WARNING)
    try:
        log.info("run %s attempt %d rank %d: logging to %s", run_id, attempt, rank, target)
        yield target
    except BaseException:
        log.exception("run %s attempt %d rank %d: ended by an exception", run_id, attempt, rank)
        raise
    finally:
        root.removeHandler(handler)
        logging.getLogger("DeepSpeed").removeHandler(handler)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        handler.close()
        if not local:
            _upload(store, run_id, attempt, rank, path)


def _upload(store: Store, run_id: str, attempt: int, rank: int, path: str) -> None:
    try:
        store.upload_log(run_id, attempt=attempt, rank=rank, data=Path(path).read_bytes())
    except (OSError, OrchError) as err:  # the attempt's result matters more than its log
        log.warning("run %s attempt %d rank %d: log not uploaded: %s", run_id, attempt, rank, err)
    finally:
        Path(path).unlink(missing_ok=True)
