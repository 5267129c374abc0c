"""Claim: the curve law (orchestrator/laws/curves.py) predicts final losses from few runs'
curves: a schedule it never saw, and a run from its first 20% of steps (issue 22's goal:
within 1%, with a 90% interval that covers).

For each of `--truths` seeded annealing truths (workers.simulated.AnnealingTruth.drawn(i):
L = E + A_N / N^a + A S1^-alpha - C S2 with random constants and lam = 0.99, seed noise of
0.5-1.5% per run, a slow wander along each curve and per-evaluation noise), a small study
of byte-level GPTs (train.seed 1000 i, so each study's noise is its own) is simulated
into a temporary store by the SimulatedBackend's worker
(`simulate_run`, whole curves): `SIZES` model sizes (3K to 100K non-embedding parameters),
each trained for D = `TOKENS_PER_PARAM` N tokens (about 200 to 6,000 updates of 1,024
tokens, peak lr 1e-2, an evaluation every 2.5% of the run) once with a constant learning
rate and once with cosine to 10%. The law is fitted on those curves (eval loss; lam chosen
by the fit among 0.99, 0.995 and 0.999; 200 cluster-bootstrap refits), read back from the
store as `orch fit --curves` reads them. Then, per size:

1. schedule transfer: a WSD run (20% linear cooldown) of the same N and D, never seen,
   predicted from its spec alone (90% prediction interval: the law's bootstrap spread
   and the runs' seed noise);
2. early prediction: the same WSD run's first 20% of steps given (`predict_final`, 90%
   interval), its final loss predicted; and once more for the middle size's WSD run by a
   law refitted without that size's runs (a size it never saw).

Error: |predicted / observed - 1| of the run's final eval loss; "vs noiseless" compares to
the truth before seed noise, and "WSD / cosine" the predicted ratio of the WSD run's final
loss to its size's cosine run's with the truth's: the schedule's own effect, apart from
how well the two fitted runs of a size pin down its level. Also the frontier:
N_opt at 1e12 FLOPs (cosine to the end) over the truth's, and whether the law's 95%
interval holds the truth's.

Then the early prediction on real CPU runs (bench/curves_real.py): a small study of
byte-level GPTs trained here by workers/train.py (per size a constant, a cosine and a WSD
run, evaluated every 2.5% of their steps; `--real-replicates` of them, into `--real-dir`,
kept there and reused, else a temporary directory), and `make run`'s study
(experiments/local) if present, each run left out of the fit in turn and predicted from
its first 20% of steps; with two or more replicates, their seed-noise floor too (the
spread of a spec's final losses across seeds, and the share within 1% an oracle that
knew each expected final loss would reach). Prints one Markdown section.
Run: `python bench/curves.py [--truths 10] [--real-replicates 2] [--real-dir DIR]
[--local experiments/local]` (`--real-replicates 0`: simulated only).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import curves_real  # noqa: E402  (bench/, beside this file)

from orchestrator.laws.curve_data import read_curves  # noqa: E402
from orchestrator.laws.curves import AnnealingLaw  # noqa: E402
from storage.store import Store  # noqa: E402
from workers.simulated import AnnealingTruth, simulate_run  # noqa: E402
from workers.spec import LrSchedule, RunSpec  # noqa: E402

SIZES = (16, 24, 32, 48, 64)  # d_model of 2-layer byte-level GPTs: N = 3.1K to 99K
TOKENS_PER_PARAM = 60
EARLY = 0.2  # fraction of the held-out run's steps given to `predict_final`
LEVEL = 0.9
LAMS = (0.99, 0.995, 0.999)
FRONTIER_FLOPS = 1e12


def spec(d_model: int, kind: str, seed: int) -> RunSpec:
    """A 2-layer GPT of width d_model trained on 60 tokens per parameter under `kind`
    (a simulated run's noise follows its spec: each study has its own `seed`)."""
    shape, tokens, steps = curves_real.two_layer_gpt(d_model, TOKENS_PER_PARAM)
    return RunSpec(
        shape=shape,
        tokens=tokens,
        global_batch=16,
        micro_batch=16,
        schedule=LrSchedule(kind=kind, peak_lr=1e-2),
        log_every_steps=10,
        eval_every_steps=max(1, steps // 40),
        seed=seed,
    )


def first_part(curve, fraction: float = EARLY):
    """The curve as it stood after the first `fraction` of its steps."""
    cut = int(fraction * curve.total_steps)
    keep = curve.steps <= cut
    return dataclasses.replace(curve, steps=curve.steps[keep], loss=curve.loss[keep], last_step=cut)


def study(truth: AnnealingTruth, root: str, seed: int) -> dict:
    """Simulate, fit, predict; the per-truth figures."""
    store = Store(root)
    fitted = [spec(d, kind, seed) for d in SIZES for kind in ("constant", "cosine")]
    held = [spec(d, "wsd", seed) for d in SIZES]
    for s in fitted + held:
        store.write_spec(s.run_id, s.to_json())
        simulate_run(s, store, attempt=0, law=truth)
    t0 = time.perf_counter()
    law = AnnealingLaw(lam=LAMS).fit(read_curves(store, [s.run_id for s in fitted]))
    fit_s = time.perf_counter() - t0
    observed = np.array([truth.observed_loss(s) for s in held])
    noiseless = np.array([truth.expected_loss(s) for s in held])
    transfer = law.predict(held, level=LEVEL, interval="prediction")
    cosine = [s for s in fitted if s.schedule.kind == "cosine"]
    true_gap = noiseless / np.array([truth.expected_loss(s) for s in cosine])
    gap = transfer.mean / law.predict(cosine).mean  # WSD over cosine at each size
    partials = [first_part(c) for c in read_curves(store, [s.run_id for s in held]).runs]
    early = [law.predict_final(p, level=LEVEL) for p in partials]
    early_mean = np.array([p.mean for p in early])
    # The same for a size the law never saw: refit without the middle size's runs.
    middle = SIZES[len(SIZES) // 2]
    others = [s.run_id for s in fitted if s.shape.d_model != middle]
    blind = AnnealingLaw(lam=LAMS).fit(read_curves(store, others))
    (unseen,) = [p for p in partials if p.spec.shape.d_model == middle]
    new_size = blind.predict_final(unseen, level=LEVEL)
    new_observed = truth.observed_loss(unseen.spec)
    frontier = law.n_opt(FRONTIER_FLOPS, level=0.95)
    n_true = truth.optimum(FRONTIER_FLOPS)["n_opt"]
    return {
        "runs": len(fitted),
        "lam": law.lam_,
        "fit_s": fit_s,
        "transfer": np.abs(transfer.mean / observed - 1),
        "transfer_noiseless": np.abs(transfer.mean / noiseless - 1),
        "gap": np.abs(gap / true_gap - 1),
        "transfer_covered": (transfer.lo <= observed) & (observed <= transfer.hi),
        "transfer_width": transfer.hi / transfer.lo - 1,
        "early": np.abs(early_mean / observed - 1),
        "early_covered": np.array(
            [p.lo <= o <= p.hi for p, o in zip(early, observed, strict=True)]
        ),
        "early_width": np.array([p.hi / p.lo - 1 for p in early]),
        "new_size": np.abs(new_size.mean / new_observed - 1),
        "new_size_covered": new_size.lo <= new_observed <= new_size.hi,
        "new_size_width": new_size.hi / new_size.lo - 1,
        "n_opt_ratio": frontier.mean / n_true,
        "n_opt_covered": frontier.lo <= n_true <= frontier.hi,
    }


def _cells(r: dict) -> str:
    """The error, coverage and width cells of one truth (or of all, pooled)."""
    cells = []
    for key in ("transfer", "early"):
        errors, covered = r[key], r[f"{key}_covered"]
        cells += [f"{100 * errors.mean():.2f}%", f"{100 * errors.max():.2f}%"]
        if key == "transfer":
            cells.append(f"{100 * r['transfer_noiseless'].mean():.2f}%")
            cells.append(f"{100 * r['gap'].mean():.2f}%")
        cells += [f"{covered.sum()}/{covered.size}", f"{100 * np.median(r[f'{key}_width']):.1f}%"]
    new, covered = np.atleast_1d(r["new_size"]), np.atleast_1d(r["new_size_covered"])
    cells += [
        f"{100 * new.mean():.2f}% (worst {100 * new.max():.2f}%)",
        f"{covered.sum()}/{covered.size}",
    ]
    return " | ".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truths", type=int, default=10, help="seeded truths to study")
    parser.add_argument(
        "--real-replicates", type=int, default=2, help="real CPU studies to train and score"
    )
    parser.add_argument("--real-dir", default=None, help="where to train them (kept, reused)")
    parser.add_argument(
        "--local", default="experiments/local", help="`make run`'s real CPU study to score"
    )
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    rows = []
    for i in range(args.truths):
        with tempfile.TemporaryDirectory(prefix="bench-curves-") as root:
            rows.append(study(AnnealingTruth.drawn(i), root, seed=1000 * i))
    print("## Curve law: a held-out schedule, and a run from its first 20% of steps\n")
    print(
        f"Simulated annealing truths (`AnnealingTruth.drawn(i)`, i < {args.truths}); per "
        f"truth {len(SIZES)} sizes x (constant, cosine) fitted, and per size a WSD run held "
        f"out. Errors of the final eval loss; coverage of the {LEVEL:.0%} intervals; width "
        "= hi / lo - 1.\n"
    )
    print(
        "| truth | lam chosen | schedule transfer: mean abs error | worst | vs noiseless "
        f"| WSD / cosine vs truth's | {LEVEL:.0%} covers | width | first 20%: mean abs error "
        f"| worst | {LEVEL:.0%} covers | width | first 20%, size not fitted: error | covers "
        "| N_opt(1e12) / truth | 95% covers | fit time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        print(
            f"| {i} | {r['lam']:g} | {_cells(r)} | {r['n_opt_ratio']:.2f} | "
            f"{'yes' if r['n_opt_covered'] else 'no'} | {r['fit_s']:.1f} s |"
        )
    pooled = {k: np.concatenate([np.atleast_1d(r[k]) for r in rows]) for k in rows[0]}
    within = np.mean(pooled["early"] <= 0.01)
    within_new = np.mean(pooled["new_size"] <= 0.01)
    print(
        f"| all | | {_cells(pooled)} | {np.median(pooled['n_opt_ratio']):.2f} (median) | "
        f"{pooled['n_opt_covered'].sum()}/{len(rows)} | |"
    )
    print(
        f"\nFrom the first {EARLY:.0%} of steps, {within:.0%} of held-out final losses are "
        f"predicted within 1% at sizes the law was fitted on, {within_new:.0%} at a size it "
        "was not (goal: all, with a covering 90% interval). Schedule transfer "
        "cannot beat the held-out run's own seed noise (0.5-1.5%), nor the level of its "
        "size, which two runs with that noise pin down (the 'vs noiseless' column); the "
        "schedule's own effect is the 'WSD / cosine' column."
    )
    if args.real_replicates:
        if args.real_dir:
            curves_real.trained(args.real_dir, args.real_replicates)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-curves-real-") as root:
                curves_real.trained(root, args.real_replicates)
    curves_real.local(Path(args.local))
    return 0


if __name__ == "__main__":
    sys.exit(main())
