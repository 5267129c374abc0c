"""Claim: replaying real sweeps, `active` matches the whole pool's held-out error with at
most 5% of the pool's compute, is never worse than `random` at the same spend, and its
90% intervals at the targets cover 80-95% of the held-out runs.

Method: each sweep is replayed (`orchestrator.adaptive.replay.replay`, what `orch replay`
calls) with its largest-compute runs held out as targets (`Sweep.largest(k)`, k = 10% of
the sweep's runs, rounded: 24 of the Epoch extraction's 240, 3 of Gadre et al.'s 34 C4
runs, 4 of their 35 RedPajama and RefinedWeb runs); every other run is the pool the
strategies choose from. For each budget (a fraction of the pool's compute) and seed, one
`replay` call runs every strategy (`strategies.NAMES`) from the same round 0 until its
budget or its strategy is done; a law (`form="auto"`: AutoLaw) fitted to the runs it
chose predicts each target with a 90% prediction interval. Scored per strategy: the mean
|predicted / observed - 1| over the targets (its held-out error) and how many targets
its intervals cover. The reference is the same fit on every pool run (100% of the pool's
compute; it depends on neither seed nor budget, so it is computed once per sweep).

Printed per sweep:
- a table, strategy x budget fraction (`--fracs`), each cell "median error [lo, hi] ·
  coverage": the median over seeds (`--seeds`: seeds 0 to S-1) of the held-out error, the
  lowest and highest of the seeds' errors (the range over seeds: with 5 seeds, the
  closest they come to a 90% interval), and the targets covered, pooled over seeds, with
  the median relative width of the intervals (coverage is worth what the width allows);
- the compute each strategy actually spent (a strategy may stop before its budget);
- per strategy, the smallest fraction of `--match-fracs` at which the median over seeds
  of its held-out error is at most the pool's, with the lowest and highest over seeds of
  each seed's own smallest matching fraction (">" the largest fraction if a seed never
  matches);
- whether `active`'s median error is at most `random`'s at every budget run (goal: the
  same budget, though a strategy that stops early spends less of it), and where it is
  not, whether the gap is beyond the spread over seeds (`worse_p`, over the distinct
  outcomes: `active` with target runs is deterministic, its seeds one observation), the
  geometric mean over those budgets of active's median error / random's (a strategy
  drawn as random is: about 1; one draw exceeds the median of 5 others half the time,
  so such a strategy is "worse" at about half the budgets), whether it matches
  the pool's error at a budget of at most 5%,
  `active`'s coverage pooled over every fraction and seed, and the wall time.
A budget whose replay raises `StudyError`, or whose runs no law can be fitted to, shows
"-" with a footnote. (`replay` does not raise for a small budget: its round 0 is cut to
what the budget buys, so a budget below a few of the cheapest runs ends with too few runs
for any law: AutoLaw's forms need 4 to 10.)

Sweeps (`--sweeps`, nothing is downloaded):
- `epoch`: Epoch AI's extraction of Hoffmann et al.'s (2022) Chinchilla runs
  (../shared/data/chinchilla_epoch_svg_extracted.csv, 240 runs after the data README's
  filter, which drops the 5 highest losses; D = C / 6N), written to a temporary CSV for
  `load_sweep` (which would read the file, but without the filter);
- `c4`, `rpj`, `rw`: Gadre et al.'s (2024) over-training sweeps, C4 eval loss
  (bench/data/gadre2024_overtraining.csv, transcribed with its source in
  bench/data/README.md; N counts every parameter, embeddings included, as the paper does);
- `porian-rw`, `porian-owt2`: Porian et al.'s (2024) IsoFLOP sweeps on RefinedWeb and
  OpenWebText2, 88 runs each at 12 budgets from 1.25e16 to 2.56e19 FLOPs, each run
  cosine decayed to its budget (bench/data/porian2024_isoflop.csv, read with its source in
  bench/data/README.md);
- `marin-comma`, `marin-dclm`, `marin-nemotron`: the Marin project's scaling-ladder
  IsoFLOP sweeps, 85-96 runs each of 156M-11.8B parameters, Paloma loss
  (bench/data/marin2026_isoflop.csv, read with its source in bench/data/README.md).

What a budget buys. Each of Gadre et al.'s pools is 31 runs (7.98e20 FLOPs) of five
sizes: 11M, 79M and 154M (8 runs each), 412M (6) and one 1.4B run that is 31% of the
pool's compute; the targets are the 6.9B run at 20 tokens per parameter, a 1.4B run at
80-640 and 412M runs at 320-640. 5% of the pool buys at most 20 runs (cheapest first),
of which round 0 is five 11M runs; a 412M model only at 5, 10 or 20 tokens per parameter
(at 20 it is half the budget); at 1%, at most 14 runs, a 412M model only at 5. So the
runs 5% can buy stop 16-32x short in D of the 412M targets and 3.5-17x short in N of the
others, though they are more than the forms need (4 to 10). Of 150 random samples at 5%
of RedPajama's pool (round 0 plus uniform picks), 15% match the whole pool's error
(RefinedWeb: 12% of 120); which ones do is decided by the runs' losses
(strategies/coverage.py). Epoch's pool is 216 runs (3.95e22 FLOPs), the dearest 2.5% of
it: 5% buys up to 101 runs, and any one run on its own.

Porian et al.'s pools are 79 runs (1.2e20 FLOPs) of 5.2M-902M parameters at 12 budgets,
the targets the 9 runs at 1.28e19 and 2.56e19 FLOPs. There active matches the whole
pool's error (2.25% / 2.51%) at 1% / 2% of its compute, but its error is not monotone in
the budget (RefinedWeb: 1.7% at 1%, 4.4% at 5%, 4.0% at 10%, 1.7% at 25%): at these pools
a budget's error is decided by which few runs it buys, as on Gadre et al.'s.

The Marin project's pools are 77-86 runs (6.7e21 FLOPs) of 156M-11.8B parameters, the
targets the 8-10 runs of the largest IsoFLOP budget (2.8e20-4e20 FLOPs; nemotron's also
its ladder's 9.4e20 run). The whole pool's fit (AutoLaw, Farseer at full weight)
predicts them 0.81 / 0.55 / 0.37% off (comma / dclm / nemotron), and no strategy's
median error comes down to that within 25% of the pool's compute (active at 25%: 1.01 /
0.71 / 2.19%; random 2.06 / 2.00 / 2.21%); active's intervals hold 76 / 69 / 81% of the
targets. The form that holds there has nine parameters, pinned down by a whole pool of
runs up to 2.8e20 FLOPs; 25% of the pool is 1.7e21 FLOPs, six runs of its largest budget
and nothing else. Before AutoLaw read Farseer's fits that sit at a bound off their
bootstrap (2026-12-07), the whole pool's fit was Gadre et al.'s form on comma (2.51%)
and Chinchilla's on dclm (1.24%), and active matched those at 10% and 15%.

The figures with that change (every sweep, the default run): active matches the pool's
error at 3% (Epoch), 1% (C4), not within 25% (RedPajama, 15% before), 7% (RefinedWeb),
1% / 2% (Porian), and not within 25% on Marin's; active's median error over random's,
geometric mean over the budgets, 1.01 / 0.63 / 1.37 / 0.93 / 0.85 / 1.06 / 1.12 / 0.82 /
0.85, active significantly worse at no budget of any sweep; its intervals hold 95% /
100% / 100% / 100% / 92% / 100% / 76% / 69% / 81% of the targets. With AutoLaw keeping
Porian et al.'s small-budget runs (an "edge" that misses both ways, orchestrator/laws/
domain.py; 2026-12-07, 639 s with 2 jobs) only their figures moved: the pools' own error
2.25% / 2.51%, active matching it at 1% / 2%, active over random 0.95 / 1.11, its
intervals holding 100% / 100%. With the form error grown by the decades of N and D a
target lacks from its nearest fitted run, and the floor at 1.5% per decade
(`prediction.decades_beyond`; 2026-12-07, 642 s with 2 jobs): active matches the pool's
error at 3% / 5% / not within 25% / 7% / 1% / 2% (C4: 1% before), not within 25% on
Marin's; over random 1.04 / 0.80 / 1.35 / 0.94 / 1.01 / 1.17 / 1.19 / 0.81 / 0.85,
significantly worse at no budget; its intervals hold 97 / 100 / 100 / 100 / 100 / 100 /
64 / 75 / 86% (Marin's three pooled: 75.5%, against 75.9% before; comma's 8 runs at 1%
miss the targets by 5.8% with a +-5.4% interval, 10.8% wide, where the 2% floor gave
16.6%). With the fits' final L-BFGS-B run to its optimum (`huber.polish` on the
objective scaled to 1) and the frontier's optimum an interior minimum (2026-12-07, an
AVX-512 machine, `--jobs 1`, 3,244 s beside other work): the matches unchanged; over
random 1.04 / 0.74 / 1.29 / 0.90 / 1.00 / 1.20 / 1.21 / 0.79 / 0.83, significantly worse
at no budget; intervals holding 97 / 100 / 100 / 100 / 100 / 100 / 71 / 83 / 86%.

Whether 5% of a pool can reach its error at all (`--fracs 0.05 --match-fracs 0.05
--seeds 1 --random-samples 60`, 263 s: the random strategy replayed at 5% with seeds
1000-1059): of 60 random subsets, 25% reach the pool's error on Epoch's pool, 13 / 10 /
8% on Gadre et al.'s C4 / RedPajama / RefinedWeb, 32 / 37% on Porian et al.'s, and none
on Marin's three (the best 0.86 / 0.95 / 1.26% against the pools' 0.81 / 0.55 / 0.37%,
the median 3.1-3.3%). So on Marin's pools no strategy is likely to: at 5% the budget buys
no set of runs that pins the nine-parameter fit of the whole pool down; on the others a
lucky draw does, and active, deterministic, is one draw: it did on four of the six.
Again with the reach counted in N and D (271 s): 25%, 12 / 10 / 7%, 30 / 40%, and none
on Marin's (best 1.66 / 0.95 / 1.26%).

The default run (9 sweeps x 8 fractions x 5 seeds, 360 `replay` calls) took 25 minutes
one replay at a time on this 2-core machine; they run `--jobs` at once (default: every
CPU), which halves that here; `--quick` (2 fractions x 2 seeds) takes a minute or two.
Prints one Markdown section and exits 0.
Usage: python bench/replay_real.py [--sweeps epoch,c4,rpj,rw,porian-rw,porian-owt2,...]
[--seeds 5] [--fracs 0.01,0.05,0.1,0.25] [--match-fracs 0.01,0.02,...] [--quick]
[--random-samples K] [--jobs J]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import itertools
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fit_speed import DATA as EPOCH_DATA  # noqa: E402
from fit_speed import load_runs as load_epoch  # noqa: E402
from real_sweeps import GADRE_DATA, MARIN_DATA, PORIAN_DATA  # noqa: E402

from orchestrator.adaptive.replay import LEVEL, ReplayOutcome, ReplayResult, replay  # noqa: E402
from orchestrator.adaptive.strategies import NAMES  # noqa: E402
from orchestrator.adaptive.study import StudyError  # noqa: E402
from orchestrator.adaptive.sweep import Sweep, TargetTable, load_sweep  # noqa: E402

SWEEPS = {
    "epoch": "Chinchilla runs (Epoch extraction)",
    "c4": "Gadre et al. 2024, trained on C4",
    "rpj": "Gadre et al. 2024, trained on RedPajama",
    "rw": "Gadre et al. 2024, trained on RefinedWeb",
    "porian-rw": "Porian et al. 2024 IsoFLOPs, RefinedWeb",
    "porian-owt2": "Porian et al. 2024 IsoFLOPs, OpenWebText2",
    "marin-comma": "Marin scaling ladder IsoFLOPs, comma",
    "marin-dclm": "Marin scaling ladder IsoFLOPs, dclm",
    "marin-nemotron": "Marin scaling ladder IsoFLOPs, nemotron",
}
# The sweeps kept in one table of several: key -> (table, its `dataset` value).
TABLES = {
    "c4": (GADRE_DATA, "c4_original"),
    "rpj": (GADRE_DATA, "rpj"),
    "rw": (GADRE_DATA, "rw_original"),
    "porian-rw": (PORIAN_DATA, "rw"),
    "porian-owt2": (PORIAN_DATA, "owt2"),
    "marin-comma": (MARIN_DATA, "comma"),
    "marin-dclm": (MARIN_DATA, "dclm"),
    "marin-nemotron": (MARIN_DATA, "nemotron"),
}
HOLDOUT = 0.1  # of a sweep's runs, the largest-compute ones, held out as targets
FRACS = "0.01,0.05,0.1,0.25"
MATCH_FRACS = "0.01,0.02,0.03,0.05,0.07,0.1,0.15,0.25"
GOAL_FRAC = 0.05  # active should match the pool's error within this share of its compute
RANDOM_SEED0 = 1000  # --random-samples' seeds start here, apart from the table's


def load(key: str) -> Sweep:
    """The sweep `key` of SWEEPS, as `load_sweep` reads it."""
    if key in TABLES:
        path, dataset = TABLES[key]
        return load_sweep(path, where={"dataset": dataset})
    n, d, loss = load_epoch(EPOCH_DATA)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chinchilla_epoch_filtered.csv"
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["N", "D", "loss"])
            writer.writerows(zip(n.tolist(), d.tolist(), loss.tolist(), strict=True))
        return load_sweep(path)


def replay_all(
    sweep: Sweep, targets: TargetTable, fracs: list[float], seeds: int, *, label: str, jobs: int
) -> tuple[dict, ReplayResult | None]:
    """Every (fraction, seed) replay, all strategies in one call: {(frac, seed): result, or
    the StudyError's message}, and a result holding the reference (the fit on every pool
    run, asked for once: of the largest fraction's first seed, the replay least likely to
    raise). The replays are independent and each is deterministic, so `jobs` processes
    run them at once with the same results as one."""
    tasks = [(frac, seed) for frac in fracs for seed in range(seeds)]
    first = (max(fracs), 0)
    results: dict[tuple[float, int], ReplayResult | str] = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {
            pool.submit(_replay_one, sweep, targets, frac, seed, (frac, seed) == first): (
                frac,
                seed,
            )
            for frac, seed in tasks
        }
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            results[futures[future]] = future.result()
            if done % seeds == 0:
                print(f"  {label}: {done} of {len(tasks)} replays done", file=sys.stderr)
    with_reference = results[first]
    if isinstance(with_reference, str):  # that replay raised: ask one that did not
        done = next((key for key in tasks if not isinstance(results[key], str)), None)
        with_reference = None if done is None else _replay_one(sweep, targets, *done, True)
    return results, with_reference


def _replay_one(sweep, targets, frac: float, seed: int, reference: bool) -> ReplayResult | str:
    try:
        return replay(
            sweep, targets, strategies=NAMES, budget_frac=frac, seed=seed, reference=reference
        )
    except StudyError as err:
        return err.message


def per_seed(results: dict, strategy: str, frac: float, seeds: int) -> list:
    """The strategy's ReplayOutcome for each seed at `frac` (the StudyError's message
    where the replay raised)."""
    found = []
    for seed in range(seeds):
        r = results[frac, seed]
        found.append(
            r if isinstance(r, str) else next(o for o in r.outcomes if o.strategy == strategy)
        )
    return found


def replayed(outcomes: list) -> list[ReplayOutcome]:
    """The outcomes of replays that ran (not a StudyError's message)."""
    return [o for o in outcomes if not isinstance(o, str)]


def errors(outcomes: list) -> list[float]:
    """The held-out errors (percent) of the outcomes that have one."""
    return [o.mean_abs_error_pct for o in replayed(outcomes) if o.mean_abs_error_pct is not None]


def median_error(results: dict, strategy: str, frac: float, seeds: int) -> float | None:
    e = errors(per_seed(results, strategy, frac, seeds))
    return float(np.median(e)) if e else None


def coverage(outcomes: list) -> str:
    """Targets covered / scored, pooled over the outcomes, in percent."""
    scored = sum(o.scored for o in replayed(outcomes))
    return f"{sum(o.covered for o in replayed(outcomes)) / scored:.0%}" if scored else "-"


def width(outcomes: list) -> str:
    """Median over the outcomes of their targets' mean relative interval width."""
    w = [o.mean_width_pct for o in replayed(outcomes) if o.mean_width_pct is not None]
    return f"{np.median(w):.1f}%" if w else "-"


def cell(outcomes: list, notes: list[str]) -> str:
    """The table's cell: median error [lo, hi] · coverage (interval width), or "-" with a
    footnote (in `notes`) saying why."""
    e = errors(outcomes)
    if not e:
        return "-" + mark(outcomes, notes)
    short = (
        f" ({len(e)}/{len(outcomes)} seeds{mark(outcomes, notes)})"
        if len(e) < len(outcomes)
        else ""
    )
    cover = f"{coverage(outcomes)} (width {width(outcomes)})"
    return f"{np.median(e):.2f}% [{min(e):.2f}, {max(e):.2f}] · {cover}{short}"


def mark(outcomes: list, notes: list[str]) -> str:
    """Footnote references for the seeds without an error: the replay raised, or no law
    could be fitted to the runs the budget bought."""
    why = {
        f"replay raised StudyError: {o}"
        if isinstance(o, str)
        else f"no law could be fitted to the {len(o.run_ids)} run(s) the budget bought"
        for o in outcomes
        if isinstance(o, str) or o.mean_abs_error_pct is None
    }
    refs = []
    for text in sorted(why):
        if text not in notes:
            notes.append(text)
        refs.append(f"[^{notes.index(text) + 1}]")
    return "".join(refs)


def first_match(results, strategy, fracs, seeds, pool_error) -> float | None:
    """The smallest of `fracs` at which the strategy's median error is <= the pool's."""
    for f in fracs:
        m = median_error(results, strategy, f, seeds)
        if m is not None and m <= pool_error:
            return f
    return None


def smallest_match(results, strategy, fracs, seeds, pool_error) -> str:
    """`first_match`, with the range over seeds of each seed's own smallest matching
    fraction (inf: the seed never matches)."""
    first = []
    for seed in range(seeds):
        hit = float("inf")
        for f in fracs:
            o = per_seed(results, strategy, f, seeds)[seed]
            if not isinstance(o, str) and o.mean_abs_error_pct is not None:
                if o.mean_abs_error_pct <= pool_error:
                    hit = f
                    break
        first.append(hit)
    lo, hi = (pct(x, fracs) for x in (min(first), max(first)))
    median = first_match(results, strategy, fracs, seeds, pool_error)
    if median is None:
        return f"not within {100 * max(fracs):g}% (seeds: {lo} to {hi})"
    return f"{pct(median, fracs)} (seeds: {lo} to {hi})"


def pct(frac: float, fracs: list[float]) -> str:
    return f"> {100 * max(fracs):g}%" if frac == float("inf") else f"{100 * frac:g}%"


def run_sweep(key: str, args) -> None:
    """Replay one sweep at every fraction and seed; print its section."""
    t0 = time.perf_counter()
    sweep = load(key)
    k = max(1, round(HOLDOUT * len(sweep)))
    targets = sweep.largest(k)
    fracs = sorted({*args.fracs, *args.match_fracs})
    results, with_ref = replay_all(sweep, targets, fracs, args.seeds, label=key, jobs=args.jobs)
    print(f"\n### {SWEEPS[key]}\n")
    if with_ref is None:
        print(f"Every replay raised: {next(iter(results.values()))}\n")
        return
    ref = with_ref.reference
    print(
        f"{len(sweep)} runs: {k} held out as targets (C >= {np.sort(sweep.flops)[-k]:.2g} "
        f"FLOPs), a pool of {with_ref.pool_runs} ({with_ref.pool_flops:.3g} FLOPs), "
        f"{with_ref.batch} runs per adaptive round. Full pool (the reference; fit: {ref.fit}): "
        f"held-out error {ref.mean_abs_error_pct:.2f}%, {ref.covered}/{ref.scored} targets "
        "covered.\n"
    )
    print_table(results, ref, args)
    print_spent(results, args)
    print_matches(results, ref.mean_abs_error_pct, args)
    print_goals(results, ref.mean_abs_error_pct, fracs, args.seeds)
    if args.random_samples:
        print_random_reach(sweep, targets, ref.mean_abs_error_pct, args)
    print(
        f"Wall time {time.perf_counter() - t0:.0f} s ({len(fracs)} fractions x {args.seeds} seeds)."
    )


def print_table(results: dict, ref, args) -> None:
    """Strategy x fraction: "median [lo, hi] · coverage", then the pool's row, footnotes."""
    notes: list[str] = []
    print("| strategy | " + " | ".join(f"{100 * f:g}% of pool" for f in args.fracs) + " |")
    print("|---|" + "---|" * len(args.fracs))
    for s in NAMES:
        cells = [cell(per_seed(results, s, f, args.seeds), notes) for f in args.fracs]
        print(f"| {s} | " + " | ".join(cells) + " |")
    pool = f"{ref.mean_abs_error_pct:.2f}% · {ref.covered / ref.scored:.0%}"
    print("| pool (100% of it, any seed) | " + " | ".join([pool] * len(args.fracs)) + " |")
    print()
    for i, text in enumerate(notes, 1):
        print(f"[^{i}]: {text}")
    if notes:
        print()


def print_spent(results: dict, args) -> None:
    """What each strategy spent (it may stop before its budget), median over seeds."""
    spent = []
    for s in NAMES:
        by_frac = []
        for f in args.fracs:
            got = [o.spent_frac for o in replayed(per_seed(results, s, f, args.seeds))]
            by_frac.append(f"{100 * np.median(got):.2g}" if got else "-")
        spent.append(f"{s} {' / '.join(by_frac)}")
    budgets = " / ".join(f"{100 * f:g}" for f in args.fracs)
    print(f"Compute spent at budgets {budgets} (% of the pool, median over seeds): ", end="")
    print("; ".join(spent) + ".\n")


def print_matches(results: dict, pool_error: float, args) -> None:
    fracs = ", ".join(f"{100 * f:g}%" for f in args.match_fracs)
    print(
        f"Smallest budget (of {fracs} of the pool) at which the median held-out error is at "
        f"most the pool's {pool_error:.2f}%; in brackets, the lowest and highest over seeds "
        "of each seed's own smallest matching budget:\n"
    )
    for s in NAMES:
        print(f"- {s}: {smallest_match(results, s, args.match_fracs, args.seeds, pool_error)}")
    print()


def distinct(outcomes: list) -> list[float]:
    """The held-out errors of the outcomes that chose different runs: seeds that chose
    the same runs (a deterministic strategy: `active` with target runs herds, it draws
    nothing) are one observation, not several; counted as several, five copies of one
    error above five of random's gave p = 1/252 for what one draw against five can put
    no lower than 1/6."""
    seen: dict[tuple, float] = {}
    for o in replayed(outcomes):
        if o.mean_abs_error_pct is not None:
            seen.setdefault(tuple(sorted(o.run_ids)), o.mean_abs_error_pct)
    return list(seen.values())


def worse_p(active: list[float], random: list[float]) -> float:
    """One-sided p-value of active's errors lying above random's: an exact permutation
    test of the Mann-Whitney statistic (pairs in which active's error is the larger, ties
    half) over every split of the pooled errors into groups of their sizes.

    Not paired by seed: the two strategies share only round 0, and so do all seeds. Each
    list holds distinct outcomes (`distinct`). Ranks rather than medians: random's errors
    have a long tail."""
    pooled = np.array(active + random)

    def above(mask: np.ndarray) -> float:
        a, r = pooled[mask], pooled[~mask]
        return float(np.sum(a[:, None] > r[None]) + 0.5 * np.sum(a[:, None] == r[None]))

    observed = above(np.arange(pooled.size) < len(active))
    hits = total = 0
    for group in itertools.combinations(range(pooled.size), len(active)):
        mask = np.zeros(pooled.size, dtype=bool)
        mask[list(group)] = True
        hits += above(mask) >= observed
        total += 1
    return hits / total


def print_goals(results: dict, pool_error: float, fracs: list[float], seeds: int) -> None:
    """Active vs random at every fraction run (with `worse_p` where active's median is
    above random's), active's match within GOAL_FRAC, coverage."""
    worse, beyond, ratios = [], 0, []
    for f in fracs:
        a, r = (median_error(results, s, f, seeds) for s in ("active", "random"))
        if a is not None and r is not None:
            ratios.append(math.log(a / r))
        if r is not None and (a is None or a > r):  # both without a fit: not comparable
            p = None
            if a is not None:
                observed = (distinct(per_seed(results, s, f, seeds)) for s in ("active", "random"))
                p = worse_p(*observed)
                beyond += p < 0.05
            worse.append(f"{100 * f:g}% ({number(a)} vs {number(r)}, p {number_p(p)})")
    verdict = "yes" if not worse else "no, worse at " + ", ".join(worse)
    if worse:
        verdict += f"; beyond the spread over seeds (`worse_p` < 0.05) at {beyond} of them"
    if ratios:
        verdict += (
            f"; active's median error / random's, geometric mean over {len(ratios)} "
            f"budgets: {math.exp(np.mean(ratios)):.2f}"
        )
    matched = first_match(
        results, "active", [f for f in fracs if f <= GOAL_FRAC], seeds, pool_error
    )
    active = replayed([o for f in fracs for o in per_seed(results, "active", f, seeds)])
    covered, scored = sum(o.covered for o in active), sum(o.scored for o in active)
    at = "no" if matched is None else f"yes, at {100 * matched:g}%"
    every = ", ".join(f"{100 * f:g}%" for f in fracs)
    print(
        f"Goals: active's median error <= random's at every budget run ({every}): {verdict}. "
        f"Active matches the pool's error within {GOAL_FRAC:.0%} of its compute: "
        f"{at}. Active's {LEVEL:.0%} intervals cover "
        f"{covered}/{scored} = {coverage(active)} of its held-out predictions over "
        "every budget and seed (goal: 80-95%)."
    )


def number(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}%"


def number_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2f}"


