"""Loss curves for the curve law: a run's metric rows as (steps, loss) points, checked.

`read_curves(store)` reads every run's spec and metric rows (the store keeps one row per
step, the latest attempt's where a retried run logged a step twice) and turns each into
a `RunCurve`; `run_curve` does the same for rows already in hand. Symbols are in `base`.

Which loss (per run):
- the eval loss, where the run logged at least `min_evals` evaluations after warmup: it
  is measured on held-out data at exactly `step` updates;
- else the train loss, smoothed: a row's train loss is the mean over the updates since
  the previous row (workers/metrics.py), each taken before its update, so it stands for
  the model after `step - (k + 1) / 2` updates for an interval of k updates (k is at most
  the spec's `log_every_steps`: a gap in the rows does not widen it); then a local
  quadratic through each row's log loss and its neighbours (`smooth` rows, fewer at the
  ends of the curve and of each stretch between gaps) takes out much of the
  batch-to-batch noise without lifting the curve's steep start.

Points inside warmup are left out: the learning rate has not reached its peak, and the
law (Tissue et al. 2024) describes the loss from there on. Gaps (missing steps) are
fine; a NaN or infinite loss is refused with a `FitError` naming the run and the step,
since it means a diverged or corrupt run, not a point to drop quietly. Diverged runs
(summary status "diverged") are left out whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.laws.base import FitError
from orchestrator.laws.lr_areas import annealing_areas
from orchestrator.planning.flops import count_params
from storage.errors import StoreError
from storage.fsio import redact
from workers.spec import RunSpec

log = logging.getLogger(__name__)

MIN_EVALS = 4  # evaluations after warmup a run needs for its eval loss to be the curve
SMOOTH_ROWS = 5  # train-loss rows in the centred moving average


@dataclass(frozen=True, eq=False)
class RunCurve:
    """One run's usable loss curve: points after warmup, in increasing step."""

    run_id: str
    spec: RunSpec
    n_params: float  # N, non-embedding parameters of the spec's shape
    steps: np.ndarray  # updates done that each point stands for (float; see module doc)
    loss: np.ndarray  # nats per token at each point
    source: str  # "eval" or "train" (smoothed)
    last_step: int  # the run's last logged step (updates done), warmup rows included

    @property
    def total_steps(self) -> int:
        """Updates the run makes when it finishes."""
        return self.spec.steps

    @property
    def finished(self) -> bool:
        return self.last_step >= self.spec.steps

    @property
    def lineage(self) -> str:
        """The run a cooldown branch shares its weights and seed noise with, else itself."""
        return self.spec.branch_from or self.run_id


@dataclass(frozen=True, eq=False)
class CurveSet:
    """The curves of an experiment's runs, and what was left out."""

    runs: tuple[RunCurve, ...]
    source: str  # the store's URI (redacted) or a description
    skipped: tuple[str, ...] = ()  # "run_id: reason" for each run left out

    @property
    def n_points(self) -> int:
        return int(sum(r.steps.size for r in self.runs))


