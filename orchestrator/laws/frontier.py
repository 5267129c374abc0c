"""The compute-optimal frontier: where on each iso-FLOP line a law's loss is lowest.

`frontier_logs` gives log N_opt, log D_opt and log L there for many parameter vectors at
once (a point fit's delta-method stack, a bootstrap ensemble, the `active` strategy's
finite differences). With C = 6 N D a form's closed form is used where it has one
(`optimum_6nd`); otherwise, and with another FLOPs-per-token function, the optimum is
searched numerically along the line.

`FrontierAccessors` gives `n_opt`, `d_opt` and `loss_opt` to any class with a
`frontier(flops, *, level)` method; `PowerLawAccessors` gives `n_opt`, `d_opt` and the
exponents to Approaches 1 and 2, whose frontier is a pair of fitted power laws.
Symbols are defined in `base`.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from orchestrator.laws.base import FlopsPerToken, Frontier, Prediction, flops_6nd

SEARCH_DECADES = 4.0  # numeric N_opt search: this many decades either side of 6ND's answer
_SEARCH_POINTS = 161  # grid points over the search span before the golden section
_GOLDEN_STEPS = 40  # golden-section steps: the bracket shrinks to 1e-8 of a grid step


class FittedForm(Protocol):
    """What the frontier search needs of a fitted Approach 3 law (`law.HuberLaw`)."""

    form_: Any  # the fitted form (`chinchilla.ChinchillaForm`, `kaplan.KaplanForm`)
    flops_per_token: FlopsPerToken | None  # None means C = 6 N D


def frontier_logs(law: FittedForm, theta: np.ndarray, log_flops: np.ndarray):
    """(log N_opt, log D_opt, log L_opt), each (K, Q), for rows of theta and log C."""
    form = law.form_
    fpt = law.flops_per_token
    with np.errstate(all="ignore"):
        if fpt is None and hasattr(form, "optimum_6nd"):
            log_n, log_d = form.optimum_6nd(theta, log_flops)
        else:
            fpt = fpt or flops_6nd
            log_n = _numeric_log_n_opt(form, fpt, theta, log_flops)
            log_d = log_flops[None, :] - np.log(fpt(np.exp(log_n)))
        x_n, x_d = form.centred(log_n, log_d)
        log_l, _ = form.log_loss_at(theta, x_n, x_d, jac=False)
    # No optimum found (`_numeric_log_n_opt`), no loss there either: the loss at the edge
    # of a search is not the least loss of the line.
    return log_n, log_d, np.where(np.isfinite(log_n), log_l, np.nan)


def _numeric_log_n_opt(form, fpt, theta: np.ndarray, log_flops: np.ndarray) -> np.ndarray:
    """argmin over log N of L(N, C / fpt(N)): the lowest interior local minimum of a log
    grid, refined by golden section; +-inf where the line has none (the loss falls all the
    way to one end of the span, or of the part of it where the form has a value).

    The grid is centred on the form's 6ND closed form where it has one, else on the N
    that keeps the observations' mean tokens per parameter at C = 6 N D."""
    if hasattr(form, "optimum_6nd"):
        centre, _ = form.optimum_6nd(theta, log_flops)
    else:
        ratio = form.log_d0 - form.log_n0
        centre = np.broadcast_to(
            (log_flops[None, :] - np.log(6.0) - ratio) / 2, (len(theta), log_flops.size)
        )
    centre = np.where(np.isfinite(centre), centre, form.log_n0)
    span = SEARCH_DECADES * math.log(10)
    offsets = np.linspace(-span, span, _SEARCH_POINTS)

    def log_loss(log_n: np.ndarray) -> np.ndarray:
        log_d = log_flops[None, :, None] - np.log(fpt(np.exp(log_n)))
        out, _ = form.log_loss_at(theta, *form.centred(log_n, log_d), jac=False)
        return np.where(np.isfinite(out), out, np.inf)

    grid = centre[:, :, None] + offsets
    on_grid = log_loss(grid)
    # An optimum is a point of the line whose neighbours both have a higher loss. A least
    # loss at an end of the span, or next to where the form has no value, is an edge,
    # not an optimum: the fitted loss still falls there. Read as a value, such an edge
    # came with a zero delta-method interval (on simulated Farseer truths AutoLaw's N_opt
    # came out at 1e14 parameters, 10^5 times the truth). Where the line has an interior
    # minimum and also falls to an edge, the interior one is taken: Farseer fits of a
    # 5 x 9 IsoFLOP grid of its own form dip there to the truth's optimum (1.90 against
    # 1.89 nats at 1e22 FLOPs) and then, a decade of N past the largest run and at a few
    # tokens per parameter, lose their data term and fall to 1.6 until the form has no
    # value; the global least was that collapse, 1,000 times the optimum's N.
    inner = on_grid[..., 1:-1]
    is_min = np.isfinite(inner) & (inner < on_grid[..., :-2]) & (inner <= on_grid[..., 2:])
    is_min &= np.isfinite(on_grid[..., :-2]) & np.isfinite(on_grid[..., 2:])
    best = np.argmin(np.where(is_min, inner, np.inf), axis=-1) + 1
    found = np.any(is_min, axis=-1)
    # Without one: the side the loss falls toward (where its least lies), NaN with no loss.
    least = np.argmin(on_grid, axis=-1)
    lower = least <= np.argmax(np.isfinite(on_grid), axis=-1)  # the first finite point
    edge = np.where(lower, -np.inf, np.inf)
    edge = np.where(np.isfinite(np.min(on_grid, axis=-1)), edge, np.nan)
    step = offsets[1] - offsets[0]
    lo = np.take_along_axis(grid, best[..., None], -1)[..., 0] - step
    hi = lo + 2 * step
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(_GOLDEN_STEPS):
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        f1, f2 = log_loss(x1[..., None])[..., 0], log_loss(x2[..., None])[..., 0]
        lo, hi = np.where(f1 <= f2, lo, x1), np.where(f1 <= f2, x2, hi)
    return np.where(found, (lo + hi) / 2, edge)


