"""Claim: the active strategy pins down L_opt(C*) and N_opt(C*) with a fraction of the
compute of a full IsoFLOP grid, with honest 90% intervals.

For each truth family (`--truths`, workers/simulated.py TRUTHS: `chinchilla`, the form the
study fits, with alpha, beta in [0.25, 0.45], E in [1.5, 2], A, B log-uniform in
[150, 1500], lognormal noise of 0.5-2% of the loss; `curved`, the same with an N exponent
drifting with log N; `farseer`, Li et al.'s form; the last two with noise growing as
models shrink) and each of `--studies` truths drawn from it:
- the reference: a 5-level x 9-size IsoFLOP grid from 1e18 to 1e20 FLOPs, fitted once;
- active / isoflop / random: a 3 x 3 seed grid (1e18 to 4e18 FLOPs) plus 2 repeated
  seeds, then `--rounds` rounds of 4 runs of at most 1e20 FLOPs each, the budget being
  the grid's whole compute G. `active` runs three times, with the plan's target set to
  L_opt, to N_opt and to both: it spends on what the plan names, so the compute it needs
  for one quantity is measured with that quantity as its target (the "both" row is what
  a plan naming both gets). isoflop and random choose the same runs whatever the target.
C* = 100 x the grid's largest level. Everything goes through `Study` on a
SimulatedBackend (the code `orch submit` runs), with stores on tmpfs. Study i runs with
train.seed = 1000 i, so its noise is its own (a simulated run's noise follows its spec);
within a study every strategy sees the same noise for the same run.

Printed: for each strategy, the compute fraction of G after which the median (over
studies) relative error of the estimate is at most the grid's median error, on each
target, with a 90% interval from redrawing the studies (200 resamples with replacement;
which truths are drawn moves this figure a lot); the median errors and compute at the
end; and how often the final 90% interval holds the truth, with the 95% interval of
that proportion (at 100 studies, sampling alone moves a true 90% between 84% and 95%).

With `--random-samples K`, each study also fits K random designs that spend
`--sample-frac` F of G (default 0.1): its seed runs plus uniform picks among the same
candidates until the budget is spent. Printed: how many reach their study's grid error,
the best of each study's in hindsight, and active's error at F: whether F can reach the
grid's error at all, and how often a design drawn blind does.
Run: `python bench/active_vs_grid.py [--studies 100] [--rounds 12] [--random-samples K]`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.adaptive.study import Study  # noqa: E402
from orchestrator.planning import parse_plan  # noqa: E402
from orchestrator.planning.expand import expand_plan  # noqa: E402
from orchestrator.scheduler.execution import execute, prepare  # noqa: E402
from orchestrator.scheduler.simulated import SimulatedBackend  # noqa: E402
from storage.store import Store  # noqa: E402
from workers.simulated import TRUTHS  # noqa: E402

# (strategy, the plan's target quantity). `active` aims at what the plan names, so it runs
# once per target; isoflop and random choose the same runs whatever the target.
STRATEGIES = (
    ("active", "loss_opt"),
    ("active", "n_opt"),
    ("active", "both"),
    ("isoflop", "both"),
    ("random", "both"),
)
QUANTITIES = ("loss_opt", "n_opt")
TOP_FLOPS = 1e20
TARGET_FLOPS = 100 * TOP_FLOPS
FRACTIONS = np.round(np.arange(0.01, 1.0001, 0.01), 2)

PLAN = """\
name: {name}
store: {store}
flops_method: 6nd
budget: {{flops: {budget:.6e}, adaptive_share: {share}}}
seed_grid:
  min_flops: 1e18
  max_flops: {seed_top:.6e}
  levels: {levels}
  sizes_per_level: {sizes}
  size_spread: 16
  tokens_per_param: 20
