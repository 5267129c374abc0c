"""Early stopping in the adaptive loop: a running run whose final loss its curve already
tells is stopped, and that prediction is its outcome (issue 22).

The curve law (`laws/curves.py`, Tissue et al. 2024's annealing law tied across sizes)
is fitted to the finished runs' curves, once per set of finished runs, and predicts a
running run's final loss from its partial curve (`AnnealingLaw.predict_final`, 90%
interval). A run is judged once it has done `min_progress` of its steps and logged
`_MIN_POINTS` points past its warmup (before, the prediction is the law's alone), then
again after every further `_REJUDGE` of its steps, and stopped when

- pinned down: that interval is at most `rel_width` wide, relative to the estimate (the
  rest of the run would tell the fit little more than the prediction does); or
- off the frontier (only with `off_frontier: true`): the interval lies wholly above the
  study's fitted L_opt at the run's compute, the top of L_opt's interval, by more than
  `margin` (the run is far from the optimum the target is about, and its curve says it
  will not get there);

and in either case only if the prediction's weight w (below) is at least the share p of
its steps the run has done: stopping keeps w of the run's information for p of its
compute, and the rest of the run would add 1 - w for 1 - p, less per FLOP than a new run
of the study's (w / p >= 1 >= (1 - w) / (1 - p) exactly when w >= p).

What the study keeps: the predicted final loss with its interval (`record.Predicted`,
in study.json), used by its fits as the run's outcome at its planned N and D. Not the
partial curve: the study's law is a law of final losses, and the loss after s of T steps
of a decaying schedule is not the final loss of any run (its learning rate has not
annealed); mapping a partial curve to a final loss is exactly what the curve law does,
with an interval. The prediction enters the fit with the precision weight
w = s^2 / (s^2 + sd^2) (its log-loss variance is s^2 + sd^2 = s^2 / w: s the scatter of
log loss the study's fit assumes for a measured run, its residual scale, or before it
has a fit the curve law's spread of the runs' levels; sd the prediction's own, from its
interval), so a loosely predicted run is trusted less, in the fit's intervals and in the
active strategy's information per FLOP alike (it reads the fit's weights). It is still
one run: the fit's degrees of freedom and noise count runs, not weights (see
`laws.covariance`).

So the interval must be honest, and a run stopped because its interval looks narrow must
not be one the curve law only extrapolates to: `predict_final` widens it by a jackknife
over the finished runs, which sees how far a prediction leans on the few runs at the
edge of what has finished. On bench/early_stop.py the stopped runs' 90% intervals held
91% of the final losses they would have reached, and the studies saved 34% of their
compute (median). Without the jackknife, 71% and 57%, a saving partly bought with
weights the predictions did not deserve: the target's 90% intervals, when the studies
first reached the baseline's width, held the truth's L_opt and N_opt 16 times of 20,
against 19 with it and 20 without early stopping.

Cooldown branches: before one runs, its final loss is predicted from its parent's curve
up to the branch step, which is the branch's own (they share those steps), by the same
`predict_final` (`with_predictions`); a strategy may skip a branch already known.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from orchestrator.adaptive.record import Predicted
from orchestrator.adaptive.results import final_loss, usable
from orchestrator.adaptive.stopping import relative_width
from orchestrator.adaptive.strategies.base import Candidate
from orchestrator.laws import Chinchilla, FitError, Prediction
from orchestrator.laws.curve_data import RunCurve, read_curves
from orchestrator.laws.curves import AnnealingLaw
from orchestrator.planning.plan import EarlyStop
from orchestrator.scheduler.base import RunState
from orchestrator.scheduler.execution import RunView
from storage.store import Store
from workers.spec import RunSpec

log = logging.getLogger(__name__)

LEVEL = 0.9  # the predicted final loss's interval, as `orch status` shows it
_REJUDGE = 0.05  # share of a run's steps between two verdicts on it
_MIN_RUNS = 3  # finished runs with curves before the curve law is fitted
_MIN_POINTS = 3  # points past warmup a running run's curve needs to be judged
# S2's momentum, chosen by the fit's objective: Tissue et al.'s 0.999 misfits runs of a
# few thousand steps, whose loss follows an anneal within ~100 steps (on simulated curves
# of lam 0.99 it widened the predicted final loss's interval at 30% of a run from ~2% to
# ~7%, so that no run was ever pinned down).
_LAMS = (0.99, 0.995, 0.999)
# Cluster-bootstrap refits for the interval, as `orch status` (report/status.py): a coarse
# interval, refitted once per new finished run (with a jackknife refit per finished run:
# `AnnealingLaw.predict_final`).
_BOOTSTRAP = 20
_MIN_NOISE = 1e-3  # floor on the seed noise in a weight (std of log loss)
_MIN_WEIGHT = 1e-3


@dataclass(frozen=True)
class Verdict:
    """Why a running run should stop now, and the outcome it leaves."""

    reason: str
    prediction: Prediction  # its final loss, nats per token, at LEVEL
    weight: float  # its precision weight in the study's fits (module docstring)
    step: int  # the step it had reported

    def record(self) -> Predicted:
        """What study.json keeps of it: the stopped run's outcome."""
        p = self.prediction
        lo, hi = float(p.lo), float(p.hi)
        return Predicted(float(p.mean), lo, hi, p.level, self.weight, self.step, self.reason)


