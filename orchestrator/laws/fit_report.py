"""`fit_path`: load observations from an experiment or a table, fit, return a plain report.

This is what `orch fit PATH` calls; the CLI only renders the `FitReport`. Symbols
(N, D, C, L) are defined in `base`.

Accepted inputs:
- an experiment directory holding `summary.parquet` (columns run_id, n_params, tokens,
  flops, final_loss, eval_loss, status): finished runs only; L is eval_loss, or
  final_loss where eval_loss is null or NaN;
- a CSV or Parquet file with columns N, D (or C, then D = C / (6 N)) and loss, and
  optionally C beside D and run_id.

C is counted on one axis (laws/axis.py) for the levels, the frontier and N_opt: the plan's
(`orchestrator.planning.compute_axis`) when the caller knows it, else the runs' own C
(the summary's `flops`, a table's C beside D) interpolated in N, else 6 N D.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from orchestrator.laws.auto import AutoLaw, BacktestRow
from orchestrator.laws.axis import SIX_ND, ComputeAxis
from orchestrator.laws.base import FitError, Prediction, check_observations
from orchestrator.laws.compare import LAWS
from orchestrator.laws.domain import check_min_tokens_per_param
from orchestrator.laws.frontier import SEARCH_DECADES
from orchestrator.laws.record import FitRecord
from storage.errors import StoreError
from storage.fsio import redact

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.parquet"
FITS_DIR = "fits"
_LEVEL = 0.95
_FRONTIER_DECADES = 3.0  # default budgets: from the data's largest C up this many decades
_FRONTIER_POINTS = 5


@dataclass(frozen=True)
class Observations:
    """Runs to fit: N, D, L per run, their ids, and where they came from."""

    n_params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    run_ids: tuple[str, ...]  # empty when the table had no run_id column
    source: Path | str  # a local path, or an experiment's URI on object storage
    n_dropped: int  # rows left out (unfinished runs, or no loss recorded)
    axis: ComputeAxis = SIX_ND  # how C follows from N and D for these runs
    # Each run's lineage (runs sharing weights and seed noise: a WSD cooldown branch and
    # the run it branched from, or a table's `group` column); None: independent runs.
    groups: tuple[str, ...] | None = None

    @property
    def flops(self) -> np.ndarray:
        """C of each run on the observations' axis, FLOPs."""
        return self.axis.flops(self.n_params, self.tokens)

    def keeping(self, keep: np.ndarray) -> Observations:
        """Only the runs where `keep` is true; the others count as dropped."""
        pick = np.flatnonzero(keep)
        return dataclasses.replace(
            self,
            n_params=self.n_params[pick],
            tokens=self.tokens[pick],
            loss=self.loss[pick],
            run_ids=tuple(self.run_ids[i] for i in pick) if self.run_ids else (),
            n_dropped=self.n_dropped + int(np.size(keep) - pick.size),
            groups=None if self.groups is None else tuple(self.groups[i] for i in pick),
        )

    def on_axis(self, axis: ComputeAxis | None) -> Observations:
        """The same runs with C counted on `axis` (None: unchanged)."""
        return self if axis is None else dataclasses.replace(self, axis=axis)


@dataclass(frozen=True)
class ParamRow:
    """One parameter's point value and 95% interval."""

    name: str
    value: float
    lo: float
    hi: float


@dataclass(frozen=True)
class FrontierRow:
    """The compute-optimal allocation at one budget, each value with its 95% interval."""

    flops: float  # C, FLOPs
    n_opt: Prediction  # parameters
    d_opt: Prediction  # tokens
    loss_opt: Prediction  # nats per token


@dataclass(frozen=True)
class FitReport:
    """Everything `orch fit` shows, plus the record `--json` writes."""

    form: str
    params: tuple[ParamRow, ...]
    interval_method: str  # "covariance" or "bootstrap"
    axis: str  # how C was counted (ComputeAxis.describe), e.g. "6nd"
    objective: float
    n_obs: int
    frontier: tuple[FrontierRow, ...]
    warnings: tuple[str, ...]
    reliable: bool
    record: FitRecord
    # Where the record belongs: <experiment>/fits/<fit_id>.json (None for an experiment on
    # object storage: `Store.write_fit` puts it there).
    record_path: Path | None
    source: Path | str
    n_dropped: int
    # form="auto": each form's rolling-origin backtest and weight; params, record and
    # objective are then the chosen form's, the frontier the weighted average of all.
    backtest: tuple[BacktestRow, ...] = ()
    chosen: str | None = None


