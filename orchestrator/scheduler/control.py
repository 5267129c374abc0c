"""Requests to a running driver, passed through the store (the driver's only state).

`orch cancel EXPERIMENT` leaves a marker file; the driver's loop checks it at every poll,
so cancelling works from any machine that can write the experiment root, with no
connection to the driver itself.
"""

from __future__ import annotations

from storage.fsio import delete_quietly, exists, write_bytes_atomic
from storage.store import Store

_CANCEL = "CANCEL_REQUESTED"


def request_cancel(store: Store, *, reason: str = "orch cancel") -> None:
    write_bytes_atomic(store.fs, f"{store.root}/{_CANCEL}", reason.encode())


def cancel_requested(store: Store) -> bool:
    return exists(store.fs, f"{store.root}/{_CANCEL}")


def clear_cancel(store: Store) -> None:
    delete_quietly(store.fs, f"{store.root}/{_CANCEL}")
