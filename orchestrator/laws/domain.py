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
the runs lie above the surface by at least `RATIO` times the typical residual of the
runs above it (runs the fit passes through are not judged).

An edge found so is confirmed against the fits without its runs (`edge_holds`): an
under-trained run loses more than the law says, never less, so an "edge" with runs far
below that surface is a form that misses both ways at small scale, and its runs stay.
Measured so (Chinchilla refitted without the edge, bench/real_sweeps.py's origins): the
edges of Epoch's and Gadre et al.'s sweeps lie above it (the lowest run -0.7%, against a
scale of about 1% for the rest); on Porian et al.'s IsoFLOP sweeps, where each run is
decayed to its budget, the largest model of the smallest budgets lies 9-15% below it and
the same "edge" at 1e18 FLOPs and beyond fits like the rest (+0.4 to +1.9%). Left out,
those runs cost the larger runs' predictions accuracy (module docstring of
bench/real_sweeps.py).
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
    on_fit: float,
) -> float | None:
    """The tokens per parameter below which runs misfit the law, or None.

    `resid` is each run's log residual under a fit to all of them; runs with |resid| at
    most `on_fit` are ones the fit passes through (a Huber fit with a small delta, like
    least absolute deviations, sets about as many residuals as it has parameters to
    ~0), which say nothing about a misfit and are not judged. Every cut between
    distinct ratios that leaves `MIN_RUNS` to `MAX_SHARE` of the runs below is tried; a
    cut qualifies when, of the judged runs, those below it lie above the surface (the
    median and two thirds of them: an under-trained run loses more than the law says,
    never less; a wrong form misses both ways) and their robust scale (1.4826 x median
    |r|: most of them must misfit, not one outlier) is at least `RATIO` times that of
    the runs above it. Of those cuts, the one that separates them most (the largest
    ratio) is returned, as the ratio at which the runs above it start, unless the runs
    at that ratio misfit as much (the misfit goes on past the cut, which a margin's does
    not).

    Why judged runs, not all: with few runs the fit passes through some of the edge's
    own (Gadre et al.'s sweeps at half their runs: 2 of the 4 runs at 5 tokens per
    parameter sit on the fit, the others 3-14% above it), and counting them hid it.
    """
    keep = weights > 0
    ratio = (tokens / n_params)[keep]
    signed = resid[keep]
    order = np.argsort(ratio, kind="stable")
    ratio, signed = ratio[order], signed[order]
    r = np.abs(signed)
    judged = r > on_fit
    cuts = np.flatnonzero(np.diff(ratio) > 0) + 1  # between distinct ratios
    best, cutoff = RATIO, None
    for below, band_end in zip(cuts, [*cuts[1:], ratio.size], strict=True):
        if below < MIN_RUNS or below > MAX_SHARE * ratio.size:
            continue
        edge = signed[:below][judged[:below]]
        above = r[below:][judged[below:]]
        if edge.size < 2 or above.size < MIN_RUNS:
            continue
        if not (np.median(edge) > 0 and np.mean(edge > 0) >= 2 / 3):
            continue
        scale_above = _scale(above)
        if not scale_above > 0 or _scale(np.abs(edge)) < best * scale_above:
            continue
        # The runs just above the cut must fit like the rest: a misfit that goes on past
        # it is a form that bends the wrong way, not an edge.
        band = r[below:band_end][judged[below:band_end]]
        if band.size and _scale(band) >= RATIO * scale_above:
            continue
        best, cutoff = _scale(np.abs(edge)) / scale_above, float(ratio[below])
    return cutoff


def edge_holds(resid: np.ndarray, below: np.ndarray, weights: np.ndarray, on_fit: float) -> bool:
    """Whether the runs `below` an edge are under-trained, judged by `resid`, each run's
    log residual under a fit without them: none lies below that surface by `RATIO` times
    the robust scale of the other runs' residuals (those the fit passes through, |resid|
    at most `on_fit`, not counted in it)."""
    keep = weights > 0
    edge = resid[below & keep]
    rest = np.abs(resid[~below & keep])
    judged = rest[rest > on_fit]
    scale = _scale(judged) if judged.size else 0.0
    return bool(edge.size) and scale > 0 and float(edge.min()) > -RATIO * scale


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
