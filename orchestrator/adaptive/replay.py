"""`replay`: how well would each strategy have predicted held-out runs, choosing from a
finished sweep with a fraction of its compute? What `orch replay` calls.

    sweep = load_sweep("chinchilla.csv")
    result = replay(sweep, sweep.largest(5), strategies=("active", "random"), budget_frac=0.1)
    for outcome in result.outcomes:
        print(outcome.strategy, outcome.spent_frac, outcome.mean_abs_error_pct, outcome.covered)

Each strategy runs one `ReplayStudy` (replay_study.py) on the same pool (the sweep's runs
but the targets) and the same seed round, with a budget of `budget_frac` of the pool's
compute: the sum over the pool of each run's C plus the per-run overhead, so the
fraction spent is of what training the whole pool would have cost under the same count.
The study's target is the target runs (their N and D only), so the stopping rule and the
`active` strategy aim at them.

When a study stops, a law is fitted to the runs it chose and predicts each target's loss
with a 90% prediction interval: by default (`form="auto"`) every form, weighed by
backtest (`AutoLaw`), falling back to `Chinchilla` if no form can be fitted; or one
form, as `orch fit --form` names them. Where the targets table has losses, each
prediction is scored: its relative error |predicted / observed - 1| and whether the
interval covers the observed loss.
`reference` is the same fit on every run of the pool (100% of its compute): the error a
strategy would match by training everything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.adaptive.replay_study import (
    ReplayStudy,
    default_batch,
    prior_n_opt,
    replay_pool,
    seed_design,
)
from orchestrator.adaptive.strategies import NAMES, make_strategy
from orchestrator.adaptive.study import StudyError
from orchestrator.adaptive.sweep import Sweep, TargetTable
from orchestrator.adaptive.targets import Target
from orchestrator.laws import AutoLaw, FitError, Prediction
from orchestrator.laws.auto import FORM_ERROR_FLOOR, check_form_error_floor
from orchestrator.laws.axis import ComputeAxis
from orchestrator.laws.compare import LAWS

log = logging.getLogger(__name__)

LEVEL = 0.9  # of the prediction intervals at the targets
REFERENCE = "pool"  # the outcome name of the fit on every pool run
FORMS = ("auto", *LAWS)  # what may predict at the targets: AutoLaw, or one law form


@dataclass(frozen=True)
class TargetScore:
    """One target's prediction, and its score where the targets table has its loss."""

    n_params: float  # N
    tokens: float  # D
    observed: float | None  # the target's loss, nats per token; None: not in the table
    prediction: Prediction | None  # mean, lo, hi at LEVEL; None: no fit

    @property
    def error_pct(self) -> float | None:
        """|predicted / observed - 1| in percent (None: no prediction or no loss)."""
        if self.observed is None or self.prediction is None:
            return None
        return abs(float(self.prediction.mean) / self.observed - 1.0) * 100

    @property
    def width_pct(self) -> float | None:
        """The interval's width relative to the prediction, percent (None: no prediction)."""
        if self.prediction is None:
            return None
        p = self.prediction
        return (float(p.hi) - float(p.lo)) / float(p.mean) * 100

    @property
    def covered(self) -> bool | None:
        """Whether the interval holds the observed loss (None: nothing to compare)."""
        if self.observed is None or self.prediction is None:
            return None
        return float(self.prediction.lo) <= self.observed <= float(self.prediction.hi)