def run_curve(
    run_id: str,
    spec: RunSpec,
    steps,
    loss,
    eval_loss,
    *,
    min_evals: int = MIN_EVALS,
    smooth: int = SMOOTH_ROWS,
) -> RunCurve:
    """A `RunCurve` from one run's rows: `steps` (updates done, distinct), train `loss`
    and `eval_loss`, with NaN where a row has no value (an eval loss between evals).

    Raises:
        FitError: a step repeats, or a loss is infinite or not positive.
    """
    step = np.asarray(steps, dtype=np.int64)
    train = np.asarray(loss, dtype=float)
    evals = np.asarray(eval_loss, dtype=float)
    order = np.argsort(step, kind="stable")
    step, train, evals = step[order], train[order], evals[order]
    if np.any(np.diff(step) == 0):
        dup = int(step[np.flatnonzero(np.diff(step) == 0)[0]])
        raise FitError(
            f"run {run_id}: step {dup} appears twice",
            hint="read rows with Store.metrics, which keeps the latest attempt's",
        )
    for name, values in (("loss", train), ("eval_loss", evals)):
        bad = ~np.isnan(values) & ~(np.isfinite(values) & (values > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FitError(f"run {run_id} step {int(step[i])}: {name} is {float(values[i])!r}")
    warmup = spec.schedule.warmup_steps(spec.steps)
    last = int(step[-1]) if step.size else 0
    has_eval = ~np.isnan(evals) & (step > warmup)
    if has_eval.sum() >= min_evals:
        return _curve(run_id, spec, step[has_eval].astype(float), evals[has_eval], "eval", last)
    has_train = ~np.isnan(train)
    step, train = step[has_train], train[has_train]
    start = spec.branch_step if spec.branch_from else 0  # a branch's first row follows it
    previous = np.concatenate([[start], step[:-1]])
    interval = step - previous
    if spec.log_every_steps > 0:
        interval = np.minimum(interval, spec.log_every_steps)
    middle = step - (np.maximum(interval, 1) + 1) / 2
    keep = middle > warmup
    step, middle, log_loss = step[keep], middle[keep], np.log(train[keep])
    # Smooth within runs of consecutive rows only: across a gap the curve has moved on.
    usual = spec.log_every_steps or (np.median(np.diff(step)) if step.size > 1 else 1)
    cuts = np.flatnonzero(np.diff(step) > 2 * usual) + 1
    smoothed = np.concatenate(
        [
            _local_quadratic(xs, ys, smooth)
            for xs, ys in zip(np.split(middle, cuts), np.split(log_loss, cuts), strict=True)
        ]
    )
    return _curve(run_id, spec, middle, np.exp(smoothed), "train", last)


def n_params_of(spec: RunSpec) -> float:
    """N of a spec: the non-embedding parameters of its shape (planning.flops)."""
    return float(count_params(spec.shape).non_embedding_params)


def _curve(run_id, spec, steps, loss, source, last) -> RunCurve:
    return RunCurve(run_id, spec, n_params_of(spec), steps, loss, source, last)


def _local_quadratic(x: np.ndarray, y: np.ndarray, width: int) -> np.ndarray:
    """Each y replaced by a least-squares quadratic in x through it and its `width // 2`
    neighbours on each side (fewer near the ends; Savitzky and Golay 1964 with the
    rows' own spacing). Unlike a moving average it keeps a curve's bend: averaging the
    steep start of a loss curve would lift it."""
    half = max(0, int(width) // 2)
    if half < 2 or y.size < 5:
        return y
    idx = np.arange(y.size)
    reach = np.minimum(half, np.minimum(idx, y.size - 1 - idx))
    offsets = np.arange(-half, half + 1)
    neighbours = np.clip(idx[:, None] + offsets[None], 0, y.size - 1)
    used = np.abs(offsets)[None] <= reach[:, None]  # (M, 2 half + 1)
    dx = (x[neighbours] - x[:, None]) * used
    scale = np.maximum(np.abs(dx).max(axis=1, keepdims=True), 1e-12)
    basis = np.stack([np.ones_like(dx), dx / scale, (dx / scale) ** 2], axis=-1) * used[..., None]
    gram = np.einsum("mkp,mkq->mpq", basis, basis)
    rhs = np.einsum("mkp,mk->mp", basis, y[neighbours])
    fit = reach >= 2  # 5 or more points: a quadratic through them smooths
    out = y.copy()
    out[fit] = np.linalg.solve(gram[fit], rhs[fit][..., None])[:, 0, 0]
    return out


def read_curves(
    store,
    run_ids=None,
    *,
    min_evals: int = MIN_EVALS,
    smooth: int = SMOOTH_ROWS,
) -> CurveSet:
    """The curves of `run_ids` (default: every run with a spec) in a `storage.store.Store`.

    Runs without a spec or without points after warmup are skipped (listed in
    `CurveSet.skipped`), diverged runs too.

    Raises:
        FitError: a NaN or infinite loss (naming the run and step), or no usable curve.
    """
    ids = list(store.run_ids() if run_ids is None else run_ids)
    skipped, specs = [], {}
    for run_id in ids:
        if (store.run_summary(run_id) or {}).get("status") == "diverged":
            skipped.append(f"{run_id}: diverged")
            continue
        try:
            specs[run_id] = RunSpec.from_dict(store.read_spec(run_id))
        except (StoreError, ValueError, TypeError) as err:
            skipped.append(f"{run_id}: no readable spec ({err})")
    rows = _split(store.metrics(list(specs), columns=["run_id", "step", "loss", "eval_loss"]))
    runs = []
    for run_id, spec in specs.items():
        if run_id not in rows:
            skipped.append(f"{run_id}: no metric rows")
            continue
        curve = run_curve(
            run_id,
            spec,
            rows[run_id]["step"].to_numpy(),
            _checked(rows[run_id], "loss", run_id),
            _checked(rows[run_id], "eval_loss", run_id),
            min_evals=min_evals,
            smooth=smooth,
        )
        if curve.steps.size:
            runs.append(curve)
        else:
            skipped.append(f"{run_id}: no points after warmup")
    for reason in skipped:
        log.info("curves: skipping run %s", reason)
    if not runs:
        raise FitError(
            f"{redact(store.uri)}: no run has a loss curve after warmup",
            hint="curves come from the metric rows runs log while they train",
        )
    return CurveSet(tuple(runs), redact(store.uri), tuple(skipped))


def _split(table: pa.Table) -> dict[str, dict[str, pa.Array]]:
    """Rows per run_id (the store returns them sorted by run_id, then step)."""
    ids = table["run_id"].to_numpy(zero_copy_only=False)
    out = {}
    if not len(ids):
        return out
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    ends = np.concatenate([starts[1:], [len(ids)]])
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        part = table.slice(lo, hi - lo)
        out[str(ids[lo])] = {
            name: part[name].combine_chunks() for name in ("step", "loss", "eval_loss")
        }
    return out


def _checked(rows: dict[str, pa.Array], name: str, run_id: str) -> np.ndarray:
    """A loss column as floats with NaN for null; a stored NaN is an error, not a gap."""
    column = rows[name]
    nan = pc.fill_null(pc.is_nan(column), False).to_numpy(zero_copy_only=False)
    if nan.any():
        step = rows["step"].to_numpy()[np.flatnonzero(nan)[0]]
        raise FitError(
            f"run {run_id} step {int(step)}: {name} is NaN",
            hint="a NaN loss means the run diverged there; leave the run out or rerun it",
        )
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)


def curve_points(runs: Sequence[RunCurve], lam: float):
    """(N, S1, S2, L, weight, run index, steps) over every point of every run, (M,) each;
    each run's weights sum to one."""
    parts = []
    for i, run in enumerate(runs):
        s1, s2 = annealing_areas(run.spec.schedule, run.spec.steps, run.steps, lam=lam)
        m = run.steps.size
        weight = np.full(m, 1.0 / m)
        parts.append((np.full(m, run.n_params), s1, s2, run.loss, weight, np.full(m, i), run.steps))
    n, s1, s2, loss, w, index, steps = (np.concatenate(p) for p in zip(*parts, strict=True))
    return n, s1, s2, loss, w, index.astype(np.int64), steps


def final_points(specs: Sequence[RunSpec], lam: float):
    """(N, S1, S2) at the end of each spec's run, (Q,) each."""
    n = np.array([n_params_of(s) for s in specs], dtype=float)
    ends = [annealing_areas(s.schedule, s.steps, [s.steps], lam=lam) for s in specs]
    return n, np.array([e[0][0] for e in ends]), np.array([e[1][0] for e in ends])
