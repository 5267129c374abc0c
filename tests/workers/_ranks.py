"""Running training jobs on 2 spawned CPU ranks, for the multi-rank tests.

A module of its own (not a test file) so that spawned rank processes import only this
and the worker, not pytest's test modules.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import torch

from storage.store import Store
from workers import distributed
from workers.spec import RunSpec
from workers.train import train

# Liveness bound per job (a tiny CPU DeepSpeed run: seconds when idle, a minute or more
# on a loaded 2-core machine), not a speed expectation.
_PATIENCE_PER_JOB_S = 300


@dataclass(frozen=True)
class Job:
    spec: RunSpec
    store_uri: str
    attempt: int = 0
    kill_after_step: int = 0  # SIGKILL rank 0 once a metrics row past this step is logged


def run_jobs(jobs: list[Job], *, nprocs: int = 2) -> None:
    """Run `jobs` one after another in the same `nprocs` spawned rank processes (each
    re-initialises DeepSpeed per job, as a reused Ray actor does).

    A rank that fails raises torch's ProcessExitedException or ProcessRaisedException (the
    other ranks are stopped); ranks still running after a generous bound per job fail the
    test, saying how far the jobs got, and are killed."""
    from tests.waiting import wait_until  # here: the spawned ranks import this module

    # This process hosts each job's rendezvous, bound before the ranks start (a port only
    # found free could be taken by the time a later job binds it); the ranks join them.
    stores = [distributed.host_rendezvous("127.0.0.1") for _ in jobs]
    context = torch.multiprocessing.start_processes(
        _rank_main,
        args=(jobs, [store.port for store in stores]),
        nprocs=nprocs,
        start_method="spawn",
        join=False,
    )
    try:
        wait_until(
            lambda: context.join(timeout=1),  # True once every rank exited cleanly
            timeout_s=_PATIENCE_PER_JOB_S * len(jobs),
            what=f"{len(jobs)} training jobs on {nprocs} ranks",
            seen=lambda: _progress(jobs, context.processes),
            interval_s=0,
        )
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


def _progress(jobs: list[Job], ranks) -> str:
    ended = sum(Store(j.store_uri).run_summary(j.spec.run_id) is not None for j in jobs)
    codes = ["running" if r.is_alive() else r.exitcode for r in ranks]
    return f"{ended} of {len(jobs)} jobs wrote a run summary; rank exit codes: {codes}"


def _rank_main(rank: int, jobs: list[Job], ports: list[int]) -> None:
    for job, port in zip(jobs, ports, strict=True):
        on_log = _killer(job.kill_after_step) if job.kill_after_step else None
        train(
            job.spec,
            Store(job.store_uri),
            attempt=job.attempt,
            rank=rank,
            rendezvous_store=distributed.join_rendezvous("127.0.0.1", port),
            threads=1,
            on_log=on_log,
        )


def _killer(after_step: int):
    def on_log(row: dict) -> None:
        if row["step"] > after_step:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_log