def fractions(text: str) -> list[float]:
    values = sorted({float(x) for x in text.split(",") if x.strip()})
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected fractions in (0, 1], comma-separated; got {text!r}"
        )
    return values


def print_random_reach(sweep: Sweep, targets: TargetTable, pool_error: float, args) -> None:
    """Whether the pool's error is within reach at GOAL_FRAC at all: the share of
    `--random-samples` random subsets at that budget (the `random` strategy: round 0 plus
    uniform picks, each its own seed) whose held-out error is at most the pool's. None
    reaching it says the budget buys no set of runs that pins the pool's fit down, which no
    strategy's choice can change; some reaching it says a strategy could."""
    seeds = range(RANDOM_SEED0, RANDOM_SEED0 + args.random_samples)
    if args.jobs == 1:
        found = [_random_error(sweep, targets, seed) for seed in seeds]
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
            found = list(
                pool.map(_random_error, [sweep] * len(seeds), [targets] * len(seeds), seeds)
            )
    e = np.array([x for x in found if x is not None])
    reached = int(np.sum(e <= pool_error))
    print(
        f"Of {len(found)} random subsets at {GOAL_FRAC:.0%} of the pool (seeds "
        f"{seeds[0]}-{seeds[-1]}), {reached} ({reached / len(found):.0%}) reach the pool's "
        f"{pool_error:.2f}%"
        + (f"; their errors: median {np.median(e):.2f}%, best {e.min():.2f}%." if e.size else ".")
    )