class EarlyStopper:
    """The verdicts of `adaptive.early_stop` on running runs; see the module docstring.

    Args:
        rule: the plan's `adaptive.early_stop`.
        store: the study's experiment (the runs' specs and curves are read from it).
    """

    def __init__(self, rule: EarlyStop, store: Store):
        self.rule = rule
        self.store = store
        self._law: AnnealingLaw | None = None
        self._law_runs: tuple[str, ...] = ()
        self._eval_over_train = 1.0
        self._judged: dict[str, int] = {}  # run_id -> the step of its last verdict

    def curve_law(self, finished: Iterable[str]) -> AnnealingLaw | None:
        """The curve law of the `finished` runs (refitted when they change); None below
        `_MIN_RUNS` runs or if the fit fails."""
        runs = tuple(sorted(set(finished)))
        if runs != self._law_runs:
            self._law_runs, self._law = runs, None
            if len(runs) >= _MIN_RUNS:
                try:
                    curves = read_curves(self.store, list(runs))
                    self._law = AnnealingLaw(lam=_LAMS, n_bootstrap=_BOOTSTRAP).fit(curves)
                except FitError as err:
                    log.info("early stopping: no curve law from %d runs: %s", len(runs), err)
                self._eval_over_train = self._train_to_eval(runs)
        return self._law

    def judge(
        self,
        running: Sequence[RunView],
        *,
        finished: Iterable[str],
        frontier: Chinchilla | None,
        noise: float | None = None,
    ) -> dict[str, Verdict]:
        """The running runs to stop now (run_id -> verdict).

        Args:
            running: the runs running now, each with its last reported progress.
            finished: the run ids of the study's finished runs (the curve law's data).
            frontier: the study's current fit, for the off-frontier rule (None: not used).
            noise: the std of log loss the study's fit assumes for a measured run (its
                residual scale; None: the curve law's spread of the runs' levels).
        """
        due = {v.spec.run_id: v for v in running if self._due(v)}
        if not due:
            return {}
        law = self.curve_law(finished)
        if law is None:
            return {}
        for run_id, view in due.items():
            self._judged[run_id] = int(view.latest["step"])
        try:
            curves = read_curves(self.store, list(due)).runs
        except FitError as err:  # no curve past warmup yet, or a bad row: judged later
            log.info("early stopping: no partial curves to judge: %s", err)
            return {}
        out = {}
        for curve in curves:
            if curve.finished or curve.steps.size < _MIN_POINTS:
                continue  # judged again `_REJUDGE` later
            try:
                pred = self._predict(law, curve)
            except FitError as err:
                log.info("early stopping: no prediction for %s: %s", curve.run_id, err)
                continue
            step = self._judged[curve.run_id]
            reason = self._reason(curve, step, pred, frontier)
            weight = _weight(pred, noise if noise and math.isfinite(noise) else law.noise_)
            if reason is not None and weight >= _progress(curve.spec, step):
                out[curve.run_id] = Verdict(reason, pred, float(weight), step)
                log.info("run %s: stopping early: %s", curve.run_id, reason)
        return out

    def with_predictions(
        self, pool: Sequence[Candidate], *, finished: Iterable[str]
    ) -> tuple[Candidate, ...]:
        """The pool with each cooldown branch's predicted final loss (`Candidate.predicted`)
        from its parent's curve up to its branch step; the pool as it was without a law."""
        branches = {c.spec.branch_from for c in pool if c.spec is not None and c.spec.branch_from}
        law = self.curve_law(finished) if branches else None
        if law is None:
            return tuple(pool)
        try:
            parents = {c.run_id: c for c in read_curves(self.store, sorted(branches)).runs}
        except FitError as err:
            log.info("early stopping: no parent curves for branch predictions: %s", err)
            return tuple(pool)
        out = []
        for c in pool:
            parent = parents.get(c.spec.branch_from) if c.spec is not None else None
            if parent is not None:
                keep = parent.steps <= c.spec.branch_step
                trunk = dataclasses.replace(
                    parent,
                    run_id=c.run_id,
                    spec=c.spec,
                    steps=parent.steps[keep],
                    loss=parent.loss[keep],
                    last_step=c.spec.branch_step,
                )
                c = dataclasses.replace(c, predicted=self._predict(law, trunk))
            out.append(c)
        return tuple(out)

    # --- internals ----------------------------------------------------------------------

    def _due(self, view: RunView) -> bool:
        """Whether a running run has done `min_progress` of its steps and moved on by
        `_REJUDGE` of them since its last verdict."""
        step = view.latest.get("step")
        if step is None or _progress(view.spec, step) < self.rule.min_progress:
            return False
        last = self._judged.get(view.spec.run_id)
        return last is None or _progress(view.spec, step) - _progress(view.spec, last) >= _REJUDGE

    def _predict(self, law: AnnealingLaw, curve: RunCurve) -> Prediction:
        """The run's final held-out loss: a curve of train losses predicts the final train
        loss, scaled by the finished runs' typical final eval / train ratio."""
        pred = law.predict_final(curve, level=LEVEL)
        k = self._eval_over_train if curve.source == "train" else 1.0
        return Prediction(pred.mean * k, pred.lo * k, pred.hi * k, pred.level)

    def _reason(self, curve: RunCurve, step: int, pred: Prediction, frontier: Chinchilla | None):
        spec, done = curve.spec, _progress(curve.spec, step)
        shown = f"predicted final loss {pred.mean:.4g} [{pred.lo:.4g}, {pred.hi:.4g}] ({LEVEL:.0%})"
        width = relative_width(pred)
        if self.rule.rel_width > 0 and width <= self.rule.rel_width:
            return (
                f"final loss pinned down at {done:.0%} of its steps: {shown}, "
                f"{width:.2%} wide <= {self.rule.rel_width:.2%}"
            )
        if self.rule.off_frontier and frontier is not None:
            flops = (spec.flops_per_token or 6.0 * curve.n_params) * spec.tokens
            best = frontier.loss_opt(flops, level=LEVEL)
            if math.isfinite(best.hi) and pred.lo > best.hi * (1 + self.rule.margin):
                return (
                    f"off the frontier at {done:.0%} of its steps: {shown}, above "
                    f"L_opt({flops:.3g} FLOPs) <= {best.hi:.4g} by more than "
                    f"{self.rule.margin:.0%}"
                )
        return None

    def _train_to_eval(self, runs: tuple[str, ...]) -> float:
        """Median final eval loss / final train loss of the finished runs (1 without)."""
        ratios = []
        for run_id in runs:
            row = self.store.run_summary(run_id) or {}
            ev, tr = row.get("eval_loss"), row.get("final_loss")
            if ev and tr and math.isfinite(ev) and math.isfinite(tr) and tr > 0:
                ratios.append(ev / tr)
        return float(np.median(ratios)) if ratios else 1.0


