"""When a study stops: the target known well enough, rounds used up, budget, or a grid done.

Each rule returns a reason (a sentence for the store and the user) or None. The budget
rule lives with the ledger's remaining FLOPs and is applied by the Study when no
candidate fits what is left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from orchestrator.adaptive.targets import Target
from orchestrator.laws import Prediction


def relative_width(pred: Prediction) -> float:
    """(hi - lo) / estimate; inf when the interval or the estimate is not finite."""
    lo, hi, mean = float(pred.lo), float(pred.hi), float(pred.mean)
    if not all(math.isfinite(v) for v in (lo, hi, mean)) or mean <= 0:
        return math.inf
    return (hi - lo) / mean


def width_reason(
    estimate: Mapping[str, Prediction] | None, *, rel_width: float, target: Target
) -> str | None:
    """The target's every quantity (`targets.target_estimate`: L_opt, N_opt at C*, the
    loss of each target run) has a relative interval width of at most `rel_width`."""
    if not estimate or rel_width <= 0:
        return None
    widths = {q: relative_width(p) for q, p in estimate.items()}
    if all(w <= rel_width for w in widths.values()):
        shown = ", ".join(f"{target.describe(q)} {w:.1%}" for q, w in widths.items())
        return f"target: {target.level:.0%} interval widths {shown} <= {rel_width:.1%}"
    return None


def rounds_reason(rounds_done: int, *, max_rounds: int) -> str | None:
    if rounds_done >= max_rounds:
        return f"rounds: {rounds_done} adaptive rounds done (max {max_rounds})"
    return None


def budget_reason(remaining_flops: float, cheapest_flops: float | None, strategy: str) -> str:
    """Why a strategy proposed nothing: the budget, or the strategy itself."""
    if cheapest_flops is not None and cheapest_flops <= remaining_flops:
        return (
            f"strategy: {strategy} proposes no further run "
            f"({remaining_flops:.3g} FLOPs left, runs from {cheapest_flops:.3g} fit)"
        )
    if cheapest_flops is None:
        return f"budget: {remaining_flops:.3g} FLOPs left and no candidate run left to make"
    return (
        f"budget: {remaining_flops:.3g} FLOPs left, the cheapest candidate needs "
        f"{cheapest_flops:.3g}"
    )


def grid_reason(runs: int) -> str:
    """A plan without adaptive rounds stops once its grid's runs have ended."""
    return f"grid: the plan's {runs} runs have ended (no adaptive rounds)"
