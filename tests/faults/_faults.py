"""Helpers of the fault-injection suite (fixtures are in conftest.py).

Nothing here imitates a part of the system: the tmpfs is a kernel filesystem, the S3
server is moto's (the real protocol over HTTP on 127.0.0.1), and the proxy forwards
real requests byte for byte unless a rule tells it to fail, drop or stall one.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.waiting import run_child

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "orch-faults"


def orch(*args: str) -> list[str]:
    """argv of the `orch` command line run by this interpreter (inherits PYTHONPATH)."""
    return [sys.executable, "-m", "orchestrator.cli", *args]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child `orch`: ours, with this tree first on the path."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def simulated_plan(
    tmp_path: Path, store: str | Path, *, name: str = "simulated", slots: int = 8
) -> Path:
    """plans/simulated.yaml shrunk to 12 runs of at most ~1 s on `slots` slots, in `store`."""
    text = (ROOT / "plans" / "simulated.yaml").read_text()
    text = text.replace("store: ./experiments", f"store: {store}")
    text = text.replace("name: simulated", f"name: {name}")
    for old, new in [
        ("levels: 5", "levels: 3"),
        ("sizes_per_level: 7", "sizes_per_level: 4"),
        ("slots: 64", f"slots: {slots}"),
        ("max_gpus_per_run: 64", "max_gpus_per_run: 4"),
    ]:
        text = text.replace(old, new)
    text = text.replace("flops_per_s: 1e20", "flops_per_s: 3e20")
    path = tmp_path / f"plan-{name}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text)
    return path


# -- small real filesystems ---
def remount(mnt: Path, mode: str) -> None:
    """Remount the tmpfs `mnt` read-only ("ro") or read-write ("rw")."""
    done = run_child(["mount", "-o", f"remount,{mode}", str(mnt)], timeout_s=60, what="mount")
    assert done.returncode == 0, f"remount,{mode} of {mnt} failed: {done.stderr[-3000:]}"


# -- S3 ---
@dataclass
class Rule:
    """Misbehave on the next `times` requests whose method and path match.

    action: "500" (answer InternalError without forwarding), "503" (SlowDown),
    "drop" (close the connection without an answer), or "stall:<s>" (wait, then forward).
    """

    method: str
    path_part: str
    action: str
    times: int = 1
    hits: int = 0


@dataclass
class FaultProxy:
    upstream: tuple[str, int]
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, what
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, method: str, path: str) -> str | None:
        with self.lock:
            for rule in self.rules:
                if rule.hits < rule.times and rule.method == method and rule.path_part in path:
                    rule.hits += 1
                    self.seen.append((method, path, rule.action))
                    return rule.action
            self.seen.append((method, path, "forward"))
        return None


def proxy_handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _any(self) -> None:
            body = self._body()
            action = proxy.take(self.command, self.path)
            if action == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if action in ("500", "503"):
                code = "InternalError" if action == "500" else "SlowDown"
                payload = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                self.send_response(int(action))
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            if action and action.startswith("stall:"):
                time.sleep(float(action.split(":", 1)[1]))
            upstream = HTTPConnection(*proxy.upstream, timeout=60)
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("connection", "transfer-encoding", "content-length")
            }
            headers["Content-Length"] = str(len(body))  # forwarded whole, not chunked
            upstream.request(self.command, self.path, body=body, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
            self.send_response(reply.status, reply.reason)
            for key, value in reply.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            # A HEAD answer has no body but tells the object's size: pass that on.
            length = reply.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            upstream.close()

        def _body(self) -> bytes:
            # The AWS SDK streams uploads with chunked transfer encoding, no Content-Length.
            if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, up to the blank line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    return Handler


def s3_uri(endpoint: str, name: str = "exp") -> str:
    """A fresh experiment URI in BUCKET reached through `endpoint` (host:port)."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}/{name}?endpoint_override={endpoint}&scheme=http"
