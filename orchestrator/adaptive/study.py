"""The adaptive loop's public API: `Study` with ask, tell and run.

    study = Study.from_plan("plans/simulated.yaml")
    while specs := study.ask():
        study.tell({spec.run_id: my_training(spec) for spec in specs})
    print(study.stop_reason, study.law.n_opt(1e23))

Every plan is a study: a grid plan (no `adaptive` section) is one with zero adaptive
rounds, so `orch submit`, `orch resume` and `Study.run` are one driver path.

Round 0 is the plan's seed grid plus `adaptive.repeat_seeds` reseeded copies of its
cheapest run (they measure seed-to-seed noise). Each later round asks the plan's strategy
for `adaptive.batch` runs chosen from the candidate pool (candidates.py)
within the ledger's remaining FLOPs, after refitting the Chinchilla law to every
finished run. `ask` returns [] once a stopping rule holds (stopping.py); the reason is
kept in the store. The target (targets.py) is read with that Chinchilla fit, or with
`AutoLaw` on the same runs when the plan says `adaptive.target.form: auto`
(`target_law`). A study rebuilt from its store (`orch resume`) whose last round has
runs that did not end (failed, preempted, cancelled) hands those out again first.

With `adaptive.early_stop`, `run` stops running runs whose final loss their curve already
tells (early_stop.py); such a run is an outcome, not a failure: its predicted final loss
(kept in study.json) stands for it in every fit, and it is never run again.

All state is in the store: the runs (specs, events, summaries) and `study.json` (each
round's run ids, the target after each refit, the stop reason). Strategies are pure
functions of the plan and the finished runs, and the fit is deterministic, so a study
rebuilt from its store after a crash asks for the same runs: an unfinished round is
handed out again rather than re-decided.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from orchestrator.adaptive.candidates import branch_candidates, candidate_pool
from orchestrator.adaptive.early_stop import EarlyStopper, fit_outcomes
from orchestrator.adaptive.noise import estimate_noise
from orchestrator.adaptive.record import Estimate, Round, StudyRecord
from orchestrator.adaptive.results import RunResult, StudyResult, final_loss, usable
from orchestrator.adaptive.stopping import budget_reason, grid_reason, rounds_reason, width_reason
from orchestrator.adaptive.strategies import (
    Candidate,
    Strategy,
    StrategyView,
    make_strategy,
)
from orchestrator.adaptive.targets import Target, TargetRun, target_estimate
from orchestrator.laws import AutoLaw, Chinchilla, FitError, Prediction
from orchestrator.laws.prior import Prior
from orchestrator.planning import Plan, load_plan
from orchestrator.planning.axis import compute_axis
from orchestrator.planning.expand import ADAPTIVE, SEED, expand_plan, prior_n_opt
from orchestrator.planning.ledger import Ledger, StageBudget
from orchestrator.scheduler.base import ENDED, Backend, RunState
from orchestrator.scheduler.execution import (
    Execution,
    RunView,
    execute,
    prepare,
    reconcile,
    run_flops,
    spent_flops,
)
from orchestrator.scheduler.factory import plan_backend
from orchestrator.scheduler.function import FunctionBackend, summary_row
from storage import schema
from storage.errors import OrchError
from storage.store import Store
from workers.sink_setup import prepare_sinks
from workers.spec import RunSpec

log = logging.getLogger(__name__)

NOISE = "noise"  # ledger stage of the repeated seeds
_FAILED_EVENTS = frozenset({RunState.FAILED, RunState.PREEMPTED, RunState.DIVERGED})
# Refits after every round start from the same 4,500-start grid; refining its best 8
# instead of 32 finds the same optimum on study-sized data (50 runs) in ~60% of the time.
_FIT_REFINE = 8


class StudyError(OrchError, ValueError):
    """The study cannot do what was asked (an unknown run told, a bad backend)."""


def fit_study_law(
    n_params,
    tokens,
    loss,
    *,
    groups,
    flops_per_token=None,
    prior: Prior | None = None,
    weights=None,
) -> Chinchilla:
    """The Chinchilla fit a study refits after every round (and a replay, adaptive/
    replay.py): its strategies and stopping rule read it.

    Args:
        groups: a lineage label per run (runs sharing weights and seed noise share one).
        flops_per_token: N -> FLOPs per token of the study's compute axis; None: 6 N.
        prior: a previous fit as a prior (MAP), or None.
        weights: each run's precision weight (None: 1 each; a run stopped early,
            whose final loss is a prediction, weighs less; see `laws.covariance`).

    Raises:
        FitError: too few runs, bad values, or no start reached a finite objective.
    """
    law = Chinchilla(n_refine=_FIT_REFINE, flops_per_token=flops_per_token)
    return law.fit(n_params, tokens, loss, groups=groups, prior=prior, weights=weights)


# The summary columns an outcome must carry to stand for the stored row.
_SUMMARY_KEYS = frozenset({"run_id", "status", "n_params", "tokens", "flops", "eval_loss"})


class Study:
    """A scaling-law study on one experiment store; see the module docstring."""

    def __init__(self, plan: Plan, *, store: Store | None = None, strategy: Strategy | None = None):
        self.plan = plan
        self.store = store or Store(plan.experiment_uri)
        ad = plan.adaptive
        # A grid plan has no target: its study ends when its one round has.
        self.target = (
            Target(
                flops=ad.target_flops,
                quantity=ad.quantity,
                level=ad.level,
                runs=tuple(TargetRun(n, d) for n, d in ad.target_runs),
            )
            if ad
            else None
        )
        planned = expand_plan(plan)
        # C as the plan counts it, for every fit of this study (planning/axis.py).
        self.axis = compute_axis(plan)
        self._specs: dict[str, RunSpec] = {}
        self._stage: dict[str, str] = {}
        self._seed_ids: list[str] = []
        for run in planned.runs:
            self._add(run.spec, SEED)
            self._seed_ids.append(run.spec.run_id)
        cheapest = min(planned.runs, key=lambda r: r.flops).spec
        for k in range(1, (ad.repeat_seeds if ad else 0) + 1):
            repeat = dataclasses.replace(cheapest, seed=cheapest.seed + k)
            self._add(repeat, NOISE)
            self._seed_ids.append(repeat.run_id)
        levels = sorted({r.level_flops for r in planned.runs})
        self._pool = candidate_pool(plan, levels) if ad else []
        for c in self._pool:
            self._add(c.spec, ADAPTIVE)
        self.strategy: Strategy | None = strategy
        if strategy is None and ad is not None:
            self.strategy = make_strategy(ad.strategy, lambda c: prior_n_opt(plan, c))
        self.ledger: Ledger = planned.ledger()
        self._booked: set[str] = set()
        self._ended: dict[str, dict | None] = {}  # run_id -> summary row (None: failed)
        self._law: Chinchilla | None = None
        self._law_runs: tuple[str, ...] = ()
        self._law_rows: tuple | None = None  # `_fit_rows` of `_law_runs`, once fitted
        # `target_law` under `target.form: auto`, and the runs it was fitted on
        self._auto: AutoLaw | None = None
        self._auto_runs: tuple[str, ...] = ()
        # `seed_grid.prior_fit`, a previous fit, is a prior on this study's fits (MAP), not
        # only the centre of its seed grid.
        prior_fit = plan.seed_grid.prior_fit if plan.seed_grid else None
        self._prior = (
            Prior.from_params(prior_fit, source="seed_grid.prior_fit") if prior_fit else None
        )
        self.store.write_plan(plan.text)
        self.record = StudyRecord.load(self.store)
        rule = ad.early_stop if ad else None
        self._stopper = EarlyStopper(rule, self.store) if rule is not None else None
        for rnd in self.record.rounds:
            for run_id in rnd.run_ids:
                if run_id not in self._specs:  # a cooldown branch, or an older pool's run
                    self._add(RunSpec.from_dict(self.store.read_spec(run_id)), ADAPTIVE)
        self._sync(from_events=True)
        if self.record.stop is not None and self._pending():
            # A new driver on a stopped study (`orch resume`): what did not end is retried.
            log.info("study %s: resuming %d unended runs", plan.name, len(self._pending()))
            self.record.stop = None

    @classmethod
    def from_plan(
        cls,
        plan: Plan | str | Path,
        *,
        store: Store | str | None = None,
        strategy: Strategy | None = None,
    ) -> Study:
        """A study from a plan (or a plan file); `store` overrides the plan's experiment."""
        if not isinstance(plan, Plan):
            plan = load_plan(plan)
        if isinstance(store, str):
            store = Store(store)
        return cls(plan, store=store, strategy=strategy)

    # --- ask and tell -------------------------------------------------------------------

    def ask(self, n: int | None = None) -> list[RunSpec]:
        """The next runs to make: the unfinished runs of the current round, or a new round
        of up to `n` (default `adaptive.batch`) runs; [] once a stopping rule holds."""
        self._sync()
        if self.record.stop is not None:
            return []
        if not self.record.rounds:
            self._open_round(self._seed_ids, "seed")
        pending = self._pending()
        if pending:
            return pending
        reason = self._stop_check()
        if reason is None and self.strategy is not None:
            state = self.state()
            budget = self.ledger.remaining_flops
            chosen = self.strategy.propose(
                state, n or self.plan.adaptive.batch, budget_flops=budget
            )
            if chosen:
                self._open_round([c.run_id for c in chosen], self.strategy.name)
                return self._pending()
            cheapest = min((c.flops for c in state.pool), default=None)
            reason = budget_reason(budget, cheapest, self.strategy.name)
        self.record.stop = reason
        self.record.save(self.store)
        log.info("study %s stops: %s", self.plan.name, reason)
        return []

    def tell(self, results: Mapping[str, float] | Iterable[RunResult]) -> None:
        """Record outcomes of asked runs made outside a backend (run_id -> final loss)."""
        items = results.items() if isinstance(results, Mapping) else results
        for item in items:
            run_id, loss = (item.run_id, item.loss) if isinstance(item, RunResult) else item
            if run_id not in self._asked():
                raise StudyError(
                    f"run {run_id} was not asked for by this study", hint="tell only ask's runs"
                )
            if self.store.run_summary(run_id) is None:
                spec = self._specs[run_id]
                self.store.write_spec(run_id, spec.to_json())
                row = summary_row(spec, float(loss))
                self.store.write_run_summary(row)
                self.store.append_event(run_id, attempt=0, state=row["status"], durable=False)
        self.store.flush_events()
        self._sync()
        self.store.write_ledger(self.ledger.rows())

    # --- the loop -----------------------------------------------------------------------

    def run(
        self,
        backend: Backend | Callable[[RunSpec], float] | None = None,
        *,
        make_backend: Callable[[Store], Backend] | None = None,
        address: str | None = None,
        on_start: Callable[[str | None], None] | None = None,
        on_progress: Callable[[Execution], None] | None = None,
        poll_s: float = 0.5,
    ) -> StudyResult:
        """Ask, execute through `backend`, tell, until a stopping rule holds (a grid plan:
        until its runs have ended).

        Args:
            backend: a Backend; or a function spec -> final loss (see FunctionBackend);
                None makes the plan's backend (as `orch submit` does).
            make_backend: instead of `backend`, makes one for the study's store; called
                only once there is a run to make.
            address, on_start, on_progress, poll_s: as for `orchestrator.adaptive.submit`.
        """
        made: list[Backend] = []

        def factory() -> Backend:
            if not made:
                prepare_sinks(self.plan.sinks)  # before any worker opens them
                made.append(
                    make_backend(self.store)
                    if make_backend is not None
                    else self._make_backend(backend, address, on_start)
                )
            return made[0]

        views: dict[str, RunView] = {}
        cancelled = False
        try:
            while specs := self.ask():
                execution = prepare(specs, self.store)
                for view in execution.runs:
                    view.stage = self._stage[view.spec.run_id]
                execute(
                    execution,
                    self.store,
                    factory,
                    retries=self.plan.retries,
                    ledger=self.ledger,
                    on_progress=on_progress,
                    stop_early=self._stop_early if self._stopper is not None else None,
                    poll_s=poll_s,
                )
                self.store.compact_runs(
                    v.spec.run_id
                    for v in execution.runs
                    if v.state in (RunState.FINISHED, RunState.STOPPED) and not v.reused
                )
                for view in execution.runs:
                    views[view.spec.run_id] = view
                    if view.state.is_terminal and view.state is not RunState.CANCELLED:
                        self._booked.add(view.spec.run_id)  # the loop booked it
                    if view.state in ENDED and _SUMMARY_KEYS <= view.latest.keys():
                        # A backend that answers with the whole summary row it stored (the
                        # simulated one) spares `_sync` reading thousands of files back.
                        row = {k: view.latest.get(k) for k in schema.SUMMARY.names}
                        self._ended[view.spec.run_id] = row
                    if view.state in (RunState.FAILED, RunState.PREEMPTED):
                        self._ended[view.spec.run_id] = None  # given up on until a resume
                self.store.write_ledger(self.ledger.rows())
                if execution.cancelled:
                    cancelled = True
                    break
        finally:
            for b in made:  # pooled actors hold cluster resources until released
                b.shutdown()
            self.store.write_ledger(self.ledger.rows())
        for rnd in self.record.rounds:  # runs ended in earlier calls, shown as reused
            for run_id in rnd.run_ids:
                if run_id not in views and self._ended.get(run_id) is not None:
                    # Their stored spec and end event are checked as for a run executed
                    # here: a resume repairs a damaged spec.json or a missing end event.
                    views[run_id] = reconcile(self._specs[run_id], self.store)
        self.store.rebuild_summary()
        return StudyResult(
            None if cancelled else self.record.stop,
            self.law,
            list(self.record.rounds),
            Execution(list(views.values()), cancelled=cancelled),
        )

    # --- what the study knows -----------------------------------------------------------

    @property
    def stop_reason(self) -> str | None:
        return self.record.stop

    @property
    def rounds(self) -> list[Round]:
        return list(self.record.rounds)

    def spec(self, run_id: str) -> RunSpec:
        """The spec of a run this study made or may make (KeyError otherwise)."""
        return self._specs[run_id]

    @property
    def history(self) -> list[Estimate]:
        """The target's estimate after each completed round."""
        return list(self.record.history)

    @property
    def law(self) -> Chinchilla | None:
        """The Chinchilla fit to every finished run and every run stopped early (None below
        5 runs or if it fails); its `n_opt`, `loss_opt`, `predict` carry intervals."""
        outcomes = self._outcomes()
        runs = tuple(sorted(outcomes))
        if runs != self._law_runs:
            self._law_runs, self._law, self._law_rows = runs, None, None
            if len(runs) >= Chinchilla.min_points:
                self._law_rows = self._fit_rows(runs, outcomes)
                n, d, loss, fit_args = self._law_rows
                try:
                    self._law = fit_study_law(n, d, loss, **fit_args)
                except FitError as err:
                    log.warning("study %s: no fit: %s", self.plan.name, err)
        return self._law

    @property
    def target_law(self) -> Chinchilla | AutoLaw | None:
        """The law the target is read with, as the plan's `adaptive.target.form` says: the
        Chinchilla fit (`law`, the one the strategies choose from), or `AutoLaw` on the
        same runs ("auto": every form weighed by backtest, which `orch fit` and `orch
        status` show, with the plan's `target.form_error_floor` if it has one; where it
        cannot be fitted, the Chinchilla fit, with a warning)."""
        law = self.law
        ad = self.plan.adaptive
        if law is None or ad is None or ad.target_form == "chinchilla":
            return law
        if self._auto_runs != self._law_runs:
            self._auto_runs, self._auto = self._law_runs, None
            n, d, loss, fit_args = self._law_rows  # the runs `law` was just fitted to
            fit_args = dict(fit_args)
            per_token = fit_args.pop("flops_per_token")
            try:
                # The plan's floor if it sets one, else AutoLaw's own default.
                floor = (
                    {} if ad.form_error_floor is None else {"form_error_floor": ad.form_error_floor}
                )
                auto = AutoLaw(level=ad.level, flops_per_token=per_token, **floor)
                self._auto = auto.fit(n, d, loss, **fit_args)
            except FitError as err:
                log.warning(
                    "study %s: no AutoLaw fit, the target is read with Chinchilla's: %s",
                    self.plan.name,
                    err,
                )
        return self._auto or law

    def _fit_rows(self, runs: tuple[str, ...], outcomes: dict) -> tuple:
        """(N, D, loss, keyword arguments of `fit_study_law`) of `runs`, from `outcomes`."""
        rows = [outcomes[r] for r in runs]
        weights = [w for *_, w in rows]
        return (
            [n for n, *_ in rows],
            [d for _, d, *_ in rows],
            [loss for *_, loss, _ in rows],
            {
                # A cooldown branch shares its parent's weights and seed noise: one
                # lineage (branches never branch again).
                "groups": [self._specs[r].branch_from or r for r in runs],
                "flops_per_token": self.axis.per_token,
                "prior": self._prior,
                "weights": None if all(w == 1 for w in weights) else weights,
            },
        )

    def estimate(self) -> dict[str, Prediction] | None:
        """The target's quantities (L_opt, N_opt at C*; the loss of each target run, keyed
        `TargetRun.key`) with intervals at the plan's level (None: no fit, or a grid plan,
        which has no target); see orchestrator/adaptive/targets.py."""
        law = self.target_law if self.target is not None else None
        if law is None:
            return None
        return target_estimate(law, self.target)

    def noise(self) -> float:
        """Seed-to-seed std of log-loss (orchestrator/adaptive/noise.py): from runs that differ
        only in their seed, else the fit's residuals."""
        groups: dict[str, list[float]] = {}
        for run_id, row in self._ended.items():
            if usable(row):
                key = dataclasses.replace(self._specs[run_id], seed=0).run_id
                groups.setdefault(key, []).append(final_loss(row))
        return estimate_noise(groups.values(), self.law)

    def state(self) -> StrategyView:
        """What the strategy sees now."""
        made = self._asked()
        rows = np.array(list(self._outcomes().values()), dtype=float).reshape(-1, 5)
        grid = self.plan.seed_grid
        pool = tuple(c for c in self._pool + self._branches() if c.run_id not in made)
        rule = self.plan.adaptive.early_stop
        if self._stopper is not None:  # cooldown branches with their predicted losses
            finished = [r for r, row in self._ended.items() if usable(row)]
            pool = self._stopper.with_predictions(pool, finished=finished)
        return StrategyView(
            n_params=rows[:, 0],
            tokens=rows[:, 1],
            flops=rows[:, 2],
            loss=rows[:, 3],
            law=self.law,
            pool=pool,
            target=self.target,
            noise=self.noise(),
            round=len(self.record.rounds),
            seed=self.plan.adaptive.seed,
            size_spread=grid.size_spread,
            sizes_per_level=grid.sizes_per_level,
            known_width=rule.rel_width if rule is not None else 0.0,
        )

    @property
    def pool(self) -> tuple[Candidate, ...]:
        """Every candidate: the planned pool, then the cooldown branches of finished runs."""
        return tuple(self._pool + self._branches())

    def _branches(self) -> list[Candidate]:
        parents = [
            (self._specs[r], float(row["n_params"]))
            for r, row in sorted(self._ended.items())
            if usable(row)
        ]
        branches = branch_candidates(parents)
        for c in branches:
            self._add(c.spec, ADAPTIVE)
        return branches

    # --- internals ----------------------------------------------------------------------

    def _outcomes(self) -> dict[str, tuple[float, float, float, float, float]]:
        return fit_outcomes(self._ended, self.record.predicted, self._specs)

    def _stop_early(self, execution: Execution) -> dict[str, str]:
        """The run loop's hook after each poll: the running runs to stop now, and why.
        Their predictions are kept in study.json before the loop ends them."""
        finished = [r for r, row in self._ended.items() if usable(row)]
        finished += [v.spec.run_id for v in execution.runs if v.state is RunState.FINISHED]
        verdicts = self._stopper.judge(
            [v for v in execution.runs if v.state is RunState.RUNNING],
            finished=finished,
            frontier=self.law if self.plan.adaptive.early_stop.off_frontier else None,
            noise=self.law.noise_ if self.law is not None else None,
        )
        for run_id, verdict in verdicts.items():
            self.record.predicted[run_id] = verdict.record()
        if verdicts:
            self.record.save(self.store)
        return {run_id: v.reason for run_id, v in verdicts.items()}

    def _add(self, spec: RunSpec, stage: str) -> None:
        if spec.schedule.kind == "wsd" and spec.checkpoint_every_steps:
            # Bookkeeping, not identity (the run_id stays): kept checkpoints let later
            # rounds branch cooldowns from this run.
            spec = dataclasses.replace(spec, keep_checkpoints=True)
        self._specs.setdefault(spec.run_id, spec)
        self._stage.setdefault(spec.run_id, stage)

    def _asked(self) -> set[str]:
        return {r for rnd in self.record.rounds for r in rnd.run_ids}

    def _pending(self) -> list[RunSpec]:
        if not self.record.rounds:
            return []
        return [self._specs[r] for r in self.record.rounds[-1].run_ids if r not in self._ended]

    def _open_round(self, run_ids: list[str], strategy: str) -> None:
        self._record_estimate()
        # A restart rebuilds a branch's spec from here (`prepare` finds them stored).
        self.store.write_specs({r: self._specs[r].to_json() for r in run_ids})
        rnd = Round(len(self.record.rounds), tuple(run_ids), strategy)
        self.record.rounds.append(rnd)
        self.record.save(self.store)  # before any run starts: a restart repeats this round
        log.info(
            "study %s round %d (%s): %d runs", self.plan.name, rnd.index, strategy, len(run_ids)
        )

    def _record_estimate(self) -> None:
        """The target after the round that just ended (once per round, before the next)."""
        done = len(self.record.rounds) - 1
        if self.target is None or done < 0 or any(h.round == done for h in self.record.history):
            return
        est = self.estimate()
        values = {q: [float(p.mean), float(p.lo), float(p.hi)] for q, p in (est or {}).items()}
        self.record.history.append(
            Estimate(done, len(self._law_runs), self.ledger.spent_flops, values, self.noise())
        )

    def _stop_check(self) -> str | None:
        self._record_estimate()
        self.record.save(self.store)
        ad = self.plan.adaptive
        if ad is None:
            return grid_reason(len(self.record.rounds[-1].run_ids))
        reason = width_reason(self.estimate(), rel_width=ad.rel_width, target=self.target)
        return reason or rounds_reason(len(self.record.rounds) - 1, max_rounds=ad.max_rounds)

    def _sync(self, *, from_events: bool = False) -> None:
        """Read the summaries of asked runs not yet known to have ended, and book them."""
        wanted = self._asked() | (set(self._seed_ids) if from_events else set())
        unknown = [r for r in wanted if self._ended.get(r) is None]
        rows = self.store.run_summaries_of(unknown)
        for run_id in unknown:
            row = rows.get(run_id)
            if row is not None and row["status"] in ENDED:
                self._ended[run_id] = row
                self._book(run_id, row)
            elif from_events and run_id in self._asked():
                last = self.store.last_event(run_id)
                if last is not None and last["state"] in _FAILED_EVENTS:
                    self._book(run_id)  # spent, as far as the ledger can tell

    def _book(self, run_id: str, row: dict | None = None) -> None:
        if run_id in self._booked:
            return
        self._booked.add(run_id)
        spec = self._specs[run_id]
        stopped = row is not None and row["status"] == RunState.STOPPED
        # A run stopped early spent the share of steps its summary says it trained.
        flops = spent_flops(spec, row["steps"]) if stopped else run_flops(spec)
        stage = self._stage[run_id]
        # Spent already, whatever the budget says now: booked without a commitment check.
        self.ledger.stages.setdefault(stage, StageBudget()).spent_flops += flops

    def _make_backend(self, backend, address, on_start) -> Backend:
        if backend is None:
            flops = max(run_flops(s) for s in self._specs.values())
            return plan_backend(
                self.plan, self.store, address=address, on_start=on_start, slowest_flops=flops
            )
        if isinstance(backend, Backend):
            return backend
        if callable(backend):
            return FunctionBackend(self.store, backend)
        raise StudyError(f"backend: expected a Backend or a function spec -> loss, got {backend!r}")
