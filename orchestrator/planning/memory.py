"""GPU memory per rank for a ZeRO data-parallel run, and the smallest setup that fits.

Model states (Rajbhandari et al. 2020, "ZeRO", sec. 3.1 and 5, fig. 1), per parameter:
- mixed precision (bf16/fp16) Adam: 2 bytes of 16-bit weights + 2 of 16-bit gradients +
  K = 12 of optimizer state (fp32 master weights, Adam momentum and variance, 4 each);
- fp32 Adam: 4 bytes of weights + 4 of gradients + K = 8 (momentum and variance; the fp32
  weights are their own master copy).
ZeRO shards them over the Nd data-parallel ranks: stage 1 the optimizer state, stage 2
also the gradients, stage 3 also the weights. Optimizer offload (ZeRO-Offload, Ren et al.
2021) keeps the K bytes in host memory and runs Adam on the CPU; DeepSpeed allows it only
with stage >= 1.

Activations per micro-batch (Korthikanti et al. 2022, sec. 4.1, eq. 1): a transformer layer
stores seq * batch * d_model * (34 + 5 * n_head * seq / d_model) bytes with 16-bit
activations (fp32 doubles it). That count includes dropout masks and the stored attention
matrices, which our model (no dropout, fused attention kernels on GPU) does not keep, so it
is an upper bound. With full activation checkpointing a layer keeps only its input,
2 * seq * batch * d_model bytes (ibid., sec. 5), and one layer's full activations are live
again while it is recomputed in the backward pass. The output layer adds the inputs of the
final LayerNorm and head (2 + 2 bytes x seq * batch * d_model) and fp32 logits for the
cross-entropy (4 x seq * batch * vocab).

At stage 3 each rank also gathers the full 16-bit weights of the module it is computing; we
count two of the largest gathered unit (one in use, one prefetched). Communication buckets,
the CUDA context and allocator fragmentation are not modelled: that is what `safety` is for.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Literal

from orchestrator.planning.flops import count_params
from storage.errors import OrchError
from workers.spec import Shape

log = logging.getLogger(__name__)

MemoryPrecision = Literal["bf16", "fp16", "fp32"]
ZeroStage = Literal[0, 1, 2, 3]

# Bytes per parameter: (weights, gradients, optimizer states K). ZeRO paper sec. 3.1.
_STATE_BYTES: dict[str, tuple[int, int, int]] = {
    "bf16": (2, 2, 12),
    "fp16": (2, 2, 12),
    "fp32": (4, 4, 8),
}


class SizingError(OrchError, ValueError):
    """A run fits on no allowed GPU count, ZeRO stage and micro-batch."""

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        best_bytes: float = math.inf,
        limit_bytes: float = 0.0,
    ):
        super().__init__(message, hint=hint)
        self.best_bytes = best_bytes  # bytes per GPU; the least any configuration needed
        self.limit_bytes = limit_bytes  # bytes per GPU; gpu memory x safety


@dataclass(frozen=True, kw_only=True)
class ModelStates:
    """Weights, gradients and optimizer state held per rank."""

    params_bytes: float  # bytes on the GPU; 16-bit (or fp32) weights, sharded at stage 3
    grads_bytes: float  # bytes on the GPU; gradients, sharded from stage 2
    optimizer_bytes: float  # bytes on the GPU; K bytes/param, sharded from stage 1; 0 offloaded
    offloaded_bytes: float  # bytes of host memory per rank; optimizer state when offloaded

    @property
    def total_bytes(self) -> float:
        """Bytes of model states on the GPU (host memory not included)."""
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes


@dataclass(frozen=True, kw_only=True)
class MemoryEstimate:
    """Peak GPU memory of one rank, by part."""

    states: ModelStates  # weights, gradients, optimizer state
    activations_bytes: float  # bytes; one micro-batch's stored activations
    gathered_params_bytes: float  # bytes; stage 3 only: full weights being used / prefetched

    @property
    def total_bytes(self) -> float:
        """Bytes of GPU memory per rank at peak."""
        return self.states.total_bytes + self.activations_bytes + self.gathered_params_bytes


@dataclass(frozen=True, kw_only=True)
class Sizing:
    """How to run a model: GPU count, ZeRO stage, micro-batch and accumulation."""

    world_size: int  # GPUs; data-parallel ranks
    zero_stage: int  # 0-3
    offload_optimizer: bool  # optimizer state in host memory (ZeRO-Offload)
    activation_checkpointing: bool  # as asked; recompute each block in the backward pass
    micro_batch: int  # sequences per rank per forward pass
    grad_accum: int  # micro-batches per rank per optimizer step
    memory: MemoryEstimate  # per GPU at this choice
    limit_bytes: float  # bytes per GPU; gpu_memory_bytes x safety


def model_states(
    n_params_total: int,
    *,
    zero_stage: ZeroStage,
    world_size: int,
    precision: MemoryPrecision = "bf16",
    offload_optimizer: bool = False,
) -> ModelStates:
    """Bytes of weights, gradients and optimizer state per rank (ZeRO paper, fig. 1).

    Args:
        n_params_total: every parameter of the model (embeddings included), in params.
        zero_stage: 0 (plain data parallel), 1 (optimizer state sharded), 2 (+ gradients),
            3 (+ weights).
        world_size: Nd, the data-parallel ranks the states are sharded over.
        precision: "bf16"/"fp16" (2 + 2 + 12 bytes/param) or "fp32" (4 + 4 + 8).
        offload_optimizer: keep the optimizer state in host memory (needs stage >= 1).

    Raises:
        ValueError: an argument out of range, or offload at stage 0.
    """
    if n_params_total <= 0 or world_size <= 0:
        raise ValueError("n_params_total and world_size must be positive")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    if precision not in _STATE_BYTES:
        raise ValueError(f"precision must be one of {sorted(_STATE_BYTES)}, got {precision!r}")
    if offload_optimizer and zero_stage == 0:
        raise ValueError("optimizer offload needs ZeRO stage 1, 2 or 3 (DeepSpeed's rule)")
    w, g, k = _STATE_BYTES[precision]
    params = n_params_total * w / (world_size if zero_stage >= 3 else 1)
    grads = n_params_total * g / (world_size if zero_stage >= 2 else 1)
    optimizer = n_params_total * k / (world_size if zero_stage >= 1 else 1)
    return ModelStates(
        params_bytes=params,
        grads_bytes=grads,
        optimizer_bytes=0.0 if offload_optimizer else optimizer,
        offloaded_bytes=optimizer if offload_optimizer else 0.0,
    )


def activation_bytes(
    shape: Shape,
    micro_batch: int,
    *,
    precision: MemoryPrecision = "bf16",
    checkpointing: bool = False,
) -> float:
    """Bytes of activations one rank stores for a micro-batch of `micro_batch` sequences.

    Korthikanti et al. 2022, eq. 1 per layer, or only the layer inputs with full
    checkpointing (plus one layer being recomputed); the output layer and fp32 logits on top.
    See the module docstring.
    """
    if micro_batch <= 0:
        raise ValueError(f"micro_batch must be positive, got {micro_batch}")
    if precision not in _STATE_BYTES:
        raise ValueError(f"precision must be one of {sorted(_STATE_BYTES)}, got {precision!r}")
    s, b, h, a = shape.seq_len, micro_batch, shape.d_model, shape.n_head
    scale = 2.0 if precision == "fp32" else 1.0  # eq. 1 counts 2-byte activations
    sbh = s * b * h
    full_layer = scale * sbh * (34 + 5 * a * s / h)
    if checkpointing:
        layers = shape.n_layer * scale * 2 * sbh + full_layer
    else:
        layers = shape.n_layer * full_layer
    output = scale * 4 * sbh + 4 * s * b * shape.vocab  # LayerNorm + head inputs, fp32 logits
    return layers + output


def memory_per_gpu(
    n_params_total: int,
    shape: Shape,
    *,
    micro_batch: int,
    zero_stage: ZeroStage,
    world_size: int,
    precision: MemoryPrecision = "bf16",
    offload_optimizer: bool = False,
    activation_checkpointing: bool = False,
) -> MemoryEstimate:
    """Peak GPU bytes per rank: model states + activations (+ stage-3 gathered weights).

    Args:
        n_params_total: every parameter, in params; sizes the model states, so the count of
            any architecture can be used. `shape` sizes the activations.
        shape: the model, for activations and the largest weight unit stage 3 gathers.
        micro_batch: sequences per rank per forward pass.
        zero_stage, world_size, precision, offload_optimizer: as in `model_states`.
        activation_checkpointing: recompute each block in the backward pass.
    """
    states = model_states(
        n_params_total,
        zero_stage=zero_stage,
        world_size=world_size,
        precision=precision,
        offload_optimizer=offload_optimizer,
    )
    gathered = 0.0
    if zero_stage == 3:
        counts = count_params(shape)
        block = (counts.non_embedding_params - shape.d_model) / shape.n_layer
        largest_unit = max(block, shape.vocab * shape.d_model)  # a block or the embedding
        gathered = 2 * largest_unit * _STATE_BYTES[precision][0]  # in use + prefetched
    return MemoryEstimate(
        states=states,
        activations_bytes=activation_bytes(
            shape, micro_batch, precision=precision, checkpointing=activation_checkpointing
        ),
        gathered_params_bytes=gathered,
    )


def fit_run(
    n_params_total: int,
    shape: Shape,
    global_batch: int,
    *,
    gpu_memory_bytes: float,
    max_gpus: int,
    safety: float = 0.9,
    allow_offload: bool = False,
    precision: MemoryPrecision = "bf16",
    activation_checkpointing: bool = False,
    world_sizes: Literal["pow2", "divisors"] = "pow2",
    min_gpus: int = 1,
) -> Sizing:
    """The cheapest setup whose peak memory per GPU fits `gpu_memory_bytes * safety`.

    Order of preference: the fewest GPUs; for that count, the lowest ZeRO stage without
    offload (stages 0-2 cost no more communication than plain data parallelism, stage 3
    about 1.5x: ZeRO paper sec. 7); then, if `allow_offload`, stages 1-3 with the optimizer
    state offloaded (host-device traffic and CPU Adam steps are slower still). For the
    chosen setup, the largest power-of-two micro-batch that divides the per-rank batch and
    fits; gradient accumulation makes up the global batch.

    Args:
        n_params_total: every parameter of the model, in params.
        shape: the model (activations depend on it).
        global_batch: sequences per optimizer step across all ranks.
        gpu_memory_bytes: memory of one GPU, in bytes (80e9 for an 80 GB card).
        max_gpus: the most GPUs the run may use.
        safety: fraction of GPU memory the estimate may fill; 0.9 leaves 10% for what the
            model does not count (CUDA context, communication buckets, fragmentation).
        allow_offload: let optimizer offload count as fitting.
        precision: training precision (see `model_states`).
        activation_checkpointing: whether the run recomputes activations; not chosen here.
        world_sizes: "pow2": powers of two up to max_gpus that divide global_batch (they
            fill 4- and 8-GPU nodes and keep all-reduce rings balanced); "divisors": any
            divisor of global_batch up to max_gpus.
        min_gpus: the fewest GPUs to consider (e.g. to finish within a wall-clock limit);
            capped at the largest allowed count.

    Raises:
        SizingError: no allowed setup fits; the message names the run's size, the least
            memory any setup needed and the limit.
        ValueError: an argument out of range.
    """
    if global_batch <= 0 or max_gpus <= 0 or gpu_memory_bytes <= 0:
        raise ValueError("global_batch, max_gpus and gpu_memory_bytes must be positive")
    if not 0 < safety <= 1:
        raise ValueError(f"safety must be in (0, 1], got {safety}")
    if world_sizes not in ("pow2", "divisors"):
        raise ValueError(f"world_sizes must be 'pow2' or 'divisors', got {world_sizes!r}")
    limit = gpu_memory_bytes * safety
    setups = [(stage, False) for stage in (0, 1, 2, 3)]
    if allow_offload:
        setups += [(stage, True) for stage in (1, 2, 3)]
    estimate = functools.partial(
        memory_per_gpu,
        n_params_total,
        shape,
        precision=precision,
        activation_checkpointing=activation_checkpointing,
    )
    best: tuple[float, int, int, bool] | None = None  # (bytes, world, stage, offload)
    allowed = _world_sizes(global_batch, max_gpus, pow2=world_sizes == "pow2")
    allowed = [w for w in allowed if w >= min(min_gpus, allowed[-1])]
    for world in allowed:
        per_rank = global_batch // world
        for stage, offload in setups:
            setup = dict(zero_stage=stage, world_size=world, offload_optimizer=offload)
            smallest = estimate(micro_batch=1, **setup).total_bytes  # activations grow with it
            if best is None or smallest < best[0]:
                best = (smallest, world, stage, offload)
            if smallest > limit:
                continue
            for micro in _power_of_two_divisors(per_rank):  # largest first; 1 fits by now
                memory = estimate(micro_batch=micro, **setup)
                if memory.total_bytes <= limit:
                    log.debug(
                        "%s params: %d GPUs, ZeRO-%d%s, micro-batch %d, %.3g GB per GPU",
                        _count(n_params_total),
                        world,
                        stage,
                        " + offload" if offload else "",
                        micro,
                        memory.total_bytes / 1e9,
                    )
                    return Sizing(
                        world_size=world,
                        zero_stage=stage,
                        offload_optimizer=offload,
                        activation_checkpointing=activation_checkpointing,
                        micro_batch=micro,
                        grad_accum=per_rank // micro,
                        memory=memory,
                        limit_bytes=limit,
                    )
    assert best is not None  # world size 1 is always allowed
    best_bytes, world, stage, offload = best
    # With GPUs without end, ZeRO-3 shards the states away; what is left no GPU count shrinks.
    floor = estimate(micro_batch=1, zero_stage=3, world_size=2**62).total_bytes
    hints = []
    if floor <= limit:
        hints.append(f"raise max_gpus above {max_gpus} (and global_batch if it caps them)")
    if not allow_offload:
        hints.append("allow optimizer offload")
    if not activation_checkpointing:
        hints.append("enable activation checkpointing")
    raise SizingError(
        f"a model of {_count(n_params_total)} params (seq_len {shape.seq_len}, global batch "
        f"{global_batch}) fits on no setup of up to {max_gpus} GPUs: the least memory needed "
        f"is {best_bytes / 1e9:.3g} GB per GPU ({world} GPUs, ZeRO-{stage}"
        f"{' + offload' if offload else ''}, micro-batch 1), the limit is {limit / 1e9:.3g} GB "
        f"({gpu_memory_bytes / 1e9:.3g} GB x {safety})",
        hint=", or ".join(hints),
        best_bytes=best_bytes,
        limit_bytes=limit,
    )


def _world_sizes(global_batch: int, max_gpus: int, *, pow2: bool) -> list[int]:
    """Allowed GPU counts, ascending: each divides global_batch and is at most max_gpus."""
    top = min(global_batch, max_gpus)
    if pow2:
        sizes = [2**i for i in range(top.bit_length()) if 2**i <= top]
    else:
        sizes = list(range(1, top + 1))
    return [n for n in sizes if global_batch % n == 0]


def _power_of_two_divisors(n: int) -> list[int]:
    """Powers of two that divide n, largest first."""
    return [2**i for i in reversed(range(n.bit_length())) if n % 2**i == 0]


def _count(n: float) -> str:
    """A parameter count for messages: 7.5B, 124M, 49.3K."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"
