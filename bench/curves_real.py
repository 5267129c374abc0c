"""The curve law's early prediction on real CPU runs (bench/curves.py's real sections).

1. A small real study trained here with the project's worker (workers/train.py: real
   torch, byte-level GPTs on this Python's standard library source, one CPU thread), laid
   out as issue 22 asks: per model size (2 layers, d_model 16 to 40: N = 6.2K to 39K) one
   constant-lr, one cosine and one WSD run (20% linear cooldown), each with its own seed
   (no two runs share their noise), peak lr 1e-2 (plans/local.yaml's) after a 5% warmup,
   50 tokens per parameter (300 to 1,900 updates of 1,024 tokens), every run evaluated on
   the held-out files every 2.5% of its steps. `replicates` such studies, each with its
   own seeds. In each, every run is left out of the fit in turn, and its final eval loss
   is predicted from its first 20% of steps (`AnnealingLaw.predict_final`, 90% interval).
   Trained into `root/replicate-<r>` (kept and reused: a run with a finished summary is not
   trained again). About 4 minutes per replicate on 2 free cores.
2. `make run`'s CPU study (experiments/local), if present: the same leave-one-out. Its
   warmup is 20% of each run and it logs no evaluation before the end, so its first 20%
   holds no point the law uses (the prediction is the law's alone) and what is predicted
   is the final train-loss row; shown for what it is, not as the goal's test.

Measured (2 replicates, 24 runs): with one C for all sizes, 1.57% mean abs error, 19 of
24 inside their 90% intervals; with C N^gamma (laws/curves.py) 1.19%, 21 of 24; with the
end of a run predicted by size and schedule (`AnnealingLaw._end_residual`) 0.87%, worst
1.90%, 23 of 24. What the law missed was the schedule: it under-predicted every WSD
run's cooldown gain by 0.5-2.6% and over-predicted cosine's at the two larger sizes by
about 2%, while a run's own level over its first 20% said little of its end (its
deviation there and at the end correlate by ~0.5 across runs). The seed noise of a final
loss here is about 0.45% (the two replicates' same runs differ by 0.1-1.5%). With a
jackknife over runs in the interval (`AnnealingLaw.predict_final`), the same estimates
and 23 of 24, the intervals 5.2% wide (median; 4.2% without).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from orchestrator.laws.curve_data import read_curves
from orchestrator.laws.curves import AnnealingLaw
from storage.store import Store
from workers.spec import LrSchedule, RunSpec, Shape

log = logging.getLogger(__name__)

WIDTHS = (16, 24, 32, 40)  # d_model of 2-layer GPTs: N = 6.2K, 14K, 25K, 39K
TOKENS_PER_PARAM = 50
KINDS = ("constant", "cosine", "wsd")
WARMUP = 0.05  # so that the first 20% of a run holds points after warmup
EVALS = 40  # evaluations per run
EARLY = 0.2
LEVEL = 0.9
LAMS = (0.99, 0.995, 0.999)


def two_layer_gpt(d_model: int, tokens_per_param: int) -> tuple[Shape, int, int]:
    """A 2-layer GPT of width d_model: its shape, the tokens for `tokens_per_param`
    tokens per non-embedding parameter, and the updates of 1,024 tokens they take."""
    shape = Shape(n_layer=2, d_model=d_model, n_head=2)
    n = 2 * (12 * d_model**2 + 2 * d_model) + d_model
    tokens = tokens_per_param * n
    return shape, tokens, -(-tokens // 1024)


def real_spec(d_model: int, kind: str, replicate: int = 0) -> RunSpec:
    """A 2-layer GPT of width d_model, 50 tokens per parameter, under `kind`; its own seed."""
    shape, tokens, steps = two_layer_gpt(d_model, TOKENS_PER_PARAM)
    return RunSpec(
        shape=shape,
        tokens=tokens,
        global_batch=16,
        micro_batch=16,
        schedule=LrSchedule(kind=kind, peak_lr=1e-2, warmup_frac=WARMUP, min_lr_frac=0.1),
        log_every_steps=10,
        eval_every_steps=max(1, steps // EVALS),
        eval_batches=16,
        seed=10_000 * replicate + 100 * d_model + KINDS.index(kind),
    )


def train_study(root: str, replicate: int) -> list[RunSpec]:
    """Trains every spec of one replicate not yet finished in the store at `root`; its specs."""
    from workers.train import train  # torch: only when training

    store = Store(root)
    specs = [real_spec(d, kind, replicate) for d in WIDTHS for kind in KINDS]
    for spec in specs:
        if (store.run_summary(spec.run_id) or {}).get("status") == "finished":
            continue
        store.write_spec(spec.run_id, spec.to_json())
        outcome = train(spec, store, threads=1)
        log.info("trained %s: %s, eval loss %.4f", spec.run_id, outcome.status, outcome.eval_loss)
    return specs


def first_part(curve, fraction: float = EARLY):
    """The curve as it stood after the first `fraction` of its steps."""
    cut = int(fraction * curve.total_steps)
    keep = curve.steps <= cut
    return dataclasses.replace(curve, steps=curve.steps[keep], loss=curve.loss[keep], last_step=cut)


def leave_one_out(store: Store, run_ids, observed) -> list[tuple]:
    """(curve, points used, prediction, observed final loss) of each run, left out of the
    fit in turn and predicted from its first 20% of steps; `observed(run_id, store)`."""
    curves = read_curves(store, run_ids)
    rows = []
    for curve in curves.runs:
        others = [c for c in curves.runs if c.run_id != curve.run_id]
        law = AnnealingLaw(lam=LAMS, n_bootstrap=100).fit(others)
        part = first_part(curve)
        pred = law.predict_final(part, level=LEVEL)
        rows.append((curve, part.steps.size, pred, observed(curve.run_id, store)))
    return rows


def final_eval(run_id: str, store: Store) -> float:
    return float(store.run_summary(run_id)["eval_loss"])


def final_train_row(run_id: str, store: Store) -> float:
    return float(store.metrics([run_id], columns=["loss"])["loss"][-1].as_py())


def trained(root: str, replicates: int) -> None:
    """Trains (or reuses) the replicates under `root`, scores them, prints the section."""
    print(f"\n### Real CPU runs trained here (`{root}`)\n")
    print(
        f"{replicates} replicate(s) of {len(WIDTHS)} sizes x ({', '.join(KINDS)}), peak lr "
        f"1e-2, warmup {WARMUP:.0%}, {TOKENS_PER_PARAM} tokens per parameter, an evaluation "
        f"every {1 / EVALS:.1%} of each run (the curves are eval losses). In each replicate "
        f"every run is left out of the fit in turn; its final eval loss is predicted from "
        f"its first {EARLY:.0%} of steps.\n"
    )
    rows = []
    for r in range(replicates):
        path = str(Path(root) / f"replicate-{r}")
        specs = train_study(path, r)
        rows += [
            (r, *row) for row in leave_one_out(Store(path), [s.run_id for s in specs], final_eval)
        ]
    _table(rows, "final eval loss")


def local(root: Path) -> None:
    """`make run`'s study, each run left out in turn (see the module docstring)."""
    print(f"\n### `make run`'s CPU study (`{root}`)\n")
    if not (root / "runs").is_dir():
        print(f"Skipped: no study at `{root}` (`make run` trains it, about 4 minutes).")
        return
    store = Store(str(root))
    rows = [(0, *row) for row in leave_one_out(store, None, final_train_row)]
    warmup = sorted({row[1].spec.schedule.warmup_frac for row in rows})
    print(
        f"Warmup {', '.join(f'{w:.0%}' for w in warmup)} of each run, no evaluation before "
        "the last step: the first 20% holds no point the law uses (0 points: the law's "
        "prediction alone, from the other runs), and the curves and the predicted value are "
        "the train loss (its last logged row, a mean of 10 batches). Not the goal's test.\n"
    )
    _table(rows, "final train loss")


def _table(rows, observed_name: str) -> None:
    print(
        f"| replicate | run | N | schedule | steps | points | {observed_name} | predicted "
        f"({LEVEL:.0%}) | error | covers |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    errors, covered = [], []
    for r, curve, points, pred, observed in rows:
        error = pred.mean / observed - 1
        errors.append(abs(error))
        covered.append(pred.lo <= observed <= pred.hi)
        print(
            f"| {r} | {curve.run_id} | {curve.n_params:.3g} | {curve.spec.schedule.kind} | "
            f"{curve.total_steps} | {points} | {observed:.4f} | "
            f"{pred.mean:.4f} [{pred.lo:.4f}, {pred.hi:.4f}] | {100 * error:+.2f}% | "
            f"{'yes' if covered[-1] else 'no'} |"
        )
    e = np.array(errors)
    print(
        f"\nFirst {EARLY:.0%}: mean abs error {100 * e.mean():.2f}%, worst {100 * e.max():.2f}%, "
        f"{np.mean(e <= 0.01):.0%} within 1%; the {LEVEL:.0%} interval covers "
        f"{sum(covered)}/{len(covered)}."
    )
