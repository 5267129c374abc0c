"""From a plan to sized, costed runs: `expand_plan(plan) -> ExpandedPlan`.

Budget plans get a seed IsoFLOP grid: `levels` compute levels log-spaced from
`min_flops` up to `max_flops` (or the largest the budget allows once `adaptive_share` is
held back), and at each level `sizes_per_level` model sizes log-spaced over a factor
`size_spread` around the prior N_opt(C) = sqrt(C / (6 k)), from Chinchilla's D_opt = k N_opt
with k = 20 tokens per parameter (Hoffmann et al. 2022, Table 3) unless the plan says
otherwise. Grid plans name their sizes and levels directly.

Every run gets its tokens from its level and its FLOPs per token (the plan's counting
method), a learning rate and batch from the plan's rule, and on accelerators the fewest
GPUs and lowest ZeRO stage that fit memory (and the wall-time limit, if any).
"""

from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass, replace

import numpy as np

from orchestrator.laws.axis import ComputeAxis
from orchestrator.planning import flops as flops_lib
from orchestrator.planning.axis import compute_axis
from orchestrator.planning.hardware import ACCELERATORS, gpu_hours
from orchestrator.planning.hparams import choose_hparams
from orchestrator.planning.ledger import Ledger
from orchestrator.planning.memory import SizingError, fit_run, memory_per_gpu
from orchestrator.planning.plan import Plan
from orchestrator.planning.reader import Reader
from orchestrator.planning.shapes import DEFAULT_RULE, TINY_RULE, ShapeError, shape_for_params
from workers.spec import RunSpec, Shape, SpecError

log = logging.getLogger(__name__)

SEED, ADAPTIVE = "seed", "adaptive"


@dataclass(frozen=True)
class PlannedRun:
    stage: str
    level_flops: float  # the IsoFLOP level this run belongs to, FLOPs
    target_params: float | None  # the N the planner aimed for (None: given by the plan)
    spec: RunSpec
    n_params: int  # non-embedding parameters reached
    n_params_total: int
    flops: float  # training FLOPs by the plan's counting method
    flops_6nd: float  # 6 N D, for comparison
    gpu_hours: float  # accelerator-hours at the plan's expected MFU
    memory_bytes: float  # estimated peak per accelerator


@dataclass(frozen=True)
class ExpandedPlan:
    runs: tuple[PlannedRun, ...]
    budget_flops: float | None  # None: no budget given (a grid plan)
    adaptive_flops: float  # held back for adaptive rounds

    @property
    def specs(self) -> list[RunSpec]:
        return [r.spec for r in self.runs]

    @property
    def seed_flops(self) -> float:
        return sum(r.flops for r in self.runs)

    @property
    def gpu_hours(self) -> float:
        return sum(r.gpu_hours for r in self.runs)

    def ledger(self) -> Ledger:
        """The budget ledger with every stage planned and nothing committed yet."""
        ledger = Ledger(self.budget_flops)
        for run in self.runs:
            ledger.plan(run.stage, run.flops, run.gpu_hours)
        if self.adaptive_flops:
            ledger.plan(ADAPTIVE, self.adaptive_flops)
        return ledger


def expand_plan(plan: Plan, *, reader: Reader | None = None) -> ExpandedPlan:
    """Expand `plan` into runs. Problems are PlanErrors pointing into the plan file.

    Args:
        reader: the validating reader of the plan file, for line numbers in errors
            (`load_plan` passes it); without it errors name the key only.
    """
    hit = _EXPANDED.get(id(plan))
    if hit is not None and hit[0]() is plan:
        return hit[1]
    r = reader or Reader(plan.path, {})
    if plan.grid is not None:
        runs = _grid_runs(plan, r)
    else:
        runs = _seed_runs(plan, r)
    budget = plan.budget.flops if plan.budget else None
    adaptive = budget * plan.budget.adaptive_share if plan.budget else 0.0
    study = ExpandedPlan(tuple(runs), budget, adaptive)
    if budget is not None and study.seed_flops > budget - adaptive:
        r.fail(
            ("budget", "flops"),
            f"the seed runs need {study.seed_flops:.3g} FLOPs but the "
            f"budget leaves {budget - adaptive:.3g} for them (of {budget:.3g}, "
            f"{plan.budget.adaptive_share:g} held back)",
        )
    while len(_EXPANDED) >= 8:
        _EXPANDED.pop(next(iter(_EXPANDED)))
    _EXPANDED[id(plan)] = (weakref.ref(plan), study)
    return study


