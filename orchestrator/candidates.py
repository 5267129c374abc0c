"""The runs an adaptive round may choose from: feasible shapes x compute levels.

Levels double from the seed grid's smallest to `adaptive.max_run_flops` (default: twice
the seed grid's largest level). At each level, model sizes are log-spaced over the
square of the plan's size spread around the prior N_opt(C) (13 sizes: a step of about
1.6x for a spread of 16), so that a strategy can follow an optimum the prior misplaced
by up to that spread. Each size is rounded to the nearest shape the plan's shape rule
allows and built by the planner exactly like a seed run (tokens, batch, learning rate,
GPUs, ZeRO stage), so every candidate is a run the backend can really start.
"""

from __future__ import annotations

import logging
import math

from orchestrator.plan import Plan
from orchestrator.plan_reader import PlanError
from orchestrator.planner import ADAPTIVE, plan_run, prior_n_opt
from orchestrator.shapes import DEFAULT_RULE, TINY_RULE, ShapeError, shape_for_params
from orchestrator.strategies.base import Candidate

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
                run = plan_run(plan, shape, level, stage=ADAPTIVE)
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
