"""The annealing law's functional form, its starts, and its end-of-run areas for a schedule.

    L(N, s) = E + A_N N^-a + A S1(s)^-alpha - C N^gamma S2(s)

(see `curves` for the law and its symbols). Internally the form is centred as Chinchilla's
is (`chinchilla`): theta = (e, b, a, g, alpha, c, gamma) with

    E = e^e,  A_N N^-a = e^(b - a x_n),  A S1^-alpha = e^(g - alpha x_s),
    C N^gamma S2 = e^(c + gamma x_n) S2 / s2_scale

x_n = log N - n0 and x_s = log S1 - s0 centred on the fitted points' weighted means, and
s2_scale their mean S2, so that b, g and c are the log sizes of the three terms at a
typical point. The loss is fitted on the log scale (huber.Form); a theta that drives the
loss to 0 or below has a NaN log loss there, which the fitters treat as an infinite
objective.

Each run's seed noise moves its whole curve (see workers/simulated.py), so in the fit a
run's log loss also has its own offset u_r, constrained to sum to zero over the runs of
each model size: the runs of a size share that size's level (E + A_N N^-a, fitted), and
the shapes of their curves, not their levels, decide A, alpha and C. Without the
offsets, a cosine run that happens to sit 1% below its constant-lr twin reads as
annealing. theta then ends with the offsets' coordinates in an orthonormal basis of
the zero-sum contrasts of each size (none for a size with one run); predictions use the
first `N_LAW` (a new run's offset is 0 on average).

Starts come by variable projection (Golub and Pereyra 1973, as `projection` does for
Chinchilla): with a, alpha and gamma fixed the law is linear in (E, A_N, A, C), all >= 0,
so each cell of an (a, alpha) grid (gamma 0) is solved by non-negative least squares on
relative errors, and the best cells start the Huber refinement.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import CubicSpline

from orchestrator.laws.base import broadcast_column
from orchestrator.laws.lr_areas import final_areas
from orchestrator.laws.projection import _nnls_by_support
from workers.spec import LrSchedule

log = logging.getLogger(__name__)

N_LAW = 7  # the law's own parameters in theta; a run's offsets follow them
# Bounds of theta: E from e^-10 to e^3 nats; the other terms between e^-40 (nothing) and
# e^10 nats at a typical point; exponents a and alpha in [0, 3] (a negative one would make
# the loss grow with size or with learning-rate area); gamma, the annealing gain's power
# of N, in [-1, 2] (real CPU runs of 6K to 39K parameters: C grew about as N^0.5 when
# each size was fitted alone, bench/curves_real.py).
_LOWER = np.array([-10.0, -40.0, 0.0, -40.0, 0.0, -40.0, -1.0])
_UPPER = np.array([3.0, 10.0, 3.0, 10.0, 3.0, 5.0, 2.0])
_SIZE_EXPONENTS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5)
_AREA_EXPONENTS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0)
_TABLE_PER_DECADE = 24  # end-of-run areas tabulated at this many run lengths per decade
_MAX_OFFSET = 0.5  # a run's log offset from its size's level: at most a factor e^0.5


@dataclass(frozen=True, eq=False)
class CurveForm:
    """The law at fixed points (x_n, x_s, s2: (1, M) each), for `huber.fit_multistart`.

    With one model size the size term is fixed at nothing (b at its lower bound, a = 0)
    and C does not vary with N (gamma = 0): E is then that size's L0.
    """

    log_n0: float
    log_s0: float
    s2_scale: float
    x_n: np.ndarray
    x_s: np.ndarray
    s2: np.ndarray
    sizes: int  # distinct N among the points
    run_index: np.ndarray  # (M,) the run of each point
    contrasts: np.ndarray  # (R, V): u = contrasts @ theta[N_LAW:], zero-sum within each size
    free_gamma: bool = True  # False: C the same at every N (gamma pinned at 0)
    name = "annealing"
    theta_names = ("e", "b", "a", "g", "alpha", "c", "gamma")
    public_names = ("E", "A_N", "a", "A", "alpha", "C", "gamma")
    bound_labels = ("E", "A_N (the size term)", "a", "A (the area term)", "alpha", "C", "gamma")
    lower: np.ndarray = field(init=False)
    upper: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        v = self.contrasts.shape[1]
        lower = np.concatenate([_LOWER, np.full(v, -_MAX_OFFSET)])
        upper = np.concatenate([_UPPER, np.full(v, _MAX_OFFSET)])
        if self.sizes < 2:
            lower[1] = upper[1] = _LOWER[1]
            lower[2] = upper[2] = 0.0
        if self.sizes < 2 or not self.free_gamma:
            lower[6] = upper[6] = 0.0
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @classmethod
    def at_points(cls, n_params, s1, s2, weights, run_index, *, free_gamma=True) -> CurveForm:
        """The form centred on points of N, S1, S2 (M,) with these weights, each point
        belonging to run `run_index` (0 .. R - 1); `free_gamma` False pins gamma at 0."""
        log_n, log_s = np.log(n_params), np.log(s1)
        n0 = float(np.average(log_n, weights=weights))
        s0 = float(np.average(log_s, weights=weights))
        scale = float(np.average(s2, weights=weights))
        return cls(
            log_n0=n0,
            log_s0=s0,
            s2_scale=scale if scale > 0 else 1.0,
            x_n=(log_n - n0)[None],
            x_s=(log_s - s0)[None],
            s2=np.asarray(s2, dtype=float)[None],
            sizes=int(np.unique(n_params).size),
            run_index=run_index,
            contrasts=_contrasts(n_params, run_index),
            free_gamma=free_gamma,
        )

    def log_loss(self, theta: np.ndarray, *, jac: bool):
        """log L at the form's points with each run's offset, (K, M), and its Jacobian
        (K, M, P) if `jac`."""
        out, grad = self.log_loss_at(theta[:, :N_LAW], self.x_n, self.x_s, self.s2, jac=jac)
        if not self.contrasts.shape[1]:
            return out, grad
        basis = self.contrasts[self.run_index]  # (M, V)
        out = out + theta[:, N_LAW:] @ basis.T
        if jac:
            grad = np.concatenate([grad, np.broadcast_to(basis, (*out.shape, basis.shape[1]))], -1)
        return out, grad

    def offsets(self, theta: np.ndarray) -> np.ndarray:
        """Each run's log offset u_r for a theta (P,): (R,)."""
        return self.contrasts @ theta[N_LAW:]

    def resampled(self, counts: np.ndarray) -> CurveForm:
        """This form for a bootstrap resample drawing run r `counts[r]` times: the offsets
        sum to zero, weighted by the draws, over the drawn runs of each size (as if each
        draw were its own run: two draws of one run get one offset)."""
        n_params = np.exp(self.x_n[0] + self.log_n0)
        return dataclasses.replace(self, contrasts=_contrasts(n_params, self.run_index, counts))

    def log_loss_at(self, theta, x_n, x_s, s2, *, jac: bool):
        """log L at centred points (1 or K, *S) each: (K, *S) [, (K, *S, N_LAW)]."""
        cols = (broadcast_column(theta, i, np.ndim(x_n)) for i in range(N_LAW))
        e, b, a, g, alpha, c, gamma = cols
        with np.errstate(over="ignore", invalid="ignore"):
            t_e = np.exp(e)
            t_n = np.exp(b - a * x_n)
            t_s = np.exp(g - alpha * x_s)
            t_c = np.exp(c + gamma * x_n) * s2 / self.s2_scale
            total = t_e + t_n + t_s - t_c
            ok = total > 0
            out = np.where(ok, np.log(np.where(ok, total, 1.0)), np.nan)
        if not jac:
            return out, None
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(ok, 1.0 / total, np.nan)
        grad = np.empty((*out.shape, N_LAW))
        grad[..., 0], grad[..., 1], grad[..., 3] = t_e * inv, t_n * inv, t_s * inv
        grad[..., 2], grad[..., 4] = -x_n * t_n * inv, -x_s * t_s * inv
        grad[..., 5], grad[..., 6] = -t_c * inv, -x_n * t_c * inv
        return out, grad

    def centred(self, n_params, s1) -> tuple[np.ndarray, np.ndarray]:
        return np.log(n_params) - self.log_n0, np.log(s1) - self.log_s0

    def public(self, theta: np.ndarray) -> np.ndarray:
        """(E, A_N, a, A, alpha, C, gamma) for each row of theta, (K, N_LAW)."""
        e, b, a, g, alpha, c, gamma = np.atleast_2d(theta)[:, :N_LAW].T
        with np.errstate(over="ignore"):
            return np.stack(
                [
                    np.exp(e),
                    np.exp(b + a * self.log_n0) if self.sizes >= 2 else np.zeros_like(b),
                    a,
                    np.exp(g + alpha * self.log_s0),
                    alpha,
                    np.exp(c - gamma * self.log_n0) / self.s2_scale,
                    gamma,
                ],
                axis=-1,
            )

    def projection_starts(self, loss: np.ndarray, weights: np.ndarray, n_best: int):
        """The `n_best` grid cells' theta (n_best, N_LAW + offsets), best relative least
        squares first (gamma 0, offsets 0)."""
        sizes = _SIZE_EXPONENTS if self.sizes >= 2 else (0.0,)
        grid = np.array(list(itertools.product(sizes, _AREA_EXPONENTS)))  # (G, 2)
        x_n, x_s, s2 = self.x_n[0], self.x_s[0], self.s2[0] / self.s2_scale
        cols = [
            np.ones((len(grid), loss.size)),
            np.exp(-grid[:, :1] * x_n),
            np.exp(-grid[:, 1:] * x_s),
            np.broadcast_to(-s2, (len(grid), loss.size)),
        ]
        if self.sizes < 2:
            del cols[1]
        z = np.stack(cols, axis=-1) / loss[None, :, None]  # (G, M, J): relative error design
        gram = np.einsum("gmj,gmk,m->gjk", z, z, weights)
        rhs = np.einsum("gmj,m->gj", z, weights)
        coef, sse = _nnls_by_support(gram, rhs, np.array(weights.sum()))
        if self.sizes < 2:
            coef = np.insert(coef, 1, 0.0, axis=1)
        top = np.argsort(sse, kind="stable")[: min(n_best, len(grid))]
        a, alpha = grid[top, 0], grid[top, 1]
        c = np.maximum(coef[top], 1e-300)
        theta = np.stack(
            [
                np.log(c[:, 0]),
                np.log(c[:, 1]),
                a,
                np.log(c[:, 2]),
                alpha,
                np.log(c[:, 3]),
                np.zeros_like(a),
            ],
            axis=-1,
        )  # centred coordinates: the columns were centred already
        offsets = np.zeros((len(theta), self.contrasts.shape[1]))
        return np.clip(np.concatenate([theta, offsets], axis=1), self.lower, self.upper)