adaptive:
  strategy: {strategy}
  target: {{flops: {target:.6e}, quantity: {quantity}, level: 0.9, form: {form}}}
  stop: {{rel_width: 0, rounds: {rounds}}}
  batch: {batch}
  repeat_seeds: {repeats}
  max_run_flops: {top:.6e}
  seed: {adaptive_seed}
hardware: {{accelerator: H100-80GB, max_gpus_per_run: 64, mfu: 0.4}}
model: {{vocab: 32000, seq_len: 2048, tied: false}}
train: {{hparams: deepseek, precision: bf16, seed: {seed}}}
backend: {{kind: simulated}}
"""


def plan_text(
    root: str,
    strategy: str,
    budget: float,
    rounds: int,
    grid: bool,
    seed: int,
    quantity: str = "both",
    form: str = "chinchilla",
    *,
    sample: int | None = None,
) -> str:
    """A study's plan. `sample` j: one of `random_samples`' designs, made in one round of
    a random strategy seeded seed + 1 + j (the runs' noise still follows `seed`)."""
    return PLAN.format(
        seed=seed,
        adaptive_seed=seed if sample is None else seed + 1 + sample,
        batch=4 if sample is None else 1000,
        quantity=quantity,
        form=form,
        name=f"{strategy}-{quantity}" + ("" if sample is None else f"-{sample}"),
        store=root,
        budget=budget,
        # The adaptive share only bounds the seeds (they must fit in the rest); a sample's
        # budget is --sample-frac of the others', so the seeds take more of it.
        share=0.01 if grid else 0.95 if sample is None else 0.5,
        seed_top=TOP_FLOPS if grid else 4e18,
        levels=5 if grid else 3,
        sizes=9 if grid else 3,
        strategy="grid" if grid else strategy,
        target=TARGET_FLOPS,
        rounds=rounds,
        repeats=0 if grid else 2,
        top=TOP_FLOPS,
    )


def run_grid(root: str, law, seed: int, form: str) -> tuple[float, dict]:
    """The reference: the whole 5 x 9 grid, fitted once. Returns (G, estimate)."""
    text = plan_text(root, "grid", 1e30, 1, grid=True, seed=seed)
    grid_flops = expand_plan(parse_plan(text, path="grid.yaml")).seed_flops
    plan = parse_plan(
        plan_text(root, "grid", 1.02 * grid_flops, 1, grid=True, seed=seed, form=form),
        path="grid.yaml",
    )
    study = Study(plan)
    specs = study.ask()  # round 0: the grid itself
    store = Store(plan.experiment_uri)
    execute(
        prepare(specs, store),
        store,
        lambda: SimulatedBackend(store, law=law, write_curves=False),
    )
    study.ask()  # reads the results and refits
    return grid_flops, study.history[0]


def run_strategy(
    root: str,
    strategy: str,
    quantity: str,
    law,
    grid_flops: float,
    rounds: int,
    seed: int,
    form: str,
):
    text = plan_text(
        root, strategy, grid_flops, rounds, grid=False, seed=seed, quantity=quantity, form=form
    )
    plan = parse_plan(text, path="s.yaml")
    study = Study(plan)
    study.run(SimulatedBackend(study.store, law=law, write_curves=False))
    if study.ledger.spent_flops > grid_flops * (1 + 1e-9):
        raise AssertionError(f"{strategy} overspent: {study.ledger.spent_flops} > {grid_flops}")
    return study.history


def random_design(
    root: str, law, grid_flops: float, frac: float, j: int, seed: int, form: str
) -> Study:
    """The j-th random design that spends `frac` of G, run: the study's seed runs (the
    same noise as every strategy's) plus uniform picks among the same candidates, taken
    in one round until the budget is spent."""
    text = plan_text(
        root, "random", frac * grid_flops, 1, grid=False, seed=seed, form=form, sample=j
    )
    study = Study(parse_plan(text, path="sample.yaml"))
    study.run(SimulatedBackend(study.store, law=law, write_curves=False))
    return study


def random_samples(
    root: str, law, grid_flops: float, frac: float, k: int, seed: int, form: str, true: dict
) -> list[dict[str, float]]:
    """The errors of k random designs (`random_design`), read as the strategies' estimates
    are: whether any design of that compute reaches the grid's error, and how often one
    drawn blind does."""
    return [
        rel_errors(random_design(root, law, grid_flops, frac, j, seed, form).history[-1], true)
        for j in range(k)
    ]


def rel_errors(estimate, true: dict) -> dict[str, float]:
    """|estimate / truth - 1|; inf where the fit gave no finite estimate (a failure)."""
    out = {}
    for q in true:
        value = estimate.values.get(q, [math.nan])[0]
        out[q] = abs(value / true[q] - 1) if math.isfinite(value) else math.inf
    return out


def covered(estimate, true: dict) -> dict[str, bool]:
    """Whether the 90% interval holds the truth (False where there is none)."""
    out = {}
    for q in true:
        _, lo, hi = estimate.values.get(q, [math.nan] * 3)
        out[q] = bool(lo <= true[q] <= hi)  # NaN compares False
    return out


def error_at(curve: list[tuple[float, float]], f: float) -> float:
    """A study's error once f of G is spent: that of its last estimate made with at most
    f spent (inf before its first)."""
    before = [e for spent, e in curve if spent <= f]
    return before[-1] if before else math.inf


def fraction_to_match(curves: list[list[tuple[float, float]]], goal: float) -> float:
    """Smallest compute fraction at which the median error over studies is <= goal."""
    for f in FRACTIONS:
        if np.median([error_at(curve, f) for curve in curves]) <= goal:
            return float(f)
    return math.inf


def resampled_fraction(
    curves: list[list[tuple[float, float]]], grid_errors: list[float], n: int = 200
) -> tuple[float, float]:
    """90% interval of `fraction_to_match` over studies drawn with replacement (the goal,
    the grid's median error, redrawn with them): which truths a run of the benchmark
    happens to draw moves the figure a lot."""
    rng = np.random.default_rng(0)
    grid = np.asarray(grid_errors)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(curves), len(curves))
        values.append(fraction_to_match([curves[k] for k in idx], float(np.median(grid[idx]))))
    lo, hi = np.quantile(values, [0.05, 0.95])  # inf (not reached) sorts last
    return float(lo), float(hi)