FORMS = (*LAWS, "auto")
"""What `fit_path` accepts as `form`: a law form, or "auto" (`AutoLaw`)."""


def fit_path(
    path: str | os.PathLike,
    *,
    form: str = "auto",
    bootstrap: int = 0,
    seed: int = 0,
    target_flops: float | Sequence[float] | None = None,
    axis: ComputeAxis | None = None,
    min_tokens_per_param: float | str | None = "auto",
) -> FitReport:
    """Fits `form` to the runs at `path` and returns a report with 95% intervals.

    Args:
        path: an experiment directory or a CSV/Parquet file (see the module docstring).
        form: "auto" (every form, weighed by backtest: `AutoLaw`), or a law form name (a
            key of `compare.LAWS`).
        bootstrap: resamples for percentile intervals; 0 uses the Jacobian covariance.
        seed: seed of the bootstrap's resampling.
        target_flops: budget(s) C to add to the frontier table.
        axis: how C is counted (the plan's, `orchestrator.planning.compute_axis`); None:
            the runs' own C where the input has it, else 6 N D.
        min_tokens_per_param: runs with fewer training tokens per parameter are left
            out: a number (any form), None (none), or "auto": the under-trained edge the
            forms' residuals show (`AutoLaw`, `domain`; a single form keeps every run).

    Raises:
        FitError: unknown form, unreadable input, missing columns or bad values.
    """
    if form not in FORMS:
        raise FitError(f"unknown form {form!r}; choose from {sorted(FORMS)}")
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise FitError(f"bootstrap: expected a whole number >= 0, got {bootstrap!r}")
    return fit_observations(
        load_observations(path).on_axis(axis),
        form=form,
        bootstrap=bootstrap,
        seed=seed,
        target_flops=target_flops,
        min_tokens_per_param=min_tokens_per_param,
    )


def fit_observations(
    obs: Observations,
    *,
    form: str = "auto",
    bootstrap: int = 0,
    seed: int = 0,
    target_flops: float | Sequence[float] | None = None,
    min_tokens_per_param: float | str | None = "auto",
) -> FitReport:
    """`fit_path` for observations already loaded (e.g. from a store on object storage)."""
    if form not in FORMS:
        raise FitError(f"unknown form {form!r}; choose from {sorted(FORMS)}")
    budgets = frontier_budgets(obs.flops, target_flops)
    per_token = obs.axis.per_token
    auto = None
    if form == "auto":
        auto = AutoLaw(flops_per_token=per_token, min_tokens_per_param=min_tokens_per_param)
        auto.fit(obs.n_params, obs.tokens, obs.loss, groups=obs.groups)
        law = auto.laws_[auto.chosen_]
    else:
        cut = check_min_tokens_per_param(min_tokens_per_param)
        if cut not in (None, "auto"):  # a single form has no rivals to find an edge with
            obs = obs.keeping(obs.tokens / obs.n_params >= cut)
        law = LAWS[form](flops_per_token=per_token).fit(
            obs.n_params, obs.tokens, obs.loss, groups=obs.groups
        )
    if bootstrap:
        fitted = law.bootstrap(bootstrap, seed)
    elif auto is not None:
        # A chosen form with no covariance interval: the ensemble AutoLaw read it with.
        fitted = auto.interval_source(auto.chosen_)
    else:
        fitted = law
    table = (auto or fitted).frontier(budgets, level=_LEVEL)
    intervals = fitted.param_intervals(level=_LEVEL)
    record = fitted.record(run_ids=obs.run_ids)
    base = None
    if isinstance(obs.source, Path):
        base = obs.source if obs.source.is_dir() else obs.source.parent
    return FitReport(
        form=form,
        params=tuple(
            ParamRow(k, float(v.mean), float(v.lo), float(v.hi)) for k, v in intervals.items()
        ),
        interval_method=record.interval_method,
        axis=record.axis,
        objective=law.objective_,
        n_obs=law.n_obs_,
        frontier=tuple(
            FrontierRow(
                float(c), _pick(table.n_opt, i), _pick(table.d_opt, i), _pick(table.loss_opt, i)
            )
            for i, c in enumerate(budgets)
        ),
        warnings=(auto or law).warnings_
        + _bootstrap_warnings(fitted)
        + _frontier_warnings(budgets, table.n_opt),
        reliable=law.reliable_,
        record=record,
        record_path=base / FITS_DIR / f"{record.fit_id}.json" if base else None,
        source=obs.source,
        n_dropped=obs.n_dropped,
        backtest=auto.backtest_ if auto else (),
        chosen=auto.chosen_ if auto else None,
    )