# The last plans expanded, by identity: `load_plan` expands a plan to check it and the
# study expands it again to run it, and a grid of 10,000 runs takes seconds to size. A
# Plan is frozen, so the same object always expands the same; the weak reference tells a
# new plan that reuses a freed one's id from it.
_EXPANDED: dict[int, tuple[weakref.ref, ExpandedPlan]] = {}


def _grid_runs(plan: Plan, r: Reader) -> list[PlannedRun]:
    runs = []
    for level in plan.grid.compute_flops:
        for j, size in enumerate(plan.grid.sizes):
            if not size.runs_at(level):
                continue
            key = ("grid", "sizes", j)
            try:
                shape = Shape(
                    n_layer=size.n_layer,
                    d_model=size.d_model,
                    n_head=size.n_head,
                    **plan.shape_defaults,
                )
                shape.validate()
            except SpecError as err:
                r.fail(key, err.message)
            runs.append(
                _run(
                    plan,
                    r,
                    key,
                    SEED,
                    level,
                    shape,
                    None,
                    world_size=size.world_size,
                    zero_stage=size.zero_stage,
                )
            )
    return runs


def _seed_runs(plan: Plan, r: Reader) -> list[PlannedRun]:
    grid = plan.seed_grid
    rule = TINY_RULE if grid.shape_rule == "tiny" else DEFAULT_RULE
    levels = _levels(plan, r)
    axis = compute_axis(plan)
    runs = []
    for level in levels:
        n_opt = _prior_n_opt(grid, level, axis)
        k = grid.sizes_per_level
        offsets = [(i - (k - 1) / 2) / max(1, k - 1) for i in range(k)]
        seen = set()
        for offset in offsets:
            target = n_opt * grid.size_spread**offset
            try:
                choice = shape_for_params(target, rule=rule, **plan.shape_defaults)
            except ShapeError as err:
                r.fail(("seed_grid", "min_flops"), f"at {level:.3g} FLOPs: {err}")
            if choice.shape in seen:  # two targets round to one shape: run it once
                continue
            seen.add(choice.shape)
            runs.append(_run(plan, r, ("seed_grid",), SEED, level, choice.shape, target))
    return runs


def prior_n_opt(plan: Plan, flops: float) -> float:
    """The plan's prior compute-optimal N (parameters) at `flops`, as the seed grid uses,
    with C counted by the plan's `flops_method` (planning/axis.py)."""
    return _prior_n_opt(plan.seed_grid, flops, compute_axis(plan))


def _prior_n_opt(grid, flops: float, axis: ComputeAxis) -> float:
    """The prior compute-optimal N at `flops` on `axis`: from a previous Chinchilla fit,
    the N minimising L(N, C / per_token(N)) (for C = 6ND in closed form, Hoffmann et al.
    2022, eq. 4: N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+
    beta))); else the N whose D = k N tokens spend C (for 6ND, sqrt(C / (6 k)))."""
    p = grid.prior_fit
    if axis.per_token is None:
        if p is None:
            return math.sqrt(flops / (6.0 * grid.tokens_per_param))
        a, b = p["alpha"], p["beta"]
        g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
        return g * (flops / 6.0) ** (b / (a + b))
    n = np.exp(_LOG_N_SEARCH)
    tokens = axis.tokens(n, flops)
    if p is None:
        # Along D = k N, C grows with N: one crossing, found on the log grid.
        excess = np.log(tokens / (grid.tokens_per_param * n))  # decreasing in N
        return float(np.exp(np.interp(0.0, excess[::-1], _LOG_N_SEARCH[::-1])))
    loss = p["A"] * n ** -p["alpha"] + p["B"] * tokens ** -p["beta"]
    return float(n[int(np.argmin(loss))])


# N from 10 to 1e15 parameters in steps of 0.2%: finer than any shape rule's rounding.
_LOG_N_SEARCH = np.linspace(np.log(10.0), np.log(1e15), 16_000)


def _levels(plan: Plan, r: Reader) -> list[float]:
    grid = plan.seed_grid
    n = grid.levels
    if grid.max_flops is not None or n == 1:
        top = grid.max_flops or grid.min_flops
        return _log_spaced(grid.min_flops, top, n)
    # The largest top level whose grid fits the seed share (nominal cost: sizes x levels;
    # 1% kept for rounding runs to whole optimizer steps).
    allowed = plan.budget.flops * (1 - plan.budget.adaptive_share) * 0.99
    cost = lambda top: grid.sizes_per_level * sum(_log_spaced(grid.min_flops, top, n))  # noqa: E731
    if cost(grid.min_flops) > allowed:
        r.fail(
            ("seed_grid", "min_flops"),
            f"{n} levels of {grid.sizes_per_level} runs from "
            f"{grid.min_flops:.3g} FLOPs need at least {cost(grid.min_flops):.3g} FLOPs; the "
            f"budget allows {allowed:.3g} for the seed grid",
        )
    lo, hi = math.log(grid.min_flops), math.log(grid.min_flops) + 80
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(math.exp(mid)) <= allowed else (lo, mid)
    return _log_spaced(grid.min_flops, math.exp(lo), n)