@dataclass(frozen=True)
class ReplayOutcome:
    """What one strategy chose, spent and predicted."""

    strategy: str  # a strategy's name, or REFERENCE for every pool run
    run_ids: tuple[str, ...]  # the runs chosen, in order (round 0 first)
    adaptive_rounds: int  # rounds after round 0
    spent_flops: float  # C + overhead of the runs chosen
    spent_frac: float  # of the pool's compute
    stop_reason: str
    fit: str  # the law that predicted: "auto (chinchilla 71%)", a form's name, or "none"
    fit_note: str  # why the law asked for could not be fitted; "" if it was
    scores: tuple[TargetScore, ...]  # one per target, in the targets' order

    @property
    def mean_abs_error_pct(self) -> float | None:
        """Mean of the targets' relative errors, percent (None: none scored)."""
        errors = [s.error_pct for s in self.scores if s.error_pct is not None]
        return float(np.mean(errors)) if errors else None

    @property
    def mean_width_pct(self) -> float | None:
        """Mean relative width of the targets' intervals, percent: coverage is only worth
        as much as the intervals are narrow (None: no prediction)."""
        widths = [s.width_pct for s in self.scores if s.width_pct is not None]
        finite = [w for w in widths if math.isfinite(w)]
        return float(np.mean(finite)) if finite else None

    @property
    def covered(self) -> int:
        """How many scored targets the intervals cover."""
        return sum(bool(s.covered) for s in self.scores)

    @property
    def scored(self) -> int:
        """How many targets have a prediction and an observed loss."""
        return sum(s.covered is not None for s in self.scores)


@dataclass(frozen=True)
class ReplayResult:
    sweep: str  # the sweep's path
    targets: str  # the targets table's path
    pool_runs: int  # runs a strategy could choose (the sweep's, less the targets)
    pool_flops: float  # their compute: C + overhead each, FLOPs
    budget_frac: float
    budget_flops: float  # budget_frac x pool_flops
    seed: int
    overhead_flops: float  # per run, FLOPs
    batch: int  # runs per adaptive round
    seed_run_ids: tuple[str, ...]  # round 0, shared by every strategy
    form: str  # the law asked to predict at the targets ("auto": AutoLaw)
    form_error_floor: float  # AutoLaw's floor under the form error, per decade
    outcomes: tuple[ReplayOutcome, ...]  # one per strategy, in the order asked
    reference: ReplayOutcome | None  # the fit on every pool run (None: not asked for)

    def to_dict(self) -> dict:
        """Everything, as JSON-able data (`orch replay --json`)."""
        outcomes = [*self.outcomes, *((self.reference,) if self.reference else ())]
        return {
            "sweep": self.sweep,
            "targets": self.targets,
            "pool_runs": self.pool_runs,
            "pool_flops": self.pool_flops,
            "budget_frac": self.budget_frac,
            "budget_flops": self.budget_flops,
            "seed": self.seed,
            "overhead_flops": self.overhead_flops,
            "batch": self.batch,
            "form": self.form,
            "form_error_floor": self.form_error_floor,
            "interval_level": LEVEL,
            "seed_run_ids": list(self.seed_run_ids),
            "outcomes": [_outcome_dict(o) for o in outcomes],
        }


