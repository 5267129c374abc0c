"""Backtests: fit on the smaller compute budgets, score on the largest held out.

A law that fits the runs you have is not necessarily the one that extrapolates: the
question a scaling law answers is about larger C than any run. `backtest` takes any law
class (or factory) and a list of train/test splits and scores each split;
`split_by_compute` holds out the largest compute levels; `compare_forms` runs both for
several forms on the same split so their extrapolation errors can be read side by side.
Symbols are defined in `base`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.laws.base import FitError, Law, check_observations, flops_6nd
from orchestrator.laws.chinchilla import Chinchilla
from orchestrator.laws.farseer import Farseer
from orchestrator.laws.kaplan import Kaplan
from orchestrator.laws.overtraining import Overtraining
from orchestrator.laws.splits import Split, split_by_compute

log = logging.getLogger(__name__)

LAWS: dict[str, type] = {
    "chinchilla": Chinchilla,
    "kaplan": Kaplan,
    "farseer": Farseer,
    "overtraining": Overtraining,
}
"""Law classes by form name, as accepted by `compare_forms` and `fit_path`."""


@dataclass(frozen=True)
class SplitScore:
    """How one fitted law predicted one split's held-out runs."""

    form: str
    train_max_flops: float  # largest C (FLOPs) among the training runs
    test_min_flops: float  # smallest C among the held-out runs
    n_train: int
    n_test: int
    rmse_log_loss: float  # root mean square of log(L_pred / L) on held-out runs
    mean_abs_pct_error: float  # mean |L_pred / L - 1| in percent
    max_abs_pct_error: float  # worst held-out run, percent
    reliable: bool  # the training fit reported no identifiability problem


@dataclass(frozen=True)
class FormComparison:
    """Each form's held-out score on the same split, best (lowest RMSE) first."""

    scores: tuple[SplitScore, ...]

    @property
    def best(self) -> str:
        """The form that extrapolated best."""
        return self.scores[0].form


def backtest(
    make_law: Callable[[], Law], n_params, tokens, loss, *, splits: Sequence[Split]
) -> list[SplitScore]:
    """Fits a fresh law on each split's training runs and scores its held-out runs.

    Args:
        make_law: a law class or factory, e.g. `Chinchilla` or `lambda: Kaplan(n_refine=8)`.
        n_params, tokens, loss: all observations.
        splits: train/test masks, e.g. from `split_by_compute`.

    Returns:
        One `SplitScore` per split.
    """
    n, d, y, _ = check_observations(n_params, tokens, loss, min_points=1)
    scores = []
    for split in splits:
        law = make_law()
        law.fit(n[split.train], d[split.train], y[split.train])
        pred = np.asarray(law.predict(n[split.test], d[split.test]).mean)
        log_ratio = np.log(pred / y[split.test])
        pct = 100 * np.abs(pred / y[split.test] - 1)
        c = flops_6nd(n) * d
        scores.append(
            SplitScore(
                form=getattr(law, "form_name", type(law).__name__),
                train_max_flops=float(c[split.train].max()),
                test_min_flops=float(c[split.test].min()),
                n_train=int(split.train.sum()),
                n_test=int(split.test.sum()),
                rmse_log_loss=float(np.sqrt(np.mean(log_ratio**2))),
                mean_abs_pct_error=float(pct.mean()),
                max_abs_pct_error=float(pct.max()),
                reliable=bool(getattr(law, "reliable_", True)),
            )
        )
        log.info("backtest %s: held-out RMSE(log L) %.4g", law.form_name, scores[-1].rmse_log_loss)
    return scores


def compare_forms(
    n_params,
    tokens,
    loss,
    *,
    forms: Sequence[str] = ("chinchilla", "kaplan"),
    holdout_fraction: float = 0.2,
) -> FormComparison:
    """Fits each form on the smaller compute levels and scores it on the largest held out.

    Raises:
        FitError: an unknown form, or a split that leaves too few runs to fit.
    """
    unknown = [f for f in forms if f not in LAWS]
    if unknown:
        raise FitError(f"unknown form(s) {unknown}; choose from {sorted(LAWS)}")
    n, d, y, _ = check_observations(n_params, tokens, loss, min_points=1)
    splits = split_by_compute(flops_6nd(n) * d, holdout_fraction=holdout_fraction)
    scores = [s for form in forms for s in backtest(LAWS[form], n, d, y, splits=splits)]
    return FormComparison(scores=tuple(sorted(scores, key=lambda s: s.rmse_log_loss)))
