"""Rank setup for one training run, shared by Ray actors and the standalone entry point.

The CUDA/NCCL path and the CPU/gloo path are the same code: only the accelerator name,
the collective backend and (in train.py) the precision differ. CPU is how tests run it.

Who starts the ranks: a Ray actor per rank (orchestrator/scheduler/ray_backend.py), or
`python -m workers.train`, which spawns them itself or finds them started by `torchrun`
(`from_launcher`).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    accelerator: str  # "cuda" | "cpu"
    backend: str  # "nccl" | "gloo"


@dataclass(frozen=True)
class Launch:
    """A rank started by an external launcher, as its environment describes it."""

    rank: int
    world_size: int
    local_rank: int  # index among the ranks on this node: which GPU
    master_addr: str
    master_port: int


# torch.distributed's own default for gloo and NCCL groups: how long a rank waits for the
# others to join, or for a collective.
_RENDEZVOUS_TIMEOUT = datetime.timedelta(minutes=30)

_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


_RANK_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")
_SAVED_ENV: dict[str, str | None] = {}


def from_launcher(env: dict[str, str] | None = None) -> Launch | None:
    """The rank `torchrun` (or any launcher that sets its variables) started this process
    as; None when this process was started directly."""
    env = os.environ if env is None else env
    if not all(name in env for name in _LAUNCH_VARS):
        return None
    return Launch(
        rank=int(env["RANK"]),
        world_size=int(env["WORLD_SIZE"]),
        local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
        master_addr=env["MASTER_ADDR"],
        master_port=int(env["MASTER_PORT"]),
    )


def host_rendezvous(host: str):
    """A run's rendezvous store, listening on a port the kernel chose and kept bound. Rank 0
    hosts it (a Ray gang), or the process that starts the ranks (the standalone entry).

    A port found free and bound later by the process group can be taken in between: on a
    busy Ray node its own connections take ephemeral ports all the time, and a run failed
    with EADDRINUSE that way. Hosting the store before its address is handed out leaves
    no such window. Pass it to `setup(store=...)`; its port is `.port`.
    """
    from torch.distributed import TCPStore

    return TCPStore(host, 0, None, True, timeout=_RENDEZVOUS_TIMEOUT, wait_for_workers=False)


def join_rendezvous(host: str, port: int):
    """A client of the store that `host_rendezvous` hosts (every rank but its host)."""
    from torch.distributed import TCPStore

    return TCPStore(host, port, None, False, timeout=_RENDEZVOUS_TIMEOUT)


def node_ip() -> str:
    """This node's address as other nodes reach it (for rank 0's rendezvous)."""
    try:
        import ray.util

        return ray.util.get_node_ip_address()
    except ImportError:  # no Ray (standalone): the loopback is the node
        return "127.0.0.1"


def _accelerator() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def setup(
    *,
    rank: int,
    world_size: int,
    master_addr: str,
    master_port: int,
    local_rank: int | None = None,
    store=None,
) -> DistContext:
    """Join the run's process group (rank 0 hosts the rendezvous) and return who we are.

    Sets the environment DeepSpeed reads, so it never falls back to MPI discovery.
    `local_rank` picks the GPU among those this process sees; by default `rank` modulo
    their number, which is 0 for a Ray actor that was given one GPU. `store`: the
    rendezvous store (`host_rendezvous` on rank 0, `join_rendezvous` on the others);
    without one the group meets at MASTER_ADDR:MASTER_PORT (env://, as launchers expect).
    """
    import torch

    local_rank = rank if local_rank is None else local_rank
    accelerator = os.environ.get("DS_ACCELERATOR") or _accelerator()
    if accelerator == "cuda":
        local_rank %= torch.cuda.device_count()
    # DeepSpeed picks its accelerator when first imported; set it before that import.
    os.environ["DS_ACCELERATOR"] = accelerator
    # Remembered so teardown can restore them: a process that ran a rank must not look
    # like a launcher-started rank to children it starts later (from_launcher reads them).
    _SAVED_ENV.update({k: os.environ.get(k) for k in _RANK_VARS if k not in _SAVED_ENV})
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        LOCAL_SIZE=str(world_size),
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
    )
    import deepspeed
    import deepspeed.ops

    backend = "nccl" if accelerator == "cuda" else "gloo"
    if accelerator == "cuda":
        torch.cuda.set_device(local_rank)
    else:
        # DeepSpeed's CPU shared-memory allreduce is JIT-compiled (~1 min, needs a compiler)
        # on first use; gloo's allreduce is plenty for CPU runs, so declare the op absent.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    _leave_group()
    if store is not None:
        # DeepSpeed adopts a group that exists (it creates one only when there is none).
        torch.distributed.init_process_group(
            backend, store=store, rank=rank, world_size=world_size, timeout=_RENDEZVOUS_TIMEOUT
        )
    deepspeed.init_distributed(
        dist_backend=backend, auto_mpi_discovery=False, rank=rank, world_size=world_size
    )
    log.debug(
        "rank %d/%d joined via %s:%d (%s)", rank, world_size, master_addr, master_port, backend
    )
    return DistContext(rank, world_size, local_rank, accelerator, backend)


def _leave_group() -> None:
    import deepspeed.comm
    import torch

    if torch.distributed.is_initialized():
        deepspeed.comm.destroy_process_group()


def teardown() -> None:
    """Leave the process group so this process can join another run's (actor reuse).

    DeepSpeed's own destroy also drops the groups it cached; torch's alone leaves stale
    ones that break the next `deepspeed.initialize` in this process.
    """
    _leave_group()
    for key, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _SAVED_ENV.clear()
