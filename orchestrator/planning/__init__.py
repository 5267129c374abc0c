"""Planning: a plan file in, validated dataclasses and sized, costed runs out.

Nothing here imports torch: a laptop can check and cost a plan without the training stack.
"""

from orchestrator.planning.expand import ExpandedPlan, PlannedRun, expand_plan
from orchestrator.planning.parse import load_plan, parse_plan
from orchestrator.planning.plan import Plan
from orchestrator.planning.reader import PlanError
from orchestrator.planning.stored import load_experiment_plan

__all__ = [
    "ExpandedPlan",
    "Plan",
    "PlanError",
    "PlannedRun",
    "expand_plan",
    "load_experiment_plan",
    "load_plan",
    "parse_plan",
]