class FrontierAccessors:
    """`n_opt`, `d_opt` and `loss_opt` for a class that defines `frontier(flops, *, level)`.

    Each picks one field of the `Frontier`, so its interval is the one `frontier` gives
    (delta method for a point fit, percentiles for a bootstrap ensemble).
    """

    def frontier(self, flops, *, level: float = 0.95) -> Frontier:
        raise NotImplementedError

    def n_opt(self, flops, *, level: float = 0.95) -> Prediction:
        """Compute-optimal N (parameters) at C FLOPs."""
        return self.frontier(flops, level=level).n_opt

    def d_opt(self, flops, *, level: float = 0.95) -> Prediction:
        """Compute-optimal D (tokens) at C FLOPs."""
        return self.frontier(flops, level=level).d_opt

    def loss_opt(self, flops, *, level: float = 0.95) -> Prediction:
        """Loss (nats per token) at the compute-optimal allocation of C FLOPs."""
        return self.frontier(flops, level=level).loss_opt


class PowerLawAccessors:
    """Exponents, `n_opt` and `d_opt` for a fit with power laws `n_law` and `d_law` in C
    (`isoflop.PowerLaw`, with a `predict(flops, *, level)` method)."""

    n_law: Any  # N_opt = exp(intercept) C^a
    d_law: Any  # D_opt = exp(intercept) C^b

    @property
    def n_exponent(self) -> float:
        """a in N_opt proportional to C^a."""
        return self.n_law.exponent

    @property
    def d_exponent(self) -> float:
        """b in D_opt proportional to C^b."""
        return self.d_law.exponent

    def n_opt(self, flops, *, level: float = 0.95) -> Prediction:
        """Compute-optimal N at C FLOPs."""
        return self.n_law.predict(flops, level=level)

    def d_opt(self, flops, *, level: float = 0.95) -> Prediction:
        """Compute-optimal D (tokens) at C FLOPs."""
        return self.d_law.predict(flops, level=level)
