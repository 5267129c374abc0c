"""Fixtures of the fault-injection suite: a small real tmpfs, a moto S3 server on
127.0.0.1, and a proxy in front of it that fails, drops or stalls chosen requests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from _faults import AWS_ENV, BUCKET, FaultProxy, free_port, proxy_handler


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")


@pytest.fixture
def small_tmpfs(tmp_path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk that really fills up."""
    _needs_root()
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN?)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """(host, port) of a moto S3 server on 127.0.0.1 with bucket BUCKET; sets AWS_* env."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    log = log_path.open("wb")  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"moto server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
    )
    fs.create_dir(BUCKET)
    yield ("127.0.0.1", port)
    server.terminate()
    server.wait(timeout=30)
    log.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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
