"""The plan's compute axis: C as the plan counts it, as a function of N and D, for the fits.

The planner sizes every run with the plan's `flops_method`; the study's fit, the report
and the strategies must read N_opt(C) on the same count, or N_opt(C*) answers a
different budget than the one planned (see `orchestrator.laws.axis`).
"""

from __future__ import annotations

import functools

import numpy as np

from orchestrator.laws.axis import SIX_ND, ComputeAxis
from orchestrator.planning import flops as flops_lib
from orchestrator.planning.plan import Plan
from orchestrator.planning.shapes import (
    DEFAULT_RULE,
    MAX_TARGET_PARAMS,
    TINY_RULE,
    ShapeError,
    shape_for_params,
)
from workers.spec import Shape

# C / 6ND steps with the discrete widths of the shape rule (the embedding's share of N_total
# most): sampled this finely, interpolation is within a few percent of every shape's count.
_SAMPLES_PER_DECADE = 24


def compute_axis(plan: Plan) -> ComputeAxis:
    """C = per_token(N) D as `plan.flops_method` counts it, N non-embedding.

    For a seed grid (adaptive plans), at the shapes the plan's shape rule gives N from the
    smallest it allows to the largest the planner sizes, so any run the plan could make
    is counted within a few percent. For an explicit grid, at the grid's own shapes, and
    held at the nearest one's ratio to 6 N beyond them.
    """
    if plan.flops_method == "6nd":
        return SIX_ND
    defaults = tuple(sorted(plan.shape_defaults.items()))
    if plan.grid is not None:
        sizes = tuple((s.n_layer, s.d_model, s.n_head) for s in plan.grid.sizes)
        return _grid_axis(plan.flops_method, sizes, defaults)
    return _rule_axis(plan.flops_method, plan.seed_grid.shape_rule, defaults)


@functools.lru_cache(maxsize=32)
def _grid_axis(method: str, sizes: tuple, defaults: tuple) -> ComputeAxis:
    shapes = [Shape(n_layer=n, d_model=d, n_head=h, **dict(defaults)) for n, d, h in sizes]
    return _axis(method, shapes)


@functools.lru_cache(maxsize=32)  # a few hundred shape searches: once per plan, not per level
def _rule_axis(method: str, rule_name: str, defaults: tuple) -> ComputeAxis:
    rule = TINY_RULE if rule_name == "tiny" else DEFAULT_RULE
    lo, hi = np.log10(rule.smallest_params()), np.log10(MAX_TARGET_PARAMS)
    shapes = []
    for target in np.logspace(lo, hi, int((hi - lo) * _SAMPLES_PER_DECADE) + 1):
        try:
            shapes.append(shape_for_params(round(target), rule=rule, **dict(defaults)).shape)
        except ShapeError:  # rounding at either end of the rule's range
            continue
    return _axis(method, shapes)


def _axis(method: str, shapes: list[Shape]) -> ComputeAxis:
    n = np.array([flops_lib.count_params(s).non_embedding_params for s in shapes], dtype=float)
    per_token = np.array([flops_lib.flops_per_token(s, method=method) for s in shapes])
    return ComputeAxis.from_ratios(method, n, per_token / (6.0 * n))
