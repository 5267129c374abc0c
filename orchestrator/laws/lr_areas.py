"""S1 and S2 of the learning-rate-annealing law, exactly, from a run's schedule.

Tissue et al. (2024), "Scaling Law with Learning Rate Annealing" (arXiv 2408.11029),
fit a loss curve by L(s) = L0 + A S1^-alpha - C S2, where after s updates

- S1(s) = sum_{i<=s} eta_i is the forward area, the learning rate summed over the updates;
- S2(s) = sum_{i<=s} m_i with m_i = lam m_{i-1} + (eta_{i-1} - eta_i) is the annealing
  area: each decrease of the learning rate is accumulated with momentum (decay factor
  lam, 0.999 in the paper), so a decrease lowers the loss gradually, not at once.

Conventions (ours where the paper leaves them open):
- update i (1-based) uses the learning rate of optimizer step i - 1 of workers/schedule.py,
  eta_i = peak_lr x lr_multiplier(schedule, i - 1, T), so a metrics row at `step` s
  (updates done) has S1(s), S2(s), and S1(0) = S2(0) = 0;
- m_1 = 0 and only decreases drive m: m_i = lam m_{i-1} + max(0, eta_{i-1} - eta_i).
  Warmup's rises are not annealing; counted, they would make S2 negative during warmup.
  Warmup's area is in S1;
- a fractional s (the middle of a train-loss row's interval) interpolates linearly.

Two exact computations of the same sums:
- direct: eta at every step, cumulative sums and the momentum recursion; O(T);
- closed: for runs longer than `_DIRECT_MAX_STEPS` and for the frontier's many run
  lengths. S1 sums each phase in closed form (arithmetic series for warmup and a linear
  decay, the sum of cosines of an arithmetic progression for cosine shapes, sum sqrt(j)
  by the Euler-Maclaurin series for 1-sqrt). Since sum_{i<=s} m_i =
  sum_k Delta_k (1 - lam^(s-k+1)) / (1 - lam), S2(s) = (D(s) - R(s)) / (1 - lam) with D(s)
  the learning rate's total decrease so far (the peak so far minus eta_s: every schedule
  here rises, then never rises again) and R(s) = sum_k Delta_k lam^(s-k+1) over the last
  `_window` steps (older terms are below e^-60 of the newest).

The learning rates are workers/schedule.py's own (`lr_multipliers`, torch-free, so the
orchestrator may import it); tests/orchestrator/laws/test_lr_areas.py checks every step of
every kind against the worker's per-step formula, both computations against a plain
Python sum, and the simulator's own sum (workers.simulated.annealing_areas) against them.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
from scipy.signal import lfilter

from workers.schedule import lr_multipliers  # the worker's own formulas, vectorised
from workers.spec import LrSchedule

log = logging.getLogger(__name__)

DEFAULT_LAMBDA = 0.999  # Tissue et al. (2024)'s momentum decay factor for S2
_DIRECT_MAX_STEPS = 1 << 22  # longer runs use the closed forms (a direct pass is O(T) memory)
_SQRT_TABLE = 100_000  # sum sqrt(j) from a table up to here, Euler-Maclaurin beyond
_ZETA_MINUS_HALF = -0.20788622497735456601730672539  # zeta(-1/2), the series' constant


def annealing_areas(
    schedule: LrSchedule, total_steps: int, steps, *, lam: float = DEFAULT_LAMBDA
) -> tuple[np.ndarray, np.ndarray]:
    """(S1, S2) after `steps` updates (floats in [0, total_steps]) of a run of this schedule.

    Units: learning rate x updates (`schedule.peak_lr` sets the scale).
    """
    at = np.clip(np.asarray(steps, dtype=float), 0.0, total_steps)
    lo = np.floor(at).astype(np.int64)
    hi = np.minimum(lo + 1, total_steps)
    frac = at - lo
    if total_steps <= _DIRECT_MAX_STEPS:
        s1, s2 = _direct(schedule, total_steps, lam)
        v1_lo, v1_hi, v2_lo, v2_hi = s1[lo], s1[hi], s2[lo], s2[hi]
    else:
        v1_lo, v2_lo = _closed(schedule, total_steps, lo, lam)
        v1_hi, v2_hi = _closed(schedule, total_steps, hi, lam)
    return v1_lo + frac * (v1_hi - v1_lo), v2_lo + frac * (v2_hi - v2_lo)


def final_areas(
    schedule: LrSchedule, total_steps, *, lam: float = DEFAULT_LAMBDA
) -> tuple[np.ndarray, np.ndarray]:
    """(S1, S2) at the end of runs of this schedule lasting each of `total_steps` updates."""
    totals = np.atleast_1d(np.asarray(total_steps, dtype=np.int64))
    s1, s2 = np.empty(totals.shape), np.empty(totals.shape)
    for i, t in enumerate(totals.tolist()):
        a, b = _closed(schedule, t, np.array([t]), lam)
        s1[i], s2[i] = a[0], b[0]
    return s1, s2


def _direct(schedule: LrSchedule, total: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 after 0..total updates, by summing every step."""
    eta = schedule.peak_lr * lr_multipliers(schedule, np.arange(total), total)
    drop = np.maximum(0.0, np.concatenate([[0.0], eta[:-1] - eta[1:]]))
    momentum = lfilter([1.0], [1.0, -lam], drop)  # m_i = drop_i + lam m_{i-1}
    return (
        np.concatenate([[0.0], np.cumsum(eta)]),
        np.concatenate([[0.0], np.cumsum(momentum)]),
    )