def _random_error(sweep, targets, seed: int) -> float | None:
    try:
        result = replay(
            sweep,
            targets,
            strategies=("random",),
            budget_frac=GOAL_FRAC,
            seed=seed,
            reference=False,
        )
    except StudyError:
        return None
    return result.outcomes[0].mean_abs_error_pct


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", default=",".join(SWEEPS), help=f"some of {', '.join(SWEEPS)}")
    parser.add_argument("--seeds", type=int, default=5, help="replay seeds 0 .. S-1")
    parser.add_argument(
        "--fracs",
        type=fractions,
        default=fractions(FRACS),
        help="the table's budgets, fractions of the pool's compute",
    )
    parser.add_argument(
        "--match-fracs",
        type=fractions,
        default=fractions(MATCH_FRACS),
        help="budgets searched for the smallest that matches the pool's error",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 seeds, fractions 0.05 and 0.1 (a fast check)"
    )
    parser.add_argument(
        "--random-samples",
        type=int,
        default=0,
        help=f"also replay this many random subsets at {GOAL_FRAC * 100:.0f}%% of each pool: how "
        "many reach the pool's error",
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="replays run at once (processes)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: expected a whole number >= 1, got {args.jobs}")
    if args.random_samples < 0:
        parser.error(f"--random-samples: expected a whole number >= 0, got {args.random_samples}")
    if args.quick:
        args.seeds, args.fracs = 2, [0.05, 0.1]
        args.match_fracs = args.fracs
    keys = [k for k in args.sweeps.split(",") if k]
    unknown = [k for k in keys if k not in SWEEPS]
    if unknown or not keys or args.seeds < 1:
        parser.error(
            f"--sweeps: choose from {', '.join(SWEEPS)} (got {args.sweeps!r}); --seeds >= 1"
        )
    logging.disable(logging.WARNING)  # fits on a few runs warn; the tables say enough
    t0 = time.perf_counter()
    print("## Replaying real sweeps: held-out error and coverage per strategy and budget\n")
    print(
        f"Targets: each sweep's largest-compute {HOLDOUT:.0%} of runs; the rest is the pool. "
        f"Cells: median held-out error over seeds 0-{args.seeds - 1} [lowest, highest seed] · "
        f"targets inside the {LEVEL:.0%} prediction interval, pooled over seeds (goal: 80-95%), "
        "and (width) the median over seeds of the intervals' mean width relative to the "
        "prediction."
    )
    for key in keys:
        run_sweep(key, args)
    print(f"\nTotal wall time {time.perf_counter() - t0:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
