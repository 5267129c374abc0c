"""Accelerators the planner knows, and what a run costs on them.

GPU-hours of a run = FLOPs / (GPUs x peak FLOP/s x expected MFU) / 3600 x GPUs
                   = FLOPs / (peak x MFU x 3600)
(the GPU count changes the wall time, not the GPU-hours, at a fixed MFU). Peaks are dense
16-bit tensor-core figures from the vendors' data sheets (no structured sparsity).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_bytes: float  # device memory, bytes (1 GB = 1e9)
    peak_flops_per_s: float  # dense bf16/fp16, FLOP/s


ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator("A100-40GB", 40e9, 312e12),
        Accelerator("A100-80GB", 80e9, 312e12),
        Accelerator("H100-80GB", 80e9, 989e12),
        Accelerator("H200-141GB", 141e9, 989e12),
        # No accelerator: one CPU core per rank. Nominal fp32 peak of one core (2.5 GHz x
        # 32 FLOP/cycle with two AVX2 FMA units); memory is what one rank may use of a
        # small machine. Only for costing local plans.
        Accelerator("cpu", 8e9, 8e10),
    )
}


def gpu_hours(flops: float, accelerator: Accelerator, *, mfu: float) -> float:
    """Accelerator-hours to spend `flops` FLOPs at model FLOPs utilisation `mfu`."""
    return flops / (accelerator.peak_flops_per_s * mfu * 3600.0)


def flops_for_gpu_hours(hours: float, accelerator: Accelerator, *, mfu: float) -> float:
    """FLOPs that `hours` accelerator-hours buy at model FLOPs utilisation `mfu`."""
    return hours * accelerator.peak_flops_per_s * mfu * 3600.0