def _frac(f: float) -> str:
    return f"{f:.2f}" if math.isfinite(f) else "not reached"


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion: how far sampling alone moves a coverage."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return mid - half, mid + half


def coverage_text(flags: list[bool]) -> str:
    if not flags:
        return "-"
    lo, hi = wilson(sum(flags), len(flags))
    return f"{np.mean(flags):.0%} [{lo:.0%}, {hi:.0%}]"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", type=int, default=100)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument(
        "--truths",
        default="chinchilla,curved,farseer",
        help="truth families, comma-separated (workers/simulated.py TRUTHS): the fits are "
        "Chinchilla's form, so the other families test the strategies under a wrong form",
    )
    p.add_argument(
        "--target-form",
        choices=("chinchilla", "auto"),
        default="chinchilla",
        help="the law every study reads its target with (the plan's adaptive.target.form); "
        "the strategies choose from the Chinchilla fit either way",
    )
    p.add_argument(
        "--random-samples",
        type=int,
        default=0,
        metavar="K",
        help="also fit K random designs per study that spend --sample-frac of the grid's "
        "compute, and print how many reach the grid's error: whether any strategy can",
    )
    p.add_argument("--sample-frac", type=float, default=0.1, metavar="F")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    for family in args.truths.split(","):
        if family not in TRUTHS:
            p.error(f"unknown truth family {family!r}; choose from {sorted(TRUTHS)}")
    for family in args.truths.split(","):
        run_family(family, args)


