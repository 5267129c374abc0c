"""`orch fit`: fit a law to an experiment or a table, and how fits are shown."""

from __future__ import annotations

import argparse

from orchestrator.cli.command import command
from orchestrator.cli.output import console, table

EPILOG = """examples:
  orch fit experiments/local               # an experiment: C counted as its plan counts it
  orch fit points.csv                      # columns N, D (or C) and loss; every form,
                                           # weighed by backtest, with that table
  orch fit points.csv --form chinchilla --bootstrap 1000
  orch fit experiments/local --approach envelope   # Hoffmann et al.'s Approach 1
  orch fit experiments/local --curves      # the learning-rate-annealing law on every
                                           # run's loss curve, running runs included
"""


def add_parser(sub) -> None:
    p = command(
        sub,
        "fit",
        run,
        help="fit a scaling law to an experiment or a table",
        epilog=EPILOG,
    )
    p.add_argument("path", help="experiment directory, or a CSV/Parquet file")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="bootstrap resamples for intervals (default: Jacobian covariance)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap resampling seed")
    p.add_argument(
        "--form",
        default="auto",
        choices=("auto", "chinchilla", "kaplan", "farseer", "overtraining"),
        help="auto: every form, weighed by how well it predicted held-out larger runs, "
        "with that backtest table (the default); or one law form",
    )
    p.add_argument(
        "--approach",
        default="parametric",
        choices=("parametric", "envelope", "isoflop"),
        help="parametric: a form for L(N, D) (Hoffmann et al.'s Approach 3, the default); "
        "envelope: the lowest training curve at each compute (Approach 1, experiments "
        "only); isoflop: a parabola per compute level (Approach 2)",
    )
    p.add_argument(
        "--min-tokens-per-param",
        default="auto",
        type=_min_tokens_per_param,
        metavar="auto|none|X",
        help="leave out runs trained on fewer tokens per parameter: auto (the default, "
        "--form auto only): the under-trained edge where every reliable form misfits the "
        "runs, if the residuals show one; none: keep every run; or a number X",
    )
    p.add_argument("--json", metavar="OUT", help="write the fit record to this JSON file")
    p.add_argument(
        "--curves",
        action="store_true",
        help="fit the learning-rate-annealing law (Tissue et al. 2024) to every run's loss "
        "curve, tied across sizes (experiments only; --bootstrap N sets its cluster-bootstrap "
        "refits, default 200): its parameters, the final loss of each unfinished run and the "
        "frontier for cosine runs",
    )


def _min_tokens_per_param(text: str) -> float | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def render_fit(fit) -> None:
    """Parameters with their 95% intervals, then the compute-optimal frontier."""
    _print_params(
        f"{fit.form}{f' ({fit.chosen})' if fit.chosen else ''} fit on {fit.n_obs} runs "
        f"({fit.interval_method} intervals)",
        fit.params,
    )
    _print_frontier("compute-optimal frontier", fit.axis, fit.frontier)
    if fit.backtest:
        backtest = table(
            f"backtest: fitted below compute cut-offs, scored on the runs above "
            f"(chosen: {fit.chosen}; the frontier averages the forms by weight)",
            ["form", "origins", "held out", "mean abs error", "90% interval covers", "weight"],
        )
        for row in fit.backtest:
            if not row.origins:
                backtest.add_row(row.form, "0", "0", "-", "-", f"{row.weight:.3f}")
                continue
            backtest.add_row(
                row.form,
                str(row.origins),
                str(row.held_out),
                f"{row.mean_abs_pct_error:.2f}%",
                f"{row.coverage:.0%}",
                f"{row.weight:.3f}",
            )
        console.print(backtest)
    for warning in fit.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def _print_params(title: str, params) -> None:
    """A table of parameters (`.name`, `.value`, `.lo`, `.hi`) with 95% intervals."""
    t = table(title, ["parameter", "value", "95% interval"])
    for p in params:
        t.add_row(p.name, f"{p.value:.4g}", f"[{p.lo:.4g}, {p.hi:.4g}]")
    console.print(t)


