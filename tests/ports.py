"""TCP ports for servers that tests start (Ray nodes, rank rendezvous, S3 servers).

A port is chosen here and bound by another process seconds later (a minute later for a
queue of training jobs, longer on a busy machine). A port the kernel hands out (bind to 0)
comes from its ephemeral range, which every outgoing connection on the machine (Ray's
among them) also draws from: one was seen taken by the time its job started
(EADDRINUSE). So these come from below that range, and above Ray's worker ports
(10002-19999 by default).
"""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack
from pathlib import Path

_LOWEST = 20000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports, free now, outside the kernel's ephemeral range."""
    rng = random.Random()
    high = max(_LOWEST + 10 * n, _ephemeral_low())
    with ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < n:
            port = rng.randrange(_LOWEST, high)
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            if port not in ports:
                ports.append(port)
        return ports


def free_port() -> int:
    """One port, as `free_ports` chooses them."""
    return free_ports(1)[0]


def accepts(port: int) -> bool:
    """Whether a server accepts connections on 127.0.0.1:`port` yet."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False