def _contrasts(n_params: np.ndarray, run_index: np.ndarray, counts=None) -> np.ndarray:
    """(R, V) orthonormal basis of run offsets u with sum_r counts_r u_r = 0 over each
    size's runs (counts: a bootstrap resample's draws of each run, default 1; a run drawn
    0 times gets no offset)."""
    runs = int(run_index.max()) + 1
    size_of = np.zeros(runs)
    size_of[run_index] = n_params
    c = np.ones(runs) if counts is None else np.asarray(counts, dtype=float)
    columns = []
    for size in np.unique(size_of):
        members = np.flatnonzero((size_of == size) & (c > 0))
        k = members.size
        if k < 2:
            continue
        unit = c[members] / np.linalg.norm(c[members])
        basis, _, _ = np.linalg.svd(np.eye(k) - np.outer(unit, unit))  # first k - 1 span it
        block = np.zeros((runs, k - 1))
        block[members] = basis[:, : k - 1]
        columns.append(block)
    return np.concatenate(columns, axis=1) if columns else np.zeros((runs, 0))


@dataclass(frozen=True)
class ScheduleFamily:
    """Runs of one schedule whose phases are fractions of the run, at a fixed batch: the
    family a frontier is drawn for (Chinchilla's: cosine to 10% over each run)."""

    schedule: LrSchedule
    tokens_per_step: int  # tokens per update

    @classmethod
    def usual(cls, runs) -> ScheduleFamily:
        """Cosine to the end at the most common peak lr, warmup, floor and batch of `runs`
        (`curve_data.RunCurve`s)."""
        common = Counter(
            (r.spec.schedule.peak_lr, r.spec.schedule.warmup_frac, r.spec.schedule.min_lr_frac,
             r.spec.tokens_per_step)
            for r in runs
        ).most_common(1)[0][0]  # fmt: skip
        peak, warmup, floor, tps = common
        schedule = LrSchedule(kind="cosine", peak_lr=peak, warmup_frac=warmup, min_lr_frac=floor)
        return cls(schedule, int(tps))

    def describe(self) -> str:
        s = self.schedule
        shape = (
            f" {s.decay_shape} decay over the last {s.cooldown_frac:.0%}" if s.kind == "wsd" else ""
        )
        return (
            f"{s.kind}{shape} to {s.min_lr_frac:g} of peak lr {s.peak_lr:g}, "
            f"{s.warmup_frac:.0%} warmup, {self.tokens_per_step} tokens per update"
        )


