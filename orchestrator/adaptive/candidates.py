"""The runs an adaptive round may choose from: feasible shapes x compute levels.

Levels double from the seed grid's smallest to `adaptive.max_run_flops` (default: twice
the seed grid's largest level). At each level, model sizes are log-spaced over the
square of the plan's size spread around the prior N_opt(C) (13 sizes: a step of about
1.6x for a spread of 16), so that a strategy can follow an optimum the prior misplaced
by up to that spread. Each size is rounded to the nearest shape the plan's shape rule
allows and built by the planner exactly like a seed run (tokens, batch, learning rate,
GPUs, ZeRO stage), so every candidate is a run the backend can really start.

With a WSD schedule, each finished run also offers its cooldown branches
(`branch_candidates`): a decay started from one of its kept stable-phase checkpoints
gives the loss of a fully trained run at fewer tokens for the cost of the decay alone
(Hägele et al. 2024, sec. 3), which a per-FLOP strategy values accordingly.
"""

from __future__ import annotations

import logging
import math

from orchestrator.adaptive.strategies.base import Candidate
from orchestrator.planning import Plan
from orchestrator.planning.expand import ADAPTIVE, planned_run, prior_n_opt
from orchestrator.planning.reader import PlanError
from orchestrator.planning.shapes import DEFAULT_RULE, TINY_RULE, ShapeError, shape_for_params
from orchestrator.scheduler.execution import run_flops
from workers.spec import RunSpec, SpecError

log = logging.getLogger(__name__)

_SIZES_PER_LEVEL = 13
_MIN_STEPS = 20  # fewer optimizer steps than this is not a training run worth fitting


def candidate_pool(plan: Plan, seed_levels: list[float]) -> list[Candidate]:
    """Every candidate run, in a fixed order (level, then size), ascending.

    Args:
        seed_levels: the compute levels of the seed grid, FLOPs.
    """
    grid, adaptive = plan.seed_grid, plan.adaptive
    lo, hi = min(seed_levels), max(seed_levels)
    top = adaptive.max_run_flops if adaptive.max_run_flops else 2.0 * hi
    n_levels = max(1, math.ceil(math.log2(top / lo) - 1e-9)) + 1
    levels = [lo * (top / lo) ** (i / (n_levels - 1)) for i in range(n_levels)]
    if n_levels == 1:
        levels = [lo]
    rule = TINY_RULE if grid.shape_rule == "tiny" else DEFAULT_RULE
    spread = grid.size_spread**2
    pool: list[Candidate] = []
    for level in levels:
        centre = prior_n_opt(plan, level)
        shapes = []
        for i in range(_SIZES_PER_LEVEL):
            offset = i / (_SIZES_PER_LEVEL - 1) - 0.5
            try:
                choice = shape_for_params(
                    round(centre * spread**offset), rule=rule, **plan.shape_defaults
                )
            except ShapeError:
                continue  # below the smallest model the rule allows
            if choice.shape not in shapes:
                shapes.append(choice.shape)
        for shape in shapes:
            try:
                run = planned_run(plan, shape, level, stage=ADAPTIVE)
            except PlanError as err:
                log.debug("no candidate %s at %.3g FLOPs: %s", shape, level, err)
                continue
            if run.spec.steps < _MIN_STEPS:
                continue
            pool.append(
                Candidate(
                    spec=run.spec,
                    n_params=float(run.n_params),
                    tokens=float(run.spec.tokens),
                    flops=run.flops,
                    level_flops=level,
                )
            )
    return pool


def branch_candidates(parents: list[tuple[RunSpec, float]]) -> list[Candidate]:
    """The WSD cooldown branches of finished runs, at every kept stable-phase checkpoint.

    Args:
        parents: (spec, non-embedding params) of finished runs, in a fixed order.

    A branch decays for the parent's cooldown fraction of its own length; its cost is
    only those decay steps (`loop.run_flops`).
    """
    out: list[Candidate] = []
    for spec, n_params in parents:
        sched, every = spec.schedule, spec.checkpoint_every_steps
        if sched.kind != "wsd" or not spec.keep_checkpoints or not every or spec.branch_from:
            continue
        if not 0 < sched.cooldown_frac < 1:
            continue
        first = max(every, -(-sched.warmup_steps(spec.steps) // every) * every)
        for at_step in range(first, sched.decay_start(spec.steps) + 1, every):
            decay = max(1, round(at_step * sched.cooldown_frac / (1 - sched.cooldown_frac)))
            if at_step + decay >= spec.steps:
                continue  # no fewer tokens than the parent itself
            try:
                branch = spec.wsd_branch(at_step=at_step, decay_steps=decay)
            except SpecError as err:
                log.debug("no branch of %s at step %d: %s", spec.run_id, at_step, err)
                continue
            per_token = branch.flops_per_token or 6.0 * n_params
            if branch.steps < _MIN_STEPS:
                continue
            out.append(
                Candidate(
                    spec=branch,
                    n_params=n_params,
                    tokens=float(branch.tokens),
                    flops=run_flops(branch),
                    level_flops=per_token * branch.tokens,
                )
            )
    return out
