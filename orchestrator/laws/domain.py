"""The under-trained edge of a sweep: runs the laws' forms do not describe.

Runs trained on very few tokens per parameter sit in a regime none of the forms models:
warmup and an unfinished learning-rate schedule take much of their training, and their
loss lies well above every form's surface. Measured with Chinchilla fitted to all runs
of each sweep (bench/real_sweeps.py's data): on Gadre et al.'s three sweeps the runs at
5 tokens per parameter miss by 7-8% (RMS of log L) where every other ratio misses by
0.5-1.7%; on Epoch's extraction of Hoffmann et al.'s runs, those below 2 tokens per
parameter miss by 2.1% where the others miss by 0.4-0.8%. Kept in a fit they bend it
and inflate its residual scale, which is the seed-noise term of every prediction
interval: on Gadre et al.'s sweeps four-fold, to 90% intervals of +-11% that covered
every held-out run.

Where the edge lies depends on the sweep's training recipe (Gadre et al.'s runs at 5
tokens per parameter fail, Hoffmann et al.'s at 2-5 do not), so it is found from the
residuals, not fixed: `undertrained_cutoff` returns the tokens per parameter below which
the runs' typical residual is at least `RATIO` times that of the runs above it.
"""

from __future__ import annotations

import math

import numpy as np

from orchestrator.laws.base import FitError

RATIO = 3.0  # how much worse than the rest the edge's runs must fit
MIN_RUNS = 3  # an edge of fewer runs is noise, not a regime
MAX_SHARE = 0.25  # the edge is a sweep's margin: at most this share of its runs


def undertrained_cutoff(
    n_params: np.ndarray,
    tokens: np.ndarray,
    resid: np.ndarray,
    weights: np.ndarray,
    n_fitted: int,
) -> float | None:
    """The tokens per parameter below which runs misfit the law, or None.

    `resid` is each run's log residual under a fit of `n_fitted` parameters to all of
    them. Every cut between distinct ratios that leaves `MIN_RUNS` to `MAX_SHARE` of the
    runs below is tried; a cut qualifies when the robust scale of the residuals below it
    (1.4826 x median |r|: most of the runs below must misfit, not one or two outliers) is
    at least `RATIO` times the robust scale of the residuals above it (the same, once
    the `n_fitted` smallest are dropped: a Huber fit with a small delta sets about that
    many residuals to ~0, as `covariance.residual_scale` says, and a form with many
    parameters would otherwise make seed noise look like an edge); of those, the one that
    separates them most (the largest ratio) is returned, as the ratio at which the runs
    above it start, unless the runs at that ratio misfit as much (the misfit goes on past
    the cut, which a margin's does not).
    """
    keep = weights > 0
    ratio = (tokens / n_params)[keep]
    r = np.abs(resid[keep])
    order = np.argsort(ratio, kind="stable")
    ratio, r = ratio[order], r[order]
    cuts = np.flatnonzero(np.diff(ratio) > 0) + 1  # between distinct ratios
    best, cutoff = RATIO, None
    for below, band_end in zip(cuts, [*cuts[1:], ratio.size], strict=True):
        if below < MIN_RUNS or below > MAX_SHARE * ratio.size:
            continue
        above = np.sort(r[below:])[n_fitted:]
        if above.size < MIN_RUNS:
            continue
        scale_above = _scale(above)
        if not scale_above > 0 or _scale(r[:below]) < best * scale_above:
            continue
        # The runs just above the cut must fit like the rest: a misfit that goes on past
        # it is a form that bends the wrong way, not an edge.
        if _scale(r[below:band_end]) >= RATIO * scale_above:
            continue
        best, cutoff = _scale(r[:below]) / scale_above, float(ratio[below])
    return cutoff


def _scale(abs_resid: np.ndarray) -> float:
    """Robust scale of residuals from their absolute values (1.4826 x median)."""
    return 1.4826 * float(np.median(abs_resid))


def check_min_tokens_per_param(setting: float | str | None) -> float | str | None:
    """The option as a float, "auto" or None.

    Raises:
        FitError: anything else (a number must be finite and > 0).
    """
    if setting is None or setting == "auto":
        return setting
    if (
        isinstance(setting, bool)
        or not isinstance(setting, (int, float))
        or not (math.isfinite(setting) and setting > 0)
    ):
        raise FitError(
            f"min_tokens_per_param: expected a number > 0, 'auto' or None, got {setting!r}"
        )
    return float(setting)