def frontier_budgets(flops: np.ndarray, target_flops=None) -> np.ndarray:
    """Log-spaced budgets from the largest observed C up 3 decades, plus any targets."""
    top = float(np.max(flops))
    budgets = top * np.logspace(0, _FRONTIER_DECADES, _FRONTIER_POINTS)
    if target_flops is not None:
        extra = np.atleast_1d(np.asarray(target_flops, dtype=float))
        if not np.all(np.isfinite(extra) & (extra > 0)):
            raise FitError(f"target_flops: expected positive numbers, got {target_flops!r}")
        budgets = np.union1d(budgets, extra)
    return np.sort(budgets)


def load_observations(path: str | os.PathLike) -> Observations:
    """Reads runs from an experiment directory or a CSV/Parquet table.

    Raises:
        FitError: the path does not exist, has no summary, or lacks required columns.
    """
    if "://" in str(path):  # an experiment on object storage: its summary, via the store
        from storage.store import Store

        store = Store.existing(str(path))
        return with_lineages(observations_from_summary(store.summary(), redact(str(path))), store)
    source = Path(path)
    if source.is_dir():
        summary = source / SUMMARY_FILE
        if not summary.is_file() and not any((source / m).exists() for m in ("plan.yaml", "runs")):
            raise FitError(
                f"{source} is not an experiment (no plan.yaml, runs/ or {SUMMARY_FILE})",
                hint="give an experiment directory, or a CSV/Parquet file of N, D, loss",
            )
        if not summary.is_file():
            raise FitError(
                f"{source}: no {SUMMARY_FILE} in this experiment directory",
                hint="it is written as runs finish; or pass a CSV/Parquet file of N, D, loss",
            )
        from storage.store import Store

        obs = observations_from_summary(read_table(summary), summary.parent)
        return with_lineages(obs, Store(str(source)))
    if not source.is_file():
        raise FitError(f"{source}: no such file or directory")
    return _from_table(read_table(source), source)


def with_lineages(obs: Observations, store) -> Observations:
    """`obs` with each run's lineage from its stored spec (a cooldown branch's
    `branch_from`, else the run itself), when some run is a branch; a run whose spec
    cannot be read counts as its own lineage."""
    groups = []
    for run_id in obs.run_ids:
        try:
            parent = store.read_spec(run_id).get("branch_from") or ""
        except (StoreError, OSError, ValueError, TypeError, AttributeError):
            parent = ""  # an unreadable spec: fitted as independent
        groups.append(parent or run_id)
    if list(groups) == list(obs.run_ids):
        return obs
    return dataclasses.replace(obs, groups=tuple(groups))


