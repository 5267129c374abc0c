"""What a study must pin down: the compute-optimum at a budget C*, runs to predict, or both.

A `Target` names
- `flops` with `quantity`: L_opt and/or N_opt at C* (the frontier), read with the
  curve's confidence interval (they are properties of the fitted curve). That interval
  knows nothing of the form's own error, and where the form is wrong it does not hold:
  on bench/active_vs_grid.py's Farseer truths (20 studies, C* two decades beyond the
  runs) it held the true L_opt in 0% of `active`'s studies aimed at L_opt and 10% aimed
  at both. Widening it by the form error the law's backtests calibrate ((kappa x decades
  beyond the runs)^2 on log L, as a prediction interval does) lifted that to 10% and
  35% and left Chinchilla and curved truths unchanged, for 3.4x the study's fitting time
  (five backtest fits a round); it was not kept. The backtests see little of the error
  at C*: kappa is 0 in most of those studies (the Chinchilla fit's residual scale is
  mostly its misfit, which the backtests count as noise), and most of L_opt's error
  comes from an optimum placed at the wrong N, where no run goes. What does help is
  another form: the study's `target_law` under `target.form: auto` (AutoLaw on the same
  runs) held L_opt in 9 of 10 such studies aimed at L_opt, 2.0% off, against 0 and 15%;
  N_opt's interval held 7 of 10 aimed at N_opt against 8, 16% off against 222% (since
  AutoLaw reads Farseer's fits at a bound off their bootstrap; before, 6 of 10 and 8%
  for L_opt, and N_opt no better than Chinchilla's read);
- `runs`: (N, D) points to predict, e.g. the production run being planned. A run's loss
  is read with the law's prediction interval (`predict(..., interval="prediction")`):
  the loss that run will report, its seed noise and the form's extrapolation error
  included, so a relative width below about 3.3 x the seed-to-seed std of log-loss (at
  90%) is never reached, however many runs are added.

`target_estimate` gives every quantity with its interval at the target's level; the
stopping rule (`stopping.width_reason`) and the study's history read it, and the
`active` strategy aims its variance reduction at the same quantities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from orchestrator.laws import Prediction

Quantity = Literal["loss_opt", "n_opt", "both"]

_FRONTIER_NAMES = {"loss_opt": "L_opt", "n_opt": "N_opt"}


@dataclass(frozen=True)
class TargetRun:
    """A run to predict: N non-embedding parameters trained on D tokens."""

    n_params: float  # non-embedding parameters
    tokens: float  # training tokens

    @property
    def key(self) -> str:
        """Its name in estimates, the study's history and stop reasons."""
        return f"L(N={self.n_params:.3g}, D={self.tokens:.3g})"


@dataclass(frozen=True)
class Target:
    """The compute-optimal loss and/or size at `flops`, the loss of `runs`, or both."""

    flops: float | None = None  # C*, FLOPs; None: no frontier quantity
    quantity: Quantity = "both"  # which frontier quantities at C* (ignored without flops)
    level: float = 0.9  # confidence level of the intervals the stopping rule reads
    runs: tuple[TargetRun, ...] = ()

    def __post_init__(self) -> None:
        if self.flops is None and not self.runs:
            raise ValueError("a target needs flops (C*), runs to predict, or both")

    @property
    def quantities(self) -> tuple[str, ...]:
        """The frontier quantities at C* ("loss_opt", "n_opt"); () without flops."""
        if self.flops is None:
            return ()
        return ("loss_opt", "n_opt") if self.quantity == "both" else (self.quantity,)

    @property
    def keys(self) -> tuple[str, ...]:
        """Every quantity's key in `target_estimate`: frontier quantities, then runs."""
        return self.quantities + tuple(run.key for run in self.runs)

    def describe(self, key: str) -> str:
        """A key as users read it: L_opt(1e+22), N_opt(1e+22), L(N=7e+10, D=1.4e+12)."""
        if key in _FRONTIER_NAMES:
            return f"{_FRONTIER_NAMES[key]}({self.flops:.3g})"
        return key


def target_estimate(law, target: Target) -> dict[str, Prediction]:
    """Every quantity of `target` with its interval at `target.level`, keyed as
    `target.keys`.

    Args:
        law: a fitted law (`Chinchilla`, `AutoLaw`, ...): its `frontier` for L_opt and
            N_opt at C*, its `predict(..., interval="prediction")` for the runs.
    """
    out: dict[str, Prediction] = {}
    if target.quantities:
        frontier = law.frontier(target.flops, level=target.level)
        out.update({q: getattr(frontier, q) for q in target.quantities})
    if target.runs:
        n = np.array([r.n_params for r in target.runs], dtype=float)
        d = np.array([r.tokens for r in target.runs], dtype=float)
        pred = law.predict(n, d, level=target.level, interval="prediction")
        for i, run in enumerate(target.runs):
            out[run.key] = Prediction(
                float(pred.mean[i]), float(pred.lo[i]), float(pred.hi[i]), target.level
            )
    return out
