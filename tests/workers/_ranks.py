"""Running training jobs on 2 spawned CPU ranks, for the multi-rank tests.

A module of its own (not a test file) so that spawned rank processes import only this
and the worker, not pytest's test modules.
"""

from __future__ import annotations

import os
import random
import signal
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from storage.store import Store
from workers.spec import RunSpec
from workers.train import train


@dataclass(frozen=True)
class Job:
    spec: RunSpec
    store_uri: str
    attempt: int = 0
    kill_after_step: int = 0  # SIGKILL rank 0 once a metrics row past this step is logged


# Ports for the jobs' rendezvous are chosen before the first job starts and used up to a
# minute later. A port the kernel hands out (bind to 0) comes from its ephemeral range,
# which every outgoing connection on the machine (Ray's among them) also draws from: one
# was seen taken by the time its job started (EADDRINUSE). So the ports come from below
# that range, and above Ray's worker ports (10002-19999 by default).
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


def run_jobs(jobs: list[Job], *, nprocs: int = 2) -> None:
    """Run `jobs` one after another in the same `nprocs` spawned rank processes (each
    re-initialises DeepSpeed per job, as a reused Ray actor does)."""
    torch.multiprocessing.start_processes(
        _rank_main,
        args=(jobs, free_ports(len(jobs))),
        nprocs=nprocs,
        start_method="spawn",
    )


def _rank_main(rank: int, jobs: list[Job], ports: list[int]) -> None:
    for job, port in zip(jobs, ports, strict=True):
        on_log = _killer(job.kill_after_step) if job.kill_after_step else None
        train(
            job.spec,
            Store(job.store_uri),
            attempt=job.attempt,
            rank=rank,
            master_port=port,
            threads=1,
            on_log=on_log,
        )


def _killer(after_step: int):
    def on_log(row: dict) -> None:
        if row["step"] > after_step:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_log