def replay(
    sweep: Sweep,
    targets: TargetTable,
    *,
    strategies: Sequence[str] = ("active",),
    budget_frac: float,
    seed: int = 0,
    overhead_flops: float = 0.0,
    batch: int | None = None,
    rel_width: float = 0.0,
    form: str = "auto",
    form_error_floor: float = FORM_ERROR_FLOOR,
    reference: bool = True,
) -> ReplayResult:
    """Replays `sweep` once per strategy and scores each at `targets` (module docstring).

    Args:
        strategies: names of `strategies.NAMES`, each replayed from the same round 0.
        budget_frac: the share of the pool's compute each strategy may spend, in (0, 1].
        seed: the strategies' randomness; the same seed gives the same result.
        overhead_flops: compute each run costs beyond its C (start-up, evaluation), FLOPs.
        batch: runs per adaptive round; None: about 1% of the pool, at least 4.
        rel_width: stop a strategy once the 90% prediction interval of its study's
            Chinchilla fit (what a Study's stopping rule reads) at every target is at most
            this wide, relative to the prediction (0: spend the budget).
        form: the law that predicts at the targets: "auto" (AutoLaw) or a form of
            `FORMS`.
        form_error_floor: AutoLaw's least form error per decade of compute beyond the
            chosen runs (`auto.FORM_ERROR_FLOOR`; 0: its backtests alone).
        reference: also fit every pool run (the error the strategies try to match).

    Raises:
        StudyError: a bad option, or no pool (every run of the sweep is a target).
    """
    unknown = [s for s in strategies if s not in NAMES]
    if unknown or not strategies:
        raise StudyError(f"strategies: expected some of {', '.join(NAMES)}, got {unknown}")
    if not (isinstance(budget_frac, (int, float)) and 0 < budget_frac <= 1):
        raise StudyError(f"budget_frac: expected a fraction in (0, 1], got {budget_frac!r}")
    if form not in FORMS:
        raise StudyError(f"form: expected one of {', '.join(FORMS)}, got {form!r}")
    try:  # checked before any replay: AutoLaw's FitError would only be a target's note
        check_form_error_floor(form_error_floor)
    except FitError as err:
        raise StudyError(err.message) from None
    if batch is not None and batch < 1:
        raise StudyError(f"batch: expected at least 1 run per round, got {batch!r}")
    pool = replay_pool(sweep, targets.runs, overhead_flops=overhead_flops)
    if not pool:
        raise StudyError(f"{sweep.source}: every run is a target; nothing is left to choose")
    pool_flops = float(sum(c.flops for c in pool))
    budget = budget_frac * pool_flops
    seed_runs = seed_design(pool, budget)
    batch = batch or default_batch(len(pool))
    target = Target(runs=targets.runs, level=LEVEL)
    per_token = ComputeAxis.from_runs(sweep.n_params, sweep.tokens, sweep.flops).per_token
    outcomes = []
    for name in strategies:
        study = ReplayStudy(
            sweep,
            pool,
            target,
            make_strategy(name, prior_n_opt),
            budget_flops=budget,
            seed_runs=seed_runs,
            seed=seed,
            batch=batch,
            rel_width=rel_width,
            flops_per_token=per_token,
        ).run()
        chosen = study.chosen
        outcomes.append(
            _outcome(
                name,
                chosen,
                adaptive_rounds=sum(r.strategy != "seed" for r in study.rounds),
                stop_reason=study.stop_reason or "",
                pool_flops=pool_flops,
                loss=_losses(sweep, chosen),
                targets=targets,
                per_token=per_token,
                form=form,
                floor=form_error_floor,
            )
        )
    ref = None
    if reference:
        ref = _outcome(
            REFERENCE,
            tuple(pool),
            adaptive_rounds=0,
            stop_reason="every run of the pool",
            pool_flops=pool_flops,
            loss=_losses(sweep, pool),
            targets=targets,
            per_token=per_token,
            form=form,
            floor=form_error_floor,
        )
    return ReplayResult(
        sweep=str(sweep.source),
        targets=str(targets.source),
        pool_runs=len(pool),
        pool_flops=pool_flops,
        budget_frac=float(budget_frac),
        budget_flops=budget,
        seed=seed,
        overhead_flops=overhead_flops,
        batch=batch,
        seed_run_ids=tuple(c.run_id for c in seed_runs),
        form=form,
        form_error_floor=float(form_error_floor),
        outcomes=tuple(outcomes),
        reference=ref,
    )