def _window(lam: float) -> int:
    """Updates back from s whose decreases still weigh more than e^-60 in R(s)."""
    return 1 if lam <= 0 else math.ceil(60.0 / -math.log(lam))


def _closed(
    schedule: LrSchedule, total: int, at: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 after `at` updates (integers), without visiting every step."""
    peak = schedule.peak_lr
    s1 = peak * _multiplier_sum(schedule, total, at)
    warmup = schedule.warmup_steps(total)
    # eta_i for update i is the multiplier at step i - 1; eta_0 := eta_1.
    eta_at = peak * lr_multipliers(schedule, np.maximum(at - 1, 0), total)
    top = np.maximum(
        lr_multipliers(schedule, np.clip(np.minimum(at, warmup) - 1, 0, None), total),
        lr_multipliers(schedule, np.clip(np.minimum(at, warmup + 1) - 1, 0, None), total),
    )
    decrease = np.where(at > 0, peak * top - eta_at, 0.0)
    recent = np.empty(at.shape)
    width = _window(lam)
    for i, s in enumerate(at.tolist()):
        first = max(1, s - width)  # updates first..s; their decreases from first + 1 on
        eta = peak * lr_multipliers(schedule, np.arange(first - 1, s), total)
        drop = np.maximum(0.0, eta[:-1] - eta[1:])  # Delta_k for k = first + 1 .. s
        recent[i] = float(np.sum(drop * lam ** np.arange(drop.size, 0, -1)))
    return s1, (decrease - recent) / (1.0 - lam)


def _multiplier_sum(schedule: LrSchedule, total: int, at: np.ndarray) -> np.ndarray:
    """sum of lr_multiplier(schedule, j, total) over j = 0 .. at - 1, in closed form."""
    n = at.astype(float)
    warmup = schedule.warmup_steps(total)
    floor = schedule.min_lr_frac
    m = np.minimum(n, warmup)
    out = m * (m + 1) / (2 * warmup) if warmup else np.zeros_like(n)
    after = np.maximum(0.0, n - warmup)  # steps past warmup: j = warmup .. n - 1
    if schedule.kind == "constant":
        return out + after
    if schedule.kind == "cosine":
        d = math.pi / max(1, total - warmup)
        return out + after * (1 + floor) / 2 + (1 - floor) / 2 * _cos_sum(0.0, d, after)
    start = schedule.decay_start(total)
    stable = np.clip(np.minimum(n, start) - warmup, 0.0, None)
    length = max(1, total - start)
    # Decay steps j = max(start, warmup) .. n - 1, as r = j - start + 1, q = r / length.
    r0 = float(max(start, warmup) - start + 1)
    count = np.clip(n - max(start, warmup), 0.0, None)
    r1 = r0 + count - 1
    if schedule.decay_shape == "cosine":
        cos = _cos_sum(math.pi * r0 / length, math.pi / length, count)
        decay = count * (1 + floor) / 2 + (1 - floor) / 2 * cos
    elif schedule.decay_shape == "1-sqrt":
        roots = np.where(count > 0, _sqrt_sum(r1) - _sqrt_sum(np.full_like(r1, r0 - 1)), 0.0)
        decay = count - (1 - floor) * roots / math.sqrt(length)
    else:
        decay = count - (1 - floor) * (r0 + r1) * count / (2 * length)
    return out + stable + decay


def _cos_sum(first: float, d: float, count: np.ndarray) -> np.ndarray:
    """sum_{u=0}^{count-1} cos(first + u d), the closed form of Lagrange's identity."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sin(count * d / 2) / math.sin(d / 2) * np.cos(first + (count - 1) * d / 2)
    return np.where(count > 0, out, 0.0)


@functools.cache
def _sqrt_table() -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.sqrt(np.arange(1, _SQRT_TABLE + 1)))])


def _sqrt_sum(n: np.ndarray) -> np.ndarray:
    """sum_{j=1}^{n} sqrt(j): a table up to 1e5, then Euler-Maclaurin (error < n^-4.5)."""
    n = np.asarray(n, dtype=float)
    small = n <= _SQRT_TABLE
    table = _sqrt_table()[np.clip(n, 0, _SQRT_TABLE).astype(np.int64)]
    big = np.maximum(n, 1.0)
    series = (
        2 / 3 * big**1.5 + 0.5 * big**0.5 + _ZETA_MINUS_HALF + big**-0.5 / 24 - big**-2.5 / 1920
    )
    return np.where(small, table, series)