def run_family(family: str, args) -> None:
    """Every study of one truth family, then its table and goal lines."""
    tmp_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    t0 = time.monotonic()
    grid_err = {q: [] for q in QUANTITIES}
    grid_cov = {q: [] for q in QUANTITIES}
    curves = {s: {q: [] for q in QUANTITIES} for s in STRATEGIES}
    final = {s: {q: [] for q in (*QUANTITIES, "spent")} for s in STRATEGIES}
    cover = {s: {q: [] for q in QUANTITIES} for s in STRATEGIES}
    samples = []  # per study, each random design's errors (--random-samples)
    for i in range(args.studies):
        law = TRUTHS[family].drawn(i)
        true = law.optimum(TARGET_FLOPS)
        with tempfile.TemporaryDirectory(dir=tmp_root) as root:
            # The simulated noise of a run is a function of its spec (run_id), so without a
            # seed of its own every study would draw the same noise for the same grid.
            seed = 1000 * i
            grid_flops, ref = run_grid(root, law, seed, args.target_form)
            for q, e in rel_errors(ref, true).items():
                grid_err[q].append(e)
            for q, c in covered(ref, true).items():
                grid_cov[q].append(c)
            for s in STRATEGIES:
                history = run_strategy(
                    root, *s, law, grid_flops, args.rounds, seed, args.target_form
                )
                for q in QUANTITIES if s[1] == "both" else (s[1],):  # what the study estimates
                    curves[s][q].append(
                        [(h.spent_flops / grid_flops, rel_errors(h, true)[q]) for h in history]
                    )
                    final[s][q].append(rel_errors(history[-1], true)[q])
                    cover[s][q].append(covered(history[-1], true)[q])
                final[s]["spent"].append(history[-1].spent_flops / grid_flops)
            if args.random_samples:
                samples.append(
                    random_samples(
                        root,
                        law,
                        grid_flops,
                        args.sample_frac,
                        args.random_samples,
                        seed,
                        args.target_form,
                        true,
                    )
                )
        print(
            f"{family} study {i + 1}/{args.studies} done, {time.monotonic() - t0:.0f} s",
            file=sys.stderr,
        )

    goal = {q: float(np.median(v)) for q, v in grid_err.items()}
    rows = [
        (
            "grid 5x9 (reference)",
            "all",
            "1.00",
            "1.00",
            f"{goal['loss_opt']:.2%}",
            f"{goal['n_opt']:.1%}",
            "1.00",
            coverage_text(grid_cov["loss_opt"]),
            coverage_text(grid_cov["n_opt"]),
        )
    ]
    fractions = {}
    for s in STRATEGIES:
        cells = []
        for q in QUANTITIES:
            if not curves[s][q]:
                cells.append("-")
                continue
            fractions[s, q] = fraction_to_match(curves[s][q], goal[q])
            lo, hi = resampled_fraction(curves[s][q], grid_err[q])
            cells.append(f"{_frac(fractions[s, q])} [{_frac(lo)}, {_frac(hi)}]")
        errs = [
            f"{np.median(final[s][q]):{'.2%' if q == 'loss_opt' else '.1%'}}"
            if final[s][q]
            else "-"
            for q in QUANTITIES
        ]
        rows.append(
            (
                s[0],
                {"both": "both", "loss_opt": "L_opt", "n_opt": "N_opt"}[s[1]],
                *cells,
                *errs,
                f"{np.median(final[s]['spent']):.2f}",
                coverage_text(cover[s]["loss_opt"]),
                coverage_text(cover[s]["n_opt"]),
            )
        )
    head = (
        "strategy",
        "target",
        "G-frac to match L_opt [90% CI]",
        "G-frac to match N_opt [90% CI]",
        "med err L_opt (end)",
        "med err N_opt (end)",
        "G-frac spent (end)",
        "90% cover L_opt [95% CI]",
        "90% cover N_opt [95% CI]",
    )
    print(
        f"## Adaptive strategies against a full IsoFLOP grid: {family} truths\n\n"
        f"Command: `python bench/active_vs_grid.py --studies {args.studies} --rounds "
        f"{args.rounds} --truths {family} --target-form {args.target_form}`. "
        f"{args.studies} simulated studies of "
        f"`{TRUTHS[family].__name__}.drawn(i)`, C* = {TARGET_FLOPS:.0e} FLOPs "
        f"(100 x grid top), {args.rounds} rounds x 4 runs, {time.monotonic() - t0:.0f} s.\n"
    )
    print_table(head, rows)
    own = [fractions.get((("active", q), q), math.inf) for q in QUANTITIES]
    both = [fractions.get((("active", "both"), q), math.inf) for q in QUANTITIES]
    met = "met" if max(own) <= 0.2 else "NOT met"
    print(
        f"\n- Goal: `active` matches the grid's median error with at most 20% of its compute. "
        f"Aimed at the quantity itself: L_opt {_frac(own[0])}, N_opt {_frac(own[1])}: **{met}**. "
        f"Aimed at both at once: L_opt {_frac(both[0])}, N_opt {_frac(both[1])}."
    )
    inside = [np.mean(c) for s in STRATEGIES for c in cover[s].values() if c]
    print(
        f"- Goal: every strategy's 90% intervals cover the truth 85-95% of the time: "
        f"{min(inside):.0%} to {max(inside):.0%}: "
        f"**{'met' if 0.85 <= min(inside) and max(inside) <= 0.95 else 'NOT met'}** "
        f"(over {args.studies} studies a true 90% is seen between "
        f"{_binomial_range(args.studies)} 95% of the time)."
    )
    if args.random_samples:
        print_reach(samples, grid_err, curves, args)


