"""`ComputeAxis`: how a fit counts C, so that N_opt(C*) is read on the budget's own axis.

A plan budgets its runs with one FLOPs count (`flops_method`: 6 N D, 6 N_total D, or the
Chinchilla appendix's op-by-op count), and the runs record C by that count. A law fitted
on N and D answers "N_opt at C" only once it knows how C follows from N and D; if the fit
assumed 6 N D while the budget was counted another way, N_opt(C*) would be read at a
different budget than the one planned (for small models the appendix count is several
times 6 N D: embeddings and attention are most of the compute).

An axis is C = per_token(N) * D, with N the fit's N (non-embedding parameters). Three
ways to get one:
- `SIX_ND`: per_token(N) = 6 N, the default when nothing else is known;
- `ComputeAxis.from_runs(N, D, C)`: the runs' own C / D, interpolated in log N between
  the runs and held at the nearest run's ratio to 6 N beyond them, for tables and
  stores that carry C but no plan;
- `orchestrator.planning.compute_axis(plan)`: the plan's count at the shapes its shape
  rule gives each N, exact for the runs a plan would make at any N.
Symbols are defined in `base`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orchestrator.laws.base import FitError, FlopsPerToken


@dataclass(frozen=True)
class ComputeAxis:
    """C = per_token(N) * D. `name` says which count (recorded with every fit)."""

    name: str  # "6nd", "6nd_total", "chinchilla", or "runs" (interpolated from the runs' C)
    # N -> C / D on a grid of log N, interpolated linearly in (log N, log(C / (6 N D)));
    # empty means exactly 6 N. Held as arrays so the axis is plain data (picklable).
    log_n: tuple[float, ...] = field(default=())
    log_ratio: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        values = np.asarray(self.log_n + self.log_ratio, dtype=float)
        if len(self.log_n) != len(self.log_ratio) or not np.all(np.isfinite(values)):
            raise FitError("compute axis: log_n and log_ratio must be finite, of one length")
        if np.any(np.diff(self.log_n) <= 0):
            raise FitError("compute axis: log_n must be increasing")

    @property
    def per_token(self) -> FlopsPerToken | None:
        """N -> FLOPs per token for the laws' `flops_per_token` (None: exactly 6 N)."""
        return None if not self.log_n else self._per_token

    def _per_token(self, n_params) -> np.ndarray:
        n = np.asarray(n_params, dtype=float)
        ratio = np.exp(np.interp(np.log(n), self.log_n, self.log_ratio))
        return 6.0 * n * ratio

    def flops(self, n_params, tokens) -> np.ndarray:
        """C (FLOPs) of runs of N parameters and D tokens on this axis."""
        n = np.asarray(n_params, dtype=float)
        per_token = 6.0 * n if not self.log_n else self._per_token(n)
        return per_token * np.asarray(tokens, dtype=float)

    def tokens(self, n_params, flops) -> np.ndarray:
        """D such that a run of N parameters spends C: C / per_token(N)."""
        n = np.asarray(n_params, dtype=float)
        per_token = 6.0 * n if not self.log_n else self._per_token(n)
        return np.asarray(flops, dtype=float) / per_token

    @classmethod
    def from_ratios(cls, name: str, n_params, ratios) -> ComputeAxis:
        """An axis from (C / D) / (6 N) known at some N (e.g. a plan's shapes)."""
        n = np.asarray(n_params, dtype=float)
        r = np.asarray(ratios, dtype=float)
        if n.shape != r.shape or n.ndim != 1 or not n.size:
            raise FitError("compute axis: expected matching 1-D N and ratio arrays")
        if not np.all(np.isfinite(r) & (r > 0)):
            raise FitError("compute axis: every ratio of C to 6 N D must be finite and > 0")
        if np.allclose(r, 1.0, rtol=1e-9, atol=0):
            return cls(name)
        # One ratio per distinct N (the mean of its log), in increasing N.
        log_n, inverse = np.unique(np.log(n), return_inverse=True)
        log_r = np.bincount(inverse, np.log(r)) / np.bincount(inverse)
        if log_n.size == 1:  # a single N: the ratio holds everywhere
            log_n, log_r = np.array([log_n[0], log_n[0] + 1.0]), np.repeat(log_r, 2)
        return cls(name, tuple(map(float, log_n)), tuple(map(float, log_r)))

    @classmethod
    def from_runs(cls, n_params, tokens, flops, *, name: str = "runs") -> ComputeAxis:
        """The runs' own C / D interpolated in log N (held constant relative to 6 N
        beyond the smallest and largest run).

        Raises:
            FitError: a value is not finite and positive, or the lengths differ.
        """
        arrays = {}
        for label, values in (("n_params", n_params), ("tokens", tokens), ("flops", flops)):
            arr = np.asarray(values, dtype=float)
            if arr.ndim != 1 or not arr.size or not np.all(np.isfinite(arr) & (arr > 0)):
                raise FitError(f"compute axis: {label} must be a 1-D sequence of numbers > 0")
            arrays[label] = arr
        if len({a.size for a in arrays.values()}) != 1:
            raise FitError("compute axis: n_params, tokens and flops differ in length")
        n, d, c = arrays.values()
        return cls.from_ratios(name, n, c / (6.0 * n * d))

    def describe(self) -> str:
        """One line for tables and records, e.g. "chinchilla (C/6ND 3.1 to 1.2)"."""
        if not self.log_n:
            return self.name if self.name == "6nd" else f"{self.name} (C = 6 N D)"
        lo, hi = np.exp(self.log_ratio[0]), np.exp(self.log_ratio[-1])
        return f"{self.name} (C / 6ND {lo:.3g} at N={np.exp(self.log_n[0]):.3g} to {hi:.3g})"


SIX_ND = ComputeAxis("6nd")
"""C = 6 N D (Kaplan et al. 2020, sec. 2.1), N non-embedding."""
