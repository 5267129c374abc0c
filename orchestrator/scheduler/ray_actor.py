"""The Ray side of a run: starting (or joining) Ray, and the rank actor a gang is made of.

One `RankActor` is one rank of one run at a time. Rank 0 hosts the torch.distributed
rendezvous store on its node before handing out its address; the actor imports the
training stack (torch, DeepSpeed) inside its own process only, so the driver never loads it.
It starts that import as soon as it is created, while Ray is still telling the driver it
is up and delivering its first run (see `RankActor.__init__`).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from typing import Any

# Ray reads these when first imported: usage stats off (no network here, nothing to
# report), and an explicit auth mode (Ray 2.5x+ defaults to token auth on new clusters;
# we keep that default, but say so rather than rely on it).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

import ray  # noqa: E402

from orchestrator.scheduler.base import BackendError  # noqa: E402

log = logging.getLogger(__name__)


def start_ray(address: str | None = None) -> str | None:
    """Connect to Ray at `address`, or start an embedded local Ray; the dashboard URL.

    The embedded Ray binds its dashboard to 127.0.0.1 only and uses token auth unless
    RAY_AUTH_MODE says otherwise (see README for reaching the dashboard).
    """
    if ray.is_initialized():
        return _dashboard_url(ray.get_runtime_context())
    try:
        ctx = ray.init(
            # "local" always starts a new embedded instance; plain None would join any
            # cluster `ray start` left running on this machine.
            address=address or "local",
            include_dashboard=True if address is None else None,
            dashboard_host="127.0.0.1",
            # Worker output stays in Ray's log files (and each attempt's own log file,
            # workers/logs.py), not the terminal, unless the driver logs at INFO
            # (`orch --verbose`).
            log_to_driver=log.isEnabledFor(logging.INFO),
            logging_level=logging.WARNING,
            # Ray starts its workers at niceness 15, which suits background tasks on a
            # shared head node; here the workers are the training the user asked for, and
            # at 15 any other busy process on the machine leaves them a few percent of a
            # core (measured: two busy loops on 2 cores, about 3% each). A cluster joined
            # by address keeps its own setting.
            _system_config=None if address else {"worker_niceness": 0},
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise BackendError(f"cannot start or reach Ray at {address or 'local'}: {err}") from err
    return _dashboard_url(ctx)


def _dashboard_url(ctx: Any) -> str | None:
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url else None


# Metrics row field -> (Ray gauge, description), exported by rank 0 at every logged step;
# Prometheus sees them as ray_<gauge> (deploy/grafana/orch-dashboard.json reads them).
RUN_GAUGES = {
    "loss": ("orch_run_loss", "training loss, nats/token"),
    "tokens_per_s": ("orch_run_tokens_per_s", "training tokens per second"),
}


# What a rank of each kind imports before its first run (a fresh worker process has none
# of it: about 0.3 s for a simulated run, seconds for torch and DeepSpeed).
_IMPORTS = {
    "simulate": ("storage.store", "workers.simulated"),
    "train": ("storage.store", "workers.train"),
}


def _preload(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the run imports it again and reports the error there
            log.debug("preloading %s failed; the run will import it itself", name, exc_info=True)
            return


@ray.remote(max_concurrency=2)  # one thread runs the job, the other answers progress()
class RankActor:
    """One rank of the runs of one backend: `kind`, `store_uri`, `threads` and `options`
    are the same for all of them, so they are given once, not with every run."""

    def __init__(self, kind: str, store_uri: str, threads: int, options: dict[str, Any]) -> None:
        self._kind = kind
        self._store_uri = store_uri
        self._store = None  # opened by the first run and kept (its reads list afresh)
        self._threads = threads
        self._options = options
        self._latest: dict[str, Any] = {}
        self._label = "idle"
        self._gauges = None
        self._hosted = None  # rank 0's rendezvous store, from rendezvous() to run()
        self._node_id = ray.get_runtime_context().get_node_id()
        # Import what the runs need in the background from now on, not once the first run
        # arrives: Ray meanwhile reports the actor alive to the driver and delivers that run
        # (10 ms to 0.6 s after this, measured on 2 busy cores). The methods that import
        # wait for it first, so no two threads import at once.
        self._imported = threading.Thread(
            target=_preload, args=(_IMPORTS.get(kind, ()),), name="orch-preload", daemon=True
        )
        self._imported.start()

    def __repr__(self) -> str:  # the dashboard and log prefixes show the current job
        return self._label

    def rendezvous(self) -> tuple[str, int]:
        """Host the next run's rendezvous store here (rank 0); its address for the others.

        The store stays bound until run() hands it to the process group, so nothing can
        take its port in between.
        """
        self._imported.join()
        from workers.distributed import host_rendezvous, node_ip

        ip = node_ip()
        self._hosted = host_rendezvous(ip)
        return ip, self._hosted.port

    def node_id(self) -> str:
        return self._node_id

    def run(
        self, spec_json: str, attempt: int, rank: int, rendezvous: tuple[str, int] | None
    ) -> dict[str, Any]:
        self._imported.join()
        from storage.store import Store
        from workers.spec import RunSpec

        spec = RunSpec.from_json(spec_json)
        options = self._options
        if self._store is None:
            self._store = Store(self._store_uri)
        # A multi-rank run meets at rank 0's store (a single rank hosts its own in train).
        rendezvous_store = None
        if rendezvous is not None and rank == 0:
            rendezvous_store, self._hosted = self._hosted, None
        elif rendezvous is not None:
            from workers.distributed import join_rendezvous

            rendezvous_store = join_rendezvous(*rendezvous)
        self._label = f"run:{spec.run_id}:rank{rank}"
        self._latest = {}
        try:
            if self._kind == "simulate":  # the scheduler's own benchmark and tests: no training
                from workers.simulated import TrueLaw, simulate_run

                outcome = simulate_run(
                    spec,
                    self._store,
                    attempt=attempt,
                    law=TrueLaw(**options.get("law", {})),
                    duration_s=options.get("duration_s", 0.0),
                    write_curve=options.get("write_curves", True),
                )
            else:
                from workers.train import train

                outcome = train(
                    spec,
                    self._store,
                    attempt=attempt,
                    rank=rank,
                    threads=self._threads,
                    peak_flops_per_s=options.get("peak_flops_per_s"),
                    on_log=self._on_log if rank == 0 else None,
                    rendezvous_store=rendezvous_store,
                ).to_dict()
            return {**outcome, "node_id": self._node_id}
        finally:
            self._label = "idle"

    def _on_log(self, row: dict[str, Any]) -> None:
        self._latest = row
        if self._gauges is None:
            from ray.util.metrics import Gauge

            self._gauges = {
                name: Gauge(gauge, description=desc, tag_keys=("run_id",))
                for name, (gauge, desc) in RUN_GAUGES.items()
            }
        run_id = self._label.split(":")[1]
        for name, gauge in self._gauges.items():
            if row.get(name) is not None:
                gauge.set(row[name], tags={"run_id": run_id})

    def progress(self) -> dict[str, Any]:
        return dict(self._latest)