def predict_targets(
    n_params,
    tokens,
    loss,
    targets: TargetTable,
    *,
    form="auto",
    groups=None,
    flops_per_token=None,
    form_error_floor: float = FORM_ERROR_FLOOR,
) -> tuple[str, str, tuple[TargetScore, ...]]:
    """Fit the runs (N, D, L arrays) with `form` and predict every target at LEVEL
    (AutoLaw's intervals with `form_error_floor`).

    Returns:
        (fit, note, scores): `fit` is "auto (<chosen form> <its weight>)" for AutoLaw,
        "chinchilla" when AutoLaw could fit no form (or when asked for), the form's name,
        or "none" when nothing could be fitted (every prediction None); `note` says what
        failed.
    """
    n = np.array([t.n_params for t in targets.runs], dtype=float)
    d = np.array([t.tokens for t in targets.runs], dtype=float)
    note, law = "", None
    if form == "auto":
        try:
            auto = AutoLaw(
                level=LEVEL, flops_per_token=flops_per_token, form_error_floor=form_error_floor
            )
            law = auto.fit(n_params, tokens, loss, groups=groups)
            fit = f"auto ({law.chosen_} {law.weights_[law.chosen_]:.0%})"
        except FitError as err:
            note, form = f"auto: {err.message}; Chinchilla instead", "chinchilla"
    if law is None:
        try:
            law = LAWS[form](flops_per_token=flops_per_token)
            law.fit(n_params, tokens, loss, groups=groups)
            fit = form
        except FitError as err:
            none = tuple(TargetScore(t.n_params, t.tokens, o, None) for t, o in _pairs(targets))
            return "none", "; ".join(filter(None, (note, f"{form}: {err.message}"))), none
    pred = law.predict(n, d, level=LEVEL, interval="prediction")
    scores = tuple(
        TargetScore(
            t.n_params,
            t.tokens,
            observed,
            Prediction(float(pred.mean[i]), float(pred.lo[i]), float(pred.hi[i]), LEVEL),
        )
        for i, (t, observed) in enumerate(_pairs(targets))
    )
    return fit, note, scores


def _pairs(targets: TargetTable):
    return zip(targets.runs, targets.loss, strict=True)


def _losses(sweep: Sweep, chosen) -> list[float]:
    row = {r: i for i, r in enumerate(sweep.run_ids)}
    return [float(sweep.loss[row[c.run_id]]) for c in chosen]


def _outcome(
    name, chosen, *, adaptive_rounds, stop_reason, pool_flops, loss, targets, per_token, form, floor
) -> ReplayOutcome:
    spent = float(sum(c.flops for c in chosen))
    fit, note, scores = predict_targets(
        [c.n_params for c in chosen],
        [c.tokens for c in chosen],
        loss,
        targets,
        form=form,
        groups=[c.lineage for c in chosen],
        flops_per_token=per_token,
        form_error_floor=floor,
    )
    if fit == "none":
        log.warning("replay (%s): no fit to its %d runs: %s", name, len(chosen), note)
    return ReplayOutcome(
        strategy=name,
        run_ids=tuple(c.run_id for c in chosen),
        adaptive_rounds=adaptive_rounds,
        spent_flops=spent,
        spent_frac=spent / pool_flops,
        stop_reason=stop_reason,
        fit=fit,
        fit_note=note,
        scores=scores,
    )


def _outcome_dict(o: ReplayOutcome) -> dict:
    def num(x):
        return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x

    return {
        "strategy": o.strategy,
        "runs": len(o.run_ids),
        "run_ids": list(o.run_ids),
        "adaptive_rounds": o.adaptive_rounds,
        "spent_flops": o.spent_flops,
        "spent_frac": o.spent_frac,
        "stop_reason": o.stop_reason,
        "fit": o.fit,
        "fit_note": o.fit_note,
        "mean_abs_error_pct": num(o.mean_abs_error_pct),
        "covered": o.covered,
        "scored": o.scored,
        "mean_width_pct": num(o.mean_width_pct),
        "targets": [
            {
                "N": s.n_params,
                "D": s.tokens,
                "observed": s.observed,
                "mean": num(float(s.prediction.mean)) if s.prediction else None,
                "lo": num(float(s.prediction.lo)) if s.prediction else None,
                "hi": num(float(s.prediction.hi)) if s.prediction else None,
                "error_pct": num(s.error_pct),
                "width_pct": num(s.width_pct),
                "covered": s.covered,
            }
            for s in o.scores
        ],
    }