def print_reach(samples, grid_err, curves, args) -> None:
    """Whether `args.sample_frac` of G can reach the grid's error at all: random designs
    of that compute, against the grid and `active` at the same spend."""
    f = args.sample_frac
    head = ("", "L_opt", "N_opt")
    rows = [("grid 5x9: median error", *(f"{np.median(grid_err[q]):.2%}" for q in QUANTITIES))]
    reach, best, median = [], [], []
    for q in QUANTITIES:
        # A study whose grid has no estimate (inf) says nothing of reaching it.
        pairs = [
            (e[q], grid_err[q][i])
            for i, study in enumerate(samples)
            for e in study
            if math.isfinite(grid_err[q][i])
        ]
        hits = sum(e <= g for e, g in pairs)
        reach.append(f"{hits / len(pairs):.0%} ({hits} of {len(pairs)})" if pairs else "-")
        best.append(f"{np.median([min(e[q] for e in study) for study in samples]):.2%}")
        median.append(f"{np.median([e[q] for study in samples for e in study]):.2%}")
    rows.append((f"random designs at {f:.2f} of G: median error", *median))
    rows.append(("those at or under their study's grid error", *reach))
    rows.append(("the best design of each study, in hindsight: median", *best))
    active = [np.median([error_at(c, f) for c in curves[("active", q)][q]]) for q in QUANTITIES]
    rows.append(
        (f"active aimed at the quantity, at {f:.2f} of G: median", *map("{:.2%}".format, active))
    )
    print(
        f"\n### Can {f:.0%} of the grid's compute reach its error? "
        f"({args.random_samples} random designs per study, `--random-samples "
        f"{args.random_samples} --sample-frac {f}`)\n"
    )
    print_table(head, rows)


def print_table(head, rows) -> None:
    """A Markdown table."""
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")


def _binomial_range(n: int) -> str:
    from scipy.stats import binom

    lo, hi = binom.ppf(0.025, n, 0.9) / n, binom.ppf(0.975, n, 0.9) / n
    return f"{lo:.0%} and {hi:.0%}"


if __name__ == "__main__":
    main()