def read_table(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise FitError(f"{path}: expected a .csv or .parquet file, or an experiment directory")
    try:
        table = pa_csv.read_csv(path) if suffix == ".csv" else pq.read_table(path)
        _ = table.column_names  # a CSV header not in UTF-8 fails here, not later
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        raise FitError(f"{path}: cannot read it as {suffix[1:]}: {err}") from err
    return table


def _require(table: pa.Table, columns: Sequence[str], path: Path | str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise FitError(f"{path}: missing column(s) {missing}; found {table.column_names}")


def observations_from_summary(table: pa.Table, experiment: Path | str) -> Observations:
    """The finished runs of an experiment's summary table, as observations to fit."""
    _require(
        table,
        ["run_id", "n_params", "tokens", "final_loss", "eval_loss", "status"],
        f"{experiment}/{SUMMARY_FILE}",
    )
    total = table.num_rows
    table = table.filter(pc.equal(table["status"], "finished"))
    table = _last_row_per_run(table, experiment)
    eval_loss = _floats(table, "eval_loss")
    final_loss = _floats(table, "final_loss")
    loss = np.where(np.isnan(eval_loss), final_loss, eval_loss)
    has_loss = ~np.isnan(loss)
    if (~has_loss).any():
        log.warning(
            "%s: %d finished runs have no loss and are left out", experiment, int((~has_loss).sum())
        )
    run_ids = np.asarray(table["run_id"].to_pylist(), dtype=object)[has_loss]
    n, tokens = _floats(table, "n_params")[has_loss], _floats(table, "tokens")[has_loss]
    flops = _floats(table, "flops")[has_loss] if "flops" in table.column_names else None
    return _observations(
        n,
        tokens,
        loss[has_loss],
        tuple(str(r) for r in run_ids),
        experiment,
        total - int(has_loss.sum()),
        flops,
    )


def _last_row_per_run(table: pa.Table, experiment: Path) -> pa.Table:
    """One row per run_id (the last written), so a rewritten summary row counts once."""
    ids = table["run_id"].to_pylist()
    last = {run: i for i, run in enumerate(ids)}
    if len(last) == len(ids):
        return table
    log.warning(
        "%s: %d duplicate summary rows; keeping the last per run", experiment, len(ids) - len(last)
    )
    return table.take(sorted(last.values()))


# Other spellings of the columns, as published data sets use them (the Epoch AI
# replication's CSV of the Chinchilla paper's points: "Model Size", "Training FLOP").
COLUMN_ALIASES = {"Model Size": "N", "Training FLOP": "C", "Training Tokens": "D", "Loss": "loss"}


def _from_table(table: pa.Table, path: Path) -> Observations:
    table = table.rename_columns(
        [
            COLUMN_ALIASES.get(c, c) if COLUMN_ALIASES.get(c) not in table.column_names else c
            for c in table.column_names
        ]
    )
    token_column = "D" if "D" in table.column_names else "C"
    _require(table, ["N", token_column, "loss"], path)
    n = _floats(table, "N")
    has_c = "C" in table.column_names
    # C alone: D = C / (6 N), the 6ND axis. C beside D: the runs' own axis.
    tokens = _floats(table, "D") if token_column == "D" else _floats(table, "C") / (6.0 * n)
    flops = _floats(table, "C") if has_c and token_column == "D" else None
    run_ids = ()
    if "run_id" in table.column_names:
        run_ids = tuple(str(r) for r in table["run_id"].to_pylist())
    obs = _observations(n, tokens, _floats(table, "loss"), run_ids, path, 0, flops)
    if "group" not in table.column_names:
        return obs
    # Runs sharing weights and seed noise, as a sweep table names them (adaptive/sweep.py):
    # an empty group is the row's own lineage.
    labels = [str(g) if g not in (None, "") else f"row{i + 1}"
              for i, g in enumerate(table["group"].to_pylist())]  # fmt: skip
    return dataclasses.replace(obs, groups=tuple(labels))


def _observations(n, tokens, loss, run_ids, source, n_dropped, flops=None) -> Observations:
    try:
        check_observations(n, tokens, loss, min_points=1)
        axis = SIX_ND if flops is None else ComputeAxis.from_runs(n, tokens, flops)
    except FitError as err:
        raise FitError(f"{source}: {err.message}", hint=err.hint) from err
    return Observations(n, tokens, loss, run_ids, source, n_dropped, axis)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64 with nulls as NaN."""
    column = table[name]
    try:
        return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise FitError(f"column {name!r} ({column.type}) is not numeric") from err


def _bootstrap_warnings(fitted) -> tuple[str, ...]:
    failed = getattr(fitted, "n_failed_", 0)
    if not failed:
        return ()
    return (f"{failed} of {fitted.n_resamples_} bootstrap refits failed and were left out",)


def _frontier_warnings(budgets: np.ndarray, n_opt: Prediction) -> tuple[str, ...]:
    """Why a frontier row shows N_opt = inf or 0: not a value, but no optimum found."""
    beyond = ~np.isfinite(np.asarray(n_opt.mean, dtype=float))
    if not np.any(beyond):
        return ()
    return (
        f"no finite N_opt at {int(beyond.sum())} of the {beyond.size} frontier budgets, from "
        f"C = {float(budgets[beyond].min()):.3g} FLOPs: the fitted loss still falls at the "
        f"edge of the optimum's search ({SEARCH_DECADES:g} decades of N either side of a "
        "first guess), so N_opt is shown as inf (or 0) and its loss as nan; the runs do not "
        "place the optimum there",
    )


def _pick(pred: Prediction, i: int) -> Prediction:
    return Prediction(float(pred.mean[i]), float(pred.lo[i]), float(pred.hi[i]), pred.level)
