"""The backend a plan names (`backend.kind`), made for one experiment's store."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.planning.hardware import ACCELERATORS
from orchestrator.planning.plan import Plan
from orchestrator.scheduler.base import Backend
from storage.store import Store


def plan_backend(
    plan: Plan,
    store: Store,
    *,
    address: str | None = None,
    on_start: Callable[[str | None], None] | None = None,
    slowest_flops: float = 0.0,
) -> Backend:
    """The backend the plan names, for the experiment's store.

    Args:
        slowest_flops: FLOPs of the largest run (sets ray-simulated run durations).
    """
    if plan.backend.kind == "simulated":
        from orchestrator.scheduler.simulated import SimulatedBackend
        from workers.simulated import TrueLaw

        be = plan.backend
        return SimulatedBackend(
            store,
            law=TrueLaw(noise=be.noise),
            slots=be.slots,
            flops_per_s=be.flops_per_s,
            preempt_rate=be.preempt_rate,
            fail_rate=be.fail_rate,
            write_curves=be.curves,
        )
    from orchestrator.scheduler.ray_backend import RayBackend

    options = {"peak_flops_per_s": ACCELERATORS[plan.hardware.accelerator].peak_flops_per_s}
    if plan.backend.kind == "ray-simulated":
        # Each run sleeps its simulated duration; one uniform duration keeps it simple.
        options = {
            "law": {"noise": plan.backend.noise},
            "duration_s": min(60.0, slowest_flops / plan.backend.flops_per_s),
            "write_curves": plan.backend.curves,
        }
    ray_backend = RayBackend(
        store.uri,
        address=address or plan.resources.address,
        cpus_per_rank=plan.resources.cpus_per_rank,
        gpus_per_rank=plan.resources.gpus_per_rank,
        kind="simulate" if plan.backend.kind == "ray-simulated" else "train",
        options=options,
    )
    if on_start is not None:
        on_start(ray_backend.dashboard_url)
    return ray_backend
