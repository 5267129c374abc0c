"""`orch plan`: the costed table of a plan's runs; runs nothing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestrator.cli.command import command
from orchestrator.cli.output import console, table
from orchestrator.planning import load_plan
from orchestrator.planning.expand import expand_plan

EPILOG = """examples:
  orch plan plans/chinchilla.yaml          # the costed table; runs nothing
  orch plan plans/local.yaml --json -      # the same as JSON on stdout
"""


def add_parser(sub) -> None:
    p = command(
        sub,
        "plan",
        run,
        help="cost a plan's runs without running anything",
        epilog=EPILOG,
    )
    p.add_argument("plan", help="plan YAML file")
    p.add_argument("--json", metavar="OUT", help="write the runs as JSON to OUT ('-': stdout)")


def run(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    study = expand_plan(plan)
    if args.json:
        text = json.dumps(_plan_json(plan, study), indent=2)
        if args.json == "-":
            sys.stdout.write(text + "\n")
            return 0
        Path(args.json).write_text(text + "\n")
    hw = plan.hardware
    t = table(
        f"plan {plan.name}: {len(study.runs)} runs on {hw.accelerator} (expected MFU {hw.mfu:g})",
        [
            "run",
            "stage",
            "C (FLOPs)",
            "N (params)",
            "layers x width",
            "D (tokens)",
            "batch",
            "lr",
            "GPUs",
            "ZeRO",
            "micro x accum",
            "GB/GPU",
            "GPU-hours",
        ],
        left=("run", "stage"),
    )
    for run in study.runs:
        s = run.spec
        t.add_row(
            s.run_id,
            run.stage,
            f"{run.flops:.3g}",
            f"{run.n_params:.3g}",
            f"{s.shape.n_layer} x {s.shape.d_model}",
            f"{s.tokens:.3g}",
            str(s.global_batch),
            f"{s.schedule.peak_lr:.2g}",
            str(s.world_size),
            f"{s.zero_stage}{'+off' if s.offload_optimizer else ''}",
            f"{s.micro_batch} x {s.grad_accum}",
            f"{run.memory_bytes / 1e9:.3g}",
            f"{run.gpu_hours:.3g}",
        )
    console.print(t)
    line = f"seed runs: {study.seed_flops:.3g} FLOPs, {study.gpu_hours:.3g} GPU-hours"
    if study.budget_flops:
        line += (
            f"; budget {study.budget_flops:.3g} FLOPs ({study.seed_flops / study.budget_flops:.0%}"
            f" planned, {study.adaptive_flops:.3g} held back for adaptive rounds)"
        )
    console.print(line)
    if args.json and args.json != "-":
        console.print(f"runs written to {args.json}")
    return 0


def _plan_json(plan, study) -> dict:
    return {
        "plan": plan.name,
        "experiment": plan.experiment_uri,
        "budget_flops": study.budget_flops,
        "seed_flops": study.seed_flops,
        "adaptive_flops": study.adaptive_flops,
        "gpu_hours": study.gpu_hours,
        "runs": [
            {
                "run_id": r.spec.run_id,
                "stage": r.stage,
                "level_flops": r.level_flops,
                "flops": r.flops,
                "flops_6nd": r.flops_6nd,
                "n_params": r.n_params,
                "n_params_total": r.n_params_total,
                "gpu_hours": r.gpu_hours,
                "memory_bytes": r.memory_bytes,
                "spec": r.spec.to_dict(),
            }
            for r in study.runs
        ],
    }
