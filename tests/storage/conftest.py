"""Store fixtures: every store test runs on local disk and on S3 (a moto server on 127.0.0.1).

The moto server is a separate process started once per session, so subprocesses of a
test (killed writers, concurrent writers) reach it too; they inherit the credentials
set here through the standard AWS environment variables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pyarrow.fs as pafs
import pytest

from tests.ports import accepts, free_port
from tests.waiting import file_tail, wait_for_exit, wait_until

BUCKET = "orch-test"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no probing of a cloud metadata service
}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """host:port of a moto S3 server with an empty bucket BUCKET."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.fail("the S3 store tests need moto's server: pip install 'moto[server]'")
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    log = log_path.open("wb")  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # moto imports for seconds, longer beside busy processes: a generous bound.
        wait_until(
            lambda: accepts(port),
            timeout_s=180,
            what=f"the moto S3 server to listen on 127.0.0.1:{port}",
            seen=lambda: f"its log:\n{file_tail(log_path)}",
            proc=server,
        )
    except BaseException:
        server.kill()
        raise
    endpoint = f"127.0.0.1:{port}"
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    yield endpoint
    server.terminate()
    wait_for_exit(
        server,
        timeout_s=60,
        what="the moto S3 server to exit on SIGTERM",
        seen=lambda: f"its log:\n{file_tail(log_path)}",
    )
    log.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    """The URI of a fresh, empty experiment on local disk, then on S3."""
    if request.param == "local":
        return str(tmp_path / "exp")
    endpoint = request.getfixturevalue("s3_endpoint")
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}/exp?endpoint_override={endpoint}&scheme=http"