def _print_frontier(title: str, axis: str, rows, *, with_loss: bool = True) -> None:
    """N_opt and D_opt (and the loss there) at each budget, with 95% intervals."""
    columns = ["C (FLOPs)", "N_opt (params)", "D_opt (tokens)"] + (["loss"] if with_loss else [])
    t = table(f"{title} (95% intervals; C counted as {axis})", columns)
    for row in rows:
        cells = [f"{row.flops:.3g}", _interval(row.n_opt, ".3g"), _interval(row.d_opt, ".3g")]
        t.add_row(*cells, *([_interval(row.loss_opt, ".4f")] if with_loss else []))
    console.print(t)


def _interval(p, fmt: str) -> str:
    return f"{format(p.mean, fmt)} [{format(p.lo, fmt)}, {format(p.hi, fmt)}]"


def render_approach(fit) -> None:
    """An Approach 1 or 2 fit: its exponents, then the frontier they give."""
    exponents = table(
        f"{fit.approach} fit on {fit.n_runs} runs: {fit.detail}",
        ["exponent", "value", "95% interval"],
    )
    for name, p in (("a (N_opt ~ C^a)", fit.n_exponent), ("b (D_opt ~ C^b)", fit.d_exponent)):
        exponents.add_row(name, f"{p.mean:.3f}", f"[{p.lo:.3f}, {p.hi:.3f}]")
    console.print(exponents)
    _print_frontier("compute-optimal frontier", fit.axis, fit.frontier, with_loss=False)


def render_curve_fit(fit) -> None:
    """The curve law's parameters (L = E + A_N / N^a + A S1^-alpha - C N^gamma S2, Tissue et al.
    2024), each unfinished run's final loss predicted from its curve, then the frontier."""
    sources = ", ".join(f"{n} {kind}" for kind, n in sorted(fit.sources.items()))
    _print_params(
        f"annealing law, lam {fit.lam:g}: {fit.n_runs} runs ({sources}), "
        f"{fit.n_points} points, {fit.n_bootstrap} bootstrap refits",
        fit.params,
    )
    if fit.running:
        runs = table(
            "unfinished runs: final loss predicted from the curve so far (90% intervals)",
            ["run", "N (params)", "schedule", "steps", "last loss", "predicted final loss"],
            left=("run", "schedule"),
        )
        for r in fit.running:
            runs.add_row(
                r.run_id,
                f"{r.n_params:.3g}",
                r.schedule,
                f"{r.last_step}/{r.total_steps}",
                f"{r.last_loss:.4f} ({r.source})",
                _interval(r.final, ".4f"),
            )
        console.print(runs)
    _print_frontier(f"compute-optimal frontier for {fit.family}", fit.axis, fit.frontier)
    for warning in fit.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def run(args: argparse.Namespace) -> int:
    from orchestrator.laws import fit_path

    if args.curves:
        from orchestrator.laws.curve_report import fit_curves_path
        from storage.errors import OrchError

        if args.form != "auto" or args.approach != "parametric" or args.json:
            raise OrchError("--curves takes no --form, --approach or --json")
        fit = fit_curves_path(
            args.path, bootstrap=args.bootstrap or 200, seed=args.seed, axis=_plan_axis(args.path)
        )
        render_curve_fit(fit)
        return 0

    if args.approach != "parametric":
        from orchestrator.laws.approaches import fit_approach
        from storage.errors import OrchError

        if args.form != "auto" or args.bootstrap or args.json:
            raise OrchError("--approach envelope/isoflop takes no --form, --bootstrap or --json")
        render_approach(fit_approach(args.path, args.approach, axis=_plan_axis(args.path)))
        return 0
    fit = fit_path(
        args.path,
        form=args.form,
        bootstrap=args.bootstrap,
        seed=args.seed,
        axis=_plan_axis(args.path),
        min_tokens_per_param=args.min_tokens_per_param,
    )
    render_fit(fit)
    if args.json:
        fit.record.save(args.json)
        console.print(f"fit record written to {args.json}")
    return 0


def _plan_axis(path: str):
    """The compute axis of the plan an experiment directory was submitted with; None for
    tables, and for experiments with no stored plan (their runs' own C is used)."""
    from pathlib import Path

    if not (Path(path) / "plan.yaml").is_file():
        return None
    from orchestrator.planning import load_experiment_plan
    from orchestrator.planning.axis import compute_axis

    return compute_axis(load_experiment_plan(str(Path(path))))
