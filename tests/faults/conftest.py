"""Fixtures of the fault-injection suite: a small real tmpfs, a moto S3 server on
127.0.0.1, and a proxy in front of it that fails, drops or stalls chosen requests."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from _faults import BUCKET, FaultProxy, proxy_handler

import tests.storage.conftest as storage_fixtures
from tests.waiting import run_child


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")


@pytest.fixture
def small_tmpfs(tmp_path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk that really fills up."""
    _needs_root()
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = run_child(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], timeout_s=60, what="mount"
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {done.stderr.strip()}")
    yield mnt
    done = run_child(["umount", "-l", str(mnt)], timeout_s=60, what="umount")
    assert done.returncode == 0, f"umount of {mnt} failed: {done.stderr[-3000:]}"


s3_endpoint = storage_fixtures.s3_endpoint  # the session's one moto server on 127.0.0.1


@pytest.fixture(scope="session")
def moto_server(s3_endpoint) -> tuple[str, int]:
    """(host, port) of the session's moto S3 server, with the suite's bucket BUCKET."""
    host, port = s3_endpoint.rsplit(":", 1)
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http", allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    return host, int(port)


@pytest.fixture
def fault_proxy(moto_server) -> Iterator[FaultProxy]:
    """A proxy on 127.0.0.1 in front of moto; add `Rule`s to `proxy.rules` to misbehave."""
    proxy = FaultProxy(upstream=moto_server)
    server = ThreadingHTTPServer(("127.0.0.1", 0), proxy_handler(proxy))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy.address = f"127.0.0.1:{server.server_address[1]}"
    yield proxy
    server.shutdown()
    server.server_close()