class FamilyAreas:
    """S1 and S2 at the end of runs of a `ScheduleFamily` lasting T updates, for any T:
    exact (`lr_areas.final_areas`) at `_TABLE_PER_DECADE` lengths per decade, a cubic
    spline in log T between them (the frontier's search asks for thousands of lengths)."""

    def __init__(self, family: ScheduleFamily, lam: float, t_lo: float, t_hi: float):
        lo = max(0.0, np.floor(np.log10(max(t_lo, 1.0))))
        hi = max(lo + 1, np.ceil(np.log10(max(t_hi, 10.0))))
        totals = np.unique(np.round(np.logspace(lo, hi, int((hi - lo) * _TABLE_PER_DECADE) + 1)))
        s1, s2 = final_areas(family.schedule, totals.astype(np.int64), lam=lam)
        self.log_t = np.log(totals)
        self._log_s1 = CubicSpline(self.log_t, np.log(s1))
        self._s2 = CubicSpline(self.log_t, s2)

    def __call__(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S1, S2) at the end of runs of `steps` updates (clipped to the table's range)."""
        log_t = np.clip(np.log(np.maximum(steps, 1.0)), self.log_t[0], self.log_t[-1])
        return np.exp(self._log_s1(log_t)), np.maximum(self._s2(log_t), 0.0)


class FamilyForm:
    """The law as a function of (N, D) for runs of one schedule family, in the shape
    `frontier.frontier_logs` searches: centred log N, and log D as it is."""

    def __init__(self, form: CurveForm, family: ScheduleFamily, lam: float, log_ratio, log_c):
        """`log_ratio`: the fitted runs' mean log(D / N), around which the search centres;
        `log_c`: the log budgets to be searched."""
        self.form, self.family = form, family
        self.log_n0 = form.log_n0
        self.log_d0 = form.log_n0 + log_ratio
        # The search spans 4 decades of N either side of D / N at that ratio: tabulate the
        # run lengths it can reach, with a decade to spare.
        centre = (log_c - math.log(6.0) - log_ratio) / 2
        reach = 5 * math.log(10)
        d_lo = np.exp(np.min(log_c) - math.log(6.0) - (np.max(centre) + reach))
        d_hi = np.exp(np.max(log_c) - math.log(6.0) - (np.min(centre) - reach))
        tps = family.tokens_per_step
        self.areas = FamilyAreas(family, lam, d_lo / tps, min(d_hi / tps, 1e15))

    def centred(self, log_n, log_d):
        return log_n - self.log_n0, log_d

    def log_loss_at(self, theta, x_n, log_d, *, jac: bool = False):
        s1, s2 = self.areas(np.exp(log_d) / self.family.tokens_per_step)
        x_s = np.log(s1) - self.form.log_s0
        return self.form.log_loss_at(theta, x_n, x_s, s2, jac=False)
