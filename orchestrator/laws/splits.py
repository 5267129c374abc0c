"""Train/test splits by compute, for backtests: fit on smaller C, score on larger.

`split_by_compute` holds out the largest compute levels once (`compare.compare_forms`);
`rolling_origin_splits` cuts at several compute quantiles, so that a form's error can be
read as a function of how far beyond its data it predicts (`prediction` calibrates the
prediction intervals on them, `compare` and bench/real_sweeps.py score forms on them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.laws.base import FitError, quiet_fits
from orchestrator.laws.isoflop import compute_levels


@dataclass(frozen=True)
class Split:
    """Boolean masks over the observations: fit on `train`, score on `test`."""

    train: np.ndarray
    test: np.ndarray


def split_by_compute(flops, *, holdout_fraction: float = 0.2, level_tol_dex: float = 0.05):
    """One split holding out the largest compute levels.

    Runs are grouped into levels (C within `level_tol_dex` of a neighbour); the largest
    levels are held out until they hold at least `holdout_fraction` of the runs. With
    IsoFLOP data of 5 equal levels that is the top level; with scattered C it is the
    top fifth of runs by compute.

    Raises:
        FitError: the fraction is not in (0, 1) or there is only one level.
    """
    c = np.asarray(flops, dtype=float)
    if not 0 < holdout_fraction < 1:
        raise FitError(f"holdout_fraction: expected a number in (0, 1), got {holdout_fraction!r}")
    levels = compute_levels(c, tol_dex=level_tol_dex)
    if len(levels) < 2:
        raise FitError("all runs share one compute level: nothing larger to hold out")
    test = np.zeros(c.size, dtype=bool)
    for members in reversed(levels[1:]):
        test[members] = True
        if test.sum() >= holdout_fraction * c.size:
            break
    return [Split(train=~test, test=test)]


def rolling_origin_splits(
    flops, *, train_fractions: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9)
) -> list[Split]:
    """Rolling-origin splits: fit on every run up to a compute cut-off, score those above.

    One split per fraction f: the cut-off is the C below which a fraction f of the runs
    lie, so each origin predicts a larger share of compute it never saw. Works on grids
    of levels and on continuous C alike (no level grouping). Origins that would leave no
    run above the cut-off, or repeat an earlier cut-off, are dropped.

    Raises:
        FitError: no fraction gives a split with runs on both sides.
    """
    c = np.asarray(flops, dtype=float)
    order = np.sort(c)
    splits, cuts = [], set()
    for f in train_fractions:
        if not 0 < f < 1:
            raise FitError(f"train_fractions: expected numbers in (0, 1), got {f!r}")
        cut = order[min(len(order) - 1, max(0, int(np.ceil(f * len(order))) - 1))]
        train = c <= cut
        if cut in cuts or train.all():
            continue
        cuts.add(cut)
        splits.append(Split(train=train, test=~train))
    if not splits:
        raise FitError("all runs share one compute: nothing larger to hold out")
    return splits


# Observations above which backtests run on a subset spread evenly over compute. A
# backtest measures the form's error beyond each cut-off, which at thousands of runs is
# the form's, not the parameters' noise; fitted on every run, the 15 backtest fits of a
# 10,000-run study took most of its fit time (bench/simulated_study.py).
BACKTEST_POINTS = 1024


def spread_subset(flops, size: int) -> np.ndarray:
    """Indices of at most `size` observations spread evenly over the compute order (all
    of them, in that order, when there are no more than `size`)."""
    order = np.argsort(np.asarray(flops, dtype=float), kind="stable")
    if order.size <= size:
        return order
    return order[np.unique(np.linspace(0, order.size - 1, size).round().astype(int))]


def fitted_origins(
    make_law: Callable[[], object],
    n_params,
    tokens,
    loss,
    splits: Sequence[Split],
    *,
    min_points: int,
    groups=None,
    prior=None,
) -> Iterator[tuple[Split, object]]:
    """Each split with a fresh law fitted on its training runs, quietly (these are fits on
    parts of the data that nobody asked to see); a split with fewer than `min_points`
    training runs, or whose fit fails, is skipped. `groups` (a label per run) and
    `prior` are passed to each fit (`groups` restricted to the split's training runs)."""
    labels = None if groups is None else np.asarray(list(groups), dtype=object)
    for split in splits:
        if split.train.sum() < min_points:
            continue
        extra = {} if prior is None else {"prior": prior}
        if labels is not None:
            extra["groups"] = labels[split.train].tolist()
        try:
            with quiet_fits():
                law = make_law().fit(
                    n_params[split.train], tokens[split.train], loss[split.train], **extra
                )
        except FitError:
            continue
        yield split, law
