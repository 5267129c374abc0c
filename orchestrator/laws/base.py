"""What every scaling law shares: errors, predictions with intervals, the law interface.

Symbols (STYLE 2.9 allows these letters inside `orchestrator/laws/` only):

- N: non-embedding parameter count of a model (`n_params` in signatures).
- D: training tokens seen by a run (`tokens`).
- C: training compute in FLOPs, forward plus backward, total over the run (`flops`).
  By default C = 6 N D (Kaplan et al. 2020, Sec. 2.1); a law may be given another
  FLOPs-per-token function of N instead.
- L: loss in nats per token (a run's eval loss, or its final train loss).
- E: irreducible loss, the limit of L for infinite N and D (nats per token).
- A, alpha: scale and exponent of the model-size term A / N^alpha.
- B, beta: scale and exponent of the data term B / D^beta.
- a, b, e: log A, log B, log E, the log-sum-exp parametrisation of
  Besiroglu et al. (2024), "Chinchilla Scaling: A replication attempt", Sec. 2.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from storage.errors import OrchError

log = logging.getLogger(__name__)

FlopsPerToken = Callable[[np.ndarray], np.ndarray]
"""Maps N (array) to training FLOPs per token (array), so that C = flops_per_token(N) * D."""


class FitError(OrchError, ValueError):
    """The observations cannot be fitted as asked (bad values, too few points, bad options)."""


class NotFittedError(OrchError, AttributeError):
    """A law was asked for parameters or predictions before `fit` was called."""


@dataclass(frozen=True)
class Prediction:
    """A predicted quantity with a two-sided interval at confidence `level`.

    `mean` is the point estimate (the full-data fit's value, also for bootstrap
    ensembles); `lo` and `hi` bound the interval on the *fitted curve* (a confidence
    interval, not a prediction interval for one new noisy run). Floats for scalar
    inputs, arrays otherwise.
    """

    mean: float | np.ndarray
    lo: float | np.ndarray
    hi: float | np.ndarray
    level: float


@dataclass(frozen=True)
class Frontier:
    """The compute-optimal allocation at budgets `flops`: N_opt, D_opt and L there."""

    flops: float | np.ndarray
    n_opt: Prediction
    d_opt: Prediction
    loss_opt: Prediction


@runtime_checkable
class Law(Protocol):
    """A fitted loss surface L(N, D). Implemented by `Chinchilla` and `Kaplan`."""

    def fit(self, n_params, tokens, loss, *, weights=None, groups=None) -> Law: ...

    @property
    def params(self) -> dict[str, float]: ...

    def predict(self, n_params, tokens, *, level: float = 0.95) -> Prediction: ...

    def n_opt(self, flops, *, level: float = 0.95) -> Prediction: ...

    def d_opt(self, flops, *, level: float = 0.95) -> Prediction: ...

    def loss_opt(self, flops, *, level: float = 0.95) -> Prediction: ...


def flops_6nd(n_params: np.ndarray) -> np.ndarray:
    """FLOPs per token for a model of N non-embedding parameters: 6 N (Kaplan et al. 2020)."""
    return 6.0 * np.asarray(n_params, dtype=float)


def check_observations(
    n_params, tokens, loss, *, min_points: int, weights=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns (N, D, L, weights) as float arrays after checking them for a fit.

    Raises:
        FitError: lengths differ, a value is not finite or not positive, a weight is
            negative, or there are fewer than `min_points` observations.
    """
    arrays = {}
    for name, values in (("n_params", n_params), ("tokens", tokens), ("loss", loss)):
        arr = np.asarray(values, dtype=float)
        if arr.ndim != 1:
            raise FitError(f"{name}: expected a 1-D sequence of numbers, got shape {arr.shape}")
        arrays[name] = arr
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise FitError(f"observations have different lengths: {lengths}")
    m = lengths["loss"]
    if m < min_points:
        raise FitError(
            f"{m} observations are too few: this law needs at least {min_points}",
            hint="run more configurations before fitting",
        )
    for name, arr in arrays.items():
        bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
        if bad.size:
            i = int(bad[0])
            raise FitError(
                f"{name}[{i}] = {float(arr[i])!r}: every value must be finite and > 0 "
                f"({bad.size} bad value{'s' if bad.size > 1 else ''})"
            )
    if weights is None:
        w = np.ones(m)
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape != (m,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise FitError(f"weights: expected {m} finite non-negative numbers, not all zero")
    return arrays["n_params"], arrays["tokens"], arrays["loss"], w


def as_output(values: np.ndarray, scalar: bool) -> float | np.ndarray:
    """Returns a Python float for scalar inputs, the array otherwise."""
    return float(np.reshape(values, ())) if scalar else values


def check_positive(values, name: str) -> tuple[np.ndarray, bool]:
    """Returns (values as an at-least-1-D float array, whether they were a scalar).

    Raises:
        FitError: a value is not finite or not positive.
    """
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise FitError(f"{name}: every value must be finite and > 0")
    return np.atleast_1d(arr), arr.ndim == 0


def check_positive_pair(first, second, name1: str, name2: str):
    """`check_positive` on both, broadcast together: (first, second, both scalar).

    Raises:
        FitError: a value is not finite or not positive, or the shapes do not broadcast.
    """
    a, scalar_a = check_positive(first, name1)
    b, scalar_b = check_positive(second, name2)
    try:
        a, b = np.broadcast_arrays(a, b)
    except ValueError as err:
        raise FitError(f"{name1} and {name2} have shapes that do not match: {err}") from err
    return a, b, scalar_a and scalar_b


def grid_product(grid: Mapping[str, Sequence[float]], names: Sequence[str]) -> np.ndarray:
    """Cartesian product of a start grid, columns in `names` order: (S, len(names))."""
    if not isinstance(grid, Mapping) or set(grid) != set(names):
        keys = sorted(grid) if isinstance(grid, Mapping) else grid
        raise FitError(f"start_grid: expected a mapping with keys {sorted(names)}, got {keys!r}")
    axes = [np.atleast_1d(np.asarray(grid[name], dtype=float)) for name in names]
    if any(ax.size == 0 or ax.ndim != 1 or not np.all(np.isfinite(ax)) for ax in axes):
        raise FitError("start_grid: every key needs a flat list of finite numbers")
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=-1)


def broadcast_column(theta: np.ndarray, i: int, ndim: int) -> np.ndarray:
    """Column i of theta (K, P), shaped (K, 1, ..., 1) to broadcast against (K, *S)."""
    return theta[:, i].reshape((-1,) + (1,) * (ndim - 1))


@contextlib.contextmanager
def quiet_fits() -> Iterator[None]:
    """Silence the laws' per-fit warnings (e.g. a parameter at a bound) for fits made on
    parts of the data (backtests, calibration), which a user did not ask to see."""
    logger = logging.getLogger("orchestrator.laws")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)
