"""`orch replay`: the strategies replayed on a finished sweep, scored at held-out runs."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from orchestrator.cli.command import command
from orchestrator.cli.output import console, table

EPILOG = """examples:
  orch replay sweep.csv --targets largest.csv --strategy active,random --budget-frac 0.1
  orch replay experiments/local --targets prod.csv --strategy active --budget-frac 0.05 \\
      --overhead-flops 1e18 --json replay.json
  orch replay bench/data/gadre2024_overtraining.csv --where dataset=rpj \\
      --targets rpj_largest.csv --strategy active --strategy random --budget-frac 0.25

SWEEP is a CSV/Parquet table of finished runs (N, D or C, loss; optionally C beside D,
run_id, group) or an experiment directory. TARGETS is a table of N and D (or C) to
predict; runs of SWEEP with a target's N and D are never chosen, and a loss column in
TARGETS is used only to score the predictions. Each strategy starts from the same seed
round and may spend --budget-frac of the pool's compute (each run: its C plus
--overhead-flops); a law is then fitted to the runs it chose (--form; by default every
form, weighed by backtest, as `orch fit` does) and predicts each target with a 90%
prediction interval. The "pool" row is that fit on every run of the pool: the error the
strategies try to match.
"""


def add_parser(sub) -> None:
    p = command(
        sub,
        "replay",
        run,
        help="replay strategies on a finished sweep, scored at held-out runs",
        epilog=EPILOG,
    )
    p.add_argument("sweep", help="a CSV/Parquet table of finished runs, or an experiment directory")
    p.add_argument(
        "--targets", required=True, metavar="TABLE", help="a CSV/Parquet table of N and D"
    )
    p.add_argument(
        "--where",
        action="append",
        type=_selection,
        default=[],
        metavar="COLUMN=VALUE",
        help="replay only SWEEP's rows with this value in this column (repeatable)",
    )
    p.add_argument(
        "--strategy",
        required=True,
        action="append",
        type=_strategies,
        metavar="NAMES",
        help="active, isoflop, random or grid; a comma list, or the option repeated",
    )
    p.add_argument(
        "--budget-frac",
        required=True,
        type=_fraction,
        metavar="F",
        help="share of the pool's compute each strategy may spend, in (0, 1]",
    )
    p.add_argument("--seed", type=int, default=0, help="the strategies' randomness (default 0)")
    p.add_argument(
        "--overhead-flops",
        type=_non_negative,
        default=0.0,
        metavar="X",
        help="compute each run costs beyond its C (start-up, evaluation), FLOPs; default 0",
    )
    p.add_argument(
        "--batch",
        type=_positive_int,
        default=None,
        metavar="N",
        help="runs per adaptive round (default: about 1%% of the pool, at least 4)",
    )
    p.add_argument(
        "--rel-width",
        type=_non_negative,
        default=0.0,
        metavar="W",
        help="stop a strategy once the 90%% prediction interval of its study's Chinchilla fit "
        "at every target is at most W of the prediction wide, as a plan's stop.rel_width "
        "(0, the default: spend the budget)",
    )
    p.add_argument(
        "--form",
        default="auto",
        choices=("auto", "chinchilla", "kaplan", "farseer", "overtraining"),
        help="the law that predicts at the targets: auto (every form, weighed by backtest; "
        "Chinchilla if none can be fitted), the default; or one law form",
    )
    p.add_argument(
        "--form-error-floor",
        type=_non_negative,
        default=None,
        metavar="K",
        help="with --form auto: the least form error its intervals allow, per decade of "
        "compute beyond the chosen runs, as a share of the loss (default: AutoLaw's, 0.015; "
        "0: its backtests alone)",
    )
    p.add_argument("--json", metavar="OUT", help="write every number shown (and more) to OUT")


def run(args: argparse.Namespace) -> int:
    from orchestrator.adaptive.replay import replay
    from orchestrator.adaptive.sweep import load_sweep, load_targets

    names = list(dict.fromkeys(name for group in args.strategy for name in group))
    result = replay(
        load_sweep(args.sweep, where=dict(args.where)),
        load_targets(args.targets),
        strategies=names,
        budget_frac=args.budget_frac,
        seed=args.seed,
        overhead_flops=args.overhead_flops,
        batch=args.batch,
        rel_width=args.rel_width,
        form=args.form,
        **({} if args.form_error_floor is None else {"form_error_floor": args.form_error_floor}),
    )
    render(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
        console.print(f"replay written to {args.json}")
    return 0


def render(result) -> None:
    """One row per strategy (and the pool), then every target's prediction."""
    outcomes = [*result.outcomes, *((result.reference,) if result.reference else ())]
    scored = any(o.scored for o in outcomes)
    console.print(f"replay of {result.sweep}, targets {result.targets}", highlight=False)
    summary = table(
        f"{result.pool_runs} runs in the pool ({result.pool_flops:.3g} FLOPs), "
        f"{len(outcomes[0].scores)} targets held out; budget {result.budget_frac:.3g} of the "
        f"pool ({result.budget_flops:.3g} FLOPs), seed {result.seed}; "
        f"round 0: {len(result.seed_run_ids)} runs",
        [
            "strategy",
            "runs",
            "rounds",
            "compute spent",
            "fit",
            *(["mean |error|", "90% interval covers"] if scored else []),
            "mean interval width",
            "stopped",
        ],
        left=("strategy", "fit", "stopped"),
    )
    for o in outcomes:
        cells = [
            o.strategy,
            str(len(o.run_ids)),
            str(o.adaptive_rounds),
            f"{o.spent_frac:.1%}",
            o.fit,
        ]
        if scored:
            error = o.mean_abs_error_pct
            cells += ["-" if error is None else f"{error:.2f}%", f"{o.covered}/{o.scored}"]
        width = o.mean_width_pct
        cells.append("-" if width is None else f"{width:.2f}%")
        summary.add_row(*cells, o.stop_reason)
    console.print(summary)
    predictions = table(
        "predicted loss at each target (90% prediction interval)",
        [
            "strategy",
            "N",
            "D",
            "predicted",
            "90% interval",
            *(["observed", "error"] if scored else []),
        ],
        left=("strategy",),
    )
    for o in outcomes:
        for s in o.scores:
            p = s.prediction
            cells = [
                o.strategy,
                f"{s.n_params:.3g}",
                f"{s.tokens:.3g}",
                "-" if p is None else f"{p.mean:.4f}",
                "-" if p is None else f"[{p.lo:.4f}, {p.hi:.4f}]",
            ]
            if scored:
                observed = "-" if s.observed is None else f"{s.observed:.4f}"
                error = "-" if s.error_pct is None else f"{s.error_pct:.2f}%"
                cells += [observed, error + ("" if s.covered in (None, True) else " (outside)")]
            predictions.add_row(*cells)
    console.print(predictions)
    for o in outcomes:
        if o.fit_note:
            console.print(f"[yellow]note:[/yellow] {o.strategy}: {o.fit_note}", highlight=False)


def _strategies(text: str) -> list[str]:
    from orchestrator.adaptive.strategies import NAMES

    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"expected some of {', '.join(NAMES)} (a comma list), got {text!r}"
        )
    return names


def _checked(parse, ok, expected: str):
    """An argparse type: `parse(text)` when it parses and passes `ok`, else one error
    naming what was `expected`."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return convert


_fraction = _checked(float, lambda v: 0 < v <= 1, "a fraction in (0, 1], like 0.1")
_non_negative = _checked(float, lambda v: 0 <= v < math.inf, "a finite number >= 0")
_positive_int = _checked(int, lambda v: v >= 1, "a whole number >= 1")


def _selection(text: str) -> tuple[str, str]:
    column, sep, value = text.partition("=")
    if not sep or not column:
        raise argparse.ArgumentTypeError(f"expected COLUMN=VALUE, like dataset=rpj, got {text!r}")
    return column, value