def _progress(spec: RunSpec, step: int) -> float:
    """Share of a run's steps done after `step` (a branch's from its branch step)."""
    start = spec.branch_step if spec.branch_from else 0
    return (step - start) / max(1, spec.steps - start)


def _weight(pred: Prediction, noise: float) -> float:
    """s^2 / (s^2 + sd^2): s the seed noise of log loss, sd the prediction's (its
    interval's half-width in log loss over the normal quantile of LEVEL)."""
    s = max(float(noise), _MIN_NOISE)
    sd = math.log(pred.hi / pred.lo) / (2 * norm.ppf(0.5 + LEVEL / 2))
    # An interval that is not finite (no bootstrap) still leaves its estimate: kept, barely.
    return s**2 / (s**2 + sd**2) if math.isfinite(sd) else _MIN_WEIGHT


def fit_outcomes(
    ended: Mapping[str, dict | None],
    predicted: Mapping[str, Predicted],
    specs: Mapping[str, RunSpec],
) -> dict[str, tuple[float, float, float, float, float]]:
    """run_id -> (N, D, C, final loss, weight) of each run a study's fits use, in the
    order of `ended` (run_id -> summary row): a finished run as measured (weight 1); a
    run stopped early at its planned D and C, with its predicted final loss and weight."""
    out = {}
    for run_id, row in ended.items():
        if usable(row):
            values = (row["n_params"], row["tokens"], row["flops"], final_loss(row), 1.0)
            out[run_id] = tuple(float(v) for v in values)
        elif row is not None and row["status"] == RunState.STOPPED and run_id in predicted:
            # (its prediction is saved before its summary is written: a stopped run
            # without one has a damaged study.json, and is left out of the fits)
            p, spec = predicted[run_id], specs[run_id]
            per_token = spec.flops_per_token or 6.0 * row["n_params"]
            n, d = float(row["n_params"]), float(spec.tokens)
            out[run_id] = (n, d, per_token * d, p.loss, p.weight)
    return out