def _log_spaced(lo: float, hi: float, n: int) -> list[float]:
    if n == 1:
        return [lo]
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def planned_run(
    plan: Plan, shape: Shape, level_flops: float, *, stage: str = ADAPTIVE
) -> PlannedRun:
    """One run of `shape` sized to spend about `level_flops`, built as the seed runs are
    (tokens, hyper-parameters, GPUs and ZeRO stage); for runs chosen after planning.

    Raises:
        PlanError: the run cannot be built (e.g. it fits no GPU), naming the plan.
    """
    return _run(plan, Reader(plan.path, {}), ("adaptive",), stage, level_flops, shape, None)


def _run(
    plan: Plan,
    r: Reader,
    key: tuple,
    stage: str,
    level: float,
    shape: Shape,
    target: float | None,
    *,
    world_size: int | None = None,
    zero_stage: int | None = None,
) -> PlannedRun:
    counts = flops_lib.count_params(shape)
    per_token = flops_lib.flops_per_token(shape, method=plan.flops_method)
    t = plan.train
    tokens_guess = level / per_token
    hp = choose_hparams(
        t.hparams,
        n_params=counts.non_embedding_params,
        tokens=tokens_guess,
        flops=level,
        seq_len=shape.seq_len,
        fixed_lr=t.schedule.peak_lr,
        fixed_batch=t.global_batch,
    )
    accelerator = ACCELERATORS[plan.hardware.accelerator]
    precision = "bf16" if t.precision == "bf16" else "fp32"
    if world_size is None:  # planned: size the run for the hardware
        hours_alone = gpu_hours(level, accelerator, mfu=plan.hardware.mfu)
        min_gpus = 1
        if plan.hardware.max_wall_hours:
            min_gpus = math.ceil(hours_alone / plan.hardware.max_wall_hours)
        try:
            sizing = fit_run(
                counts.params_total,
                shape,
                hp.global_batch,
                gpu_memory_bytes=accelerator.memory_bytes,
                max_gpus=plan.hardware.max_gpus_per_run,
                safety=plan.hardware.memory_safety,
                allow_offload=plan.hardware.allow_offload,
                precision=precision,
                min_gpus=min_gpus,
            )
        except SizingError as err:
            r.fail(
                key, f"run of {counts.non_embedding_params:.3g} params at {level:.3g} FLOPs: {err}"
            )
        world_size, zero_stage, micro = sizing.world_size, sizing.zero_stage, sizing.micro_batch
        offload, memory = sizing.offload_optimizer, sizing.memory.total_bytes
    else:
        micro = t.micro_batch or max(1, hp.global_batch // world_size)
        offload = False
        memory = memory_per_gpu(
            counts.params_total,
            shape,
            micro_batch=micro,
            zero_stage=zero_stage,
            world_size=world_size,
            precision=precision,
        ).total_bytes
    tokens_per_step = hp.global_batch * shape.seq_len
    steps = max(1, round(level / per_token / tokens_per_step))
    try:
        spec = RunSpec(
            shape=shape,
            tokens=steps * tokens_per_step,
            global_batch=hp.global_batch,
            micro_batch=micro,
            schedule=_with_lr(t.schedule, hp.peak_lr),
            weight_decay=t.weight_decay,
            grad_clip=t.grad_clip,
            seed=t.seed,
            data=plan.data,
            zero_stage=zero_stage,
            offload_optimizer=offload,
            precision=t.precision,
            world_size=world_size,
            eval_every_steps=t.eval_every_steps,
            eval_batches=t.eval_batches,
            checkpoint_every_steps=t.checkpoint_every_steps,
            log_every_steps=t.log_every_steps,
            flops_per_token=per_token,
            sinks=plan.sinks,
        )
    except SpecError as err:
        r.fail(key, err.message)
    run_flops = per_token * spec.tokens
    return PlannedRun(
        stage=stage,
        level_flops=level,
        target_params=target,
        spec=spec,
        n_params=counts.non_embedding_params,
        n_params_total=counts.params_total,
        flops=run_flops,
        flops_6nd=6.0 * counts.non_embedding_params * spec.tokens,
        gpu_hours=gpu_hours(run_flops, accelerator, mfu=plan.hardware.mfu),
        memory_bytes=memory,
    )


def _with_lr(schedule, peak_lr: float):
    return replace(schedule, peak_lr=peak_lr)
