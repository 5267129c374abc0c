"""A finished sweep read for replay (adaptive/replay.py), and the runs to predict.

`load_sweep(path)` reads one of
- a CSV or Parquet table, one row per finished run, with columns `N` (non-embedding
  parameters), `D` (training tokens) or `C` (training FLOPs; then D = C / 6N), and
  `loss` (final loss, nats per token); optionally `C` beside `D` (the run's own FLOPs
  count), `run_id`, and `group` (runs that share weights and seed noise, e.g. a run and
  its cooldown branches: one lineage for the fits). The Epoch AI extraction's names
  ("Model Size", "Training FLOP") are read as N and C, as `orch fit` reads them, and the
  store's summary names (`n_params`, `tokens`, `flops`) as N, D and C. `where` keeps the
  rows of one sweep in a table of several (Gadre et al.'s `dataset` column);
- an experiment directory, local or `s3://...`: its `summary.parquet` (finished runs;
  each run's C as its plan counted it; no lineages: the summary does not say which runs
  are cooldown branches).
Every problem is one `SweepError` naming the file (and the column and row) at fault.

`load_targets(path)` reads a table of `N` and `D` (or `C`) to predict; a `loss` column,
if present, is kept apart for scoring and never shown to a strategy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from orchestrator.adaptive.targets import TargetRun
from orchestrator.laws import FitError

# `orch fit`'s table reading and column aliases, so that both commands read one table
# the same way.
from orchestrator.laws.fit_report import COLUMN_ALIASES, load_observations, read_table
from storage.errors import OrchError

log = logging.getLogger(__name__)

# The experiment store's summary names (storage/schema.py), for tables exported from one.
_SUMMARY_NAMES = {"n_params": "N", "tokens": "D", "flops": "C"}


class SweepError(OrchError, ValueError):
    """A sweep or targets table cannot be read: the message names the file and the problem."""


@dataclass(frozen=True)
class Sweep:
    """The finished runs of a sweep: arrays of one length, one entry per run."""

    source: Path | str  # a local path, or an experiment's URI on object storage
    run_ids: tuple[str, ...]  # the table's run_id, else "row<k>" (k: 1-based data row)
    n_params: np.ndarray  # N, non-embedding parameters
    tokens: np.ndarray  # D, training tokens
    flops: np.ndarray  # C, training FLOPs: the table's own count, else 6 N D
    loss: np.ndarray  # final loss, nats per token
    groups: tuple[str, ...]  # lineage of each run (runs sharing weights); its run_id if none

    def __len__(self) -> int:
        return len(self.run_ids)

    def largest(self, k: int) -> TargetTable:
        """The `k` largest-compute runs as targets, with their losses (a backtest: replay
        the rest of the sweep and score the predictions at these)."""
        if not 0 < k < len(self):
            raise SweepError(f"{self.source}: cannot hold out {k} of its {len(self)} runs")
        top = np.argsort(-self.flops, kind="stable")[:k]
        return TargetTable(
            source=self.source,
            runs=tuple(TargetRun(float(self.n_params[i]), float(self.tokens[i])) for i in top),
            loss=tuple(float(self.loss[i]) for i in top),
        )


@dataclass(frozen=True)
class TargetTable:
    """Runs to predict and, where the table has them, their observed losses (for scoring
    only: a replay's strategies see `runs` alone)."""

    source: Path | str
    runs: tuple[TargetRun, ...]
    loss: tuple[float | None, ...]  # nats per token; None: not in the table


def load_sweep(path: str | os.PathLike, *, where: Mapping[str, str] | None = None) -> Sweep:
    """The finished runs at `path` (a table or an experiment directory; module docstring).

    Args:
        where: keep only a table's rows whose column equals the value (as text), e.g.
            {"dataset": "rpj"} for one of several sweeps kept in one table.

    Raises:
        SweepError: the path is missing or unreadable, a required column is missing, or a
            value is not a finite number > 0 (naming the file, column and row).
    """
    if "://" in str(path) or Path(path).is_dir():  # an experiment, local or on object storage
        if where:
            raise SweepError(f"{path}: rows are selected (`where`) in tables, not experiments")
        return _from_experiment(path)
    source = Path(path)
    columns = _columns(source, need_loss=True, where=where or {})
    run_ids = columns["run_id"]
    return Sweep(
        source=source,
        run_ids=run_ids,
        n_params=columns["N"],
        tokens=columns["D"],
        flops=columns["C"],
        loss=columns["loss"],
        groups=columns["group"] or run_ids,
    )


def load_targets(path: str | os.PathLike, *, where: Mapping[str, str] | None = None) -> TargetTable:
    """The runs to predict at `path`: a CSV or Parquet table of N and D (or C), and
    optionally their loss (kept for scoring); `where` as for `load_sweep`.

    Raises:
        SweepError: as `load_sweep`, for the target table.
    """
    source = Path(path)
    if source.is_dir():
        raise SweepError(f"{source}: expected a CSV or Parquet table of N and D, not a directory")
    columns = _columns(source, need_loss=False, where=where or {})
    runs = tuple(
        TargetRun(float(n), float(d)) for n, d in zip(columns["N"], columns["D"], strict=True)
    )
    loss = columns["loss"]
    if loss is None:
        observed: tuple[float | None, ...] = (None,) * len(runs)
    else:
        observed = tuple(None if np.isnan(v) else float(v) for v in loss)
    return TargetTable(source=source, runs=runs, loss=observed)


def _from_experiment(path: str | os.PathLike) -> Sweep:
    try:
        obs = load_observations(path)  # finished runs of summary.parquet, one row each
    except FitError as err:
        raise SweepError(err.message, hint=err.hint) from err
    source = obs.source
    run_ids = obs.run_ids or tuple(f"row{i + 1}" for i in range(obs.loss.size))
    # The summary's C is a function of N (the plan's count per token) times D, which the
    # observations' axis interpolates exactly at each run's own N.
    return Sweep(
        source=source,
        run_ids=run_ids,
        n_params=obs.n_params,
        tokens=obs.tokens,
        flops=obs.flops,
        loss=obs.loss,
        # Cooldown branches share their parent's lineage (read from the stored specs).
        groups=obs.groups or run_ids,
    )


def _columns(path: Path, *, need_loss: bool, where: Mapping[str, str]) -> dict:
    """N, D, C (floats), loss (floats, or None if absent and not needed), run_id and
    group (tuples of str; group None if absent) of a table's rows selected by `where`,
    every value checked."""
    if not path.is_file():
        raise SweepError(f"{path}: no such file or directory")
    try:
        table = read_table(path)
    except FitError as err:
        raise SweepError(err.message, hint=err.hint) from err
    names = table.column_names
    table = table.rename_columns([_alias(c, names) for c in names])
    names = table.column_names
    required = ["N"] + (["loss"] if need_loss else [])
    missing = [c for c in required if c not in names]
    if missing or ("D" not in names and "C" not in names):
        missing += [] if ("D" in names or "C" in names) else ["D (or C)"]
        raise SweepError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(names)}",
            hint="a table needs N, D (or C) and loss, one row per run",
        )
    rows = _selected(table, where, path)  # indices of the rows kept, into the file's rows
    n = _positive(table, "N", path, rows)
    if "D" in names:
        d = _positive(table, "D", path, rows)
        c = _positive(table, "C", path, rows) if "C" in names else 6.0 * n * d
    else:  # C alone: D on the 6ND axis, as `orch fit` reads such a table
        c = _positive(table, "C", path, rows)
        d = c / (6.0 * n)
    loss = _positive(table, "loss", path, rows) if need_loss else _optional_loss(table, path, rows)
    run_ids = tuple(f"row{i + 1}" for i in rows)
    if "run_id" in names:
        run_ids = _labels(table, "run_id", path, rows, unique=True)
    groups = _labels(table, "group", path, rows, unique=False) if "group" in names else None
    if groups is not None:  # a run with no group is its own lineage
        groups = tuple(g or r for g, r in zip(groups, run_ids, strict=True))
    return {"N": n, "D": d, "C": c, "loss": loss, "run_id": run_ids, "group": groups}


def _alias(name: str, names: list[str]) -> str:
    """A column's name as read: `orch fit`'s aliases, then the store's summary names."""
    alias = COLUMN_ALIASES.get(name) or _SUMMARY_NAMES.get(name)
    return alias if alias and alias not in names else name


def _selected(table: pa.Table, where: Mapping[str, str], path: Path) -> np.ndarray:
    keep = np.ones(table.num_rows, dtype=bool)
    for column, value in where.items():
        if column not in table.column_names:
            raise SweepError(
                f"{path}: no column {column!r} to select rows by; found "
                f"{', '.join(table.column_names)}"
            )
        cells = ["" if v is None else str(v) for v in table[column].to_pylist()]
        if value not in cells:
            shown = ", ".join(sorted(set(cells))[:10])
            raise SweepError(f"{path}: no row has {column} = {value!r}; it holds {shown}")
        keep &= np.array([cell == value for cell in cells], dtype=bool)
    if not keep.any():
        selection = " and ".join(f"{k} = {v!r}" for k, v in where.items())
        raise SweepError(f"{path}: no rows" + (f" with {selection}" if selection else ""))
    return np.flatnonzero(keep)


def _floats(table: pa.Table, name: str, path: Path) -> np.ndarray:
    column = table[name]
    try:
        return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise SweepError(f"{path}: column {name!r} is not numeric ({column.type}): {err}") from err


def _positive(table: pa.Table, name: str, path: Path, rows: np.ndarray) -> np.ndarray:
    values = _floats(table, name, path)[rows]
    bad = np.flatnonzero(~np.isfinite(values) | (values <= 0))
    if bad.size:
        i = int(bad[0])
        raise SweepError(
            f"{path}: column {name!r}, data row {rows[i] + 1}: {float(values[i]):g} is not a "
            f"finite number > 0 ({bad.size} such row{'s' if bad.size > 1 else ''})"
        )
    return values


def _optional_loss(table: pa.Table, path: Path, rows: np.ndarray) -> np.ndarray | None:
    """A targets table's loss: NaN where missing; a present value must be > 0."""
    if "loss" not in table.column_names:
        return None
    values = _floats(table, "loss", path)[rows]
    bad = np.flatnonzero(~np.isnan(values) & (~np.isfinite(values) | (values <= 0)))
    if bad.size:
        i = int(bad[0])
        raise SweepError(
            f"{path}: column 'loss', data row {rows[i] + 1}: {float(values[i]):g} is not a "
            "finite number > 0"
        )
    return values


def _labels(
    table: pa.Table, name: str, path: Path, rows: np.ndarray, *, unique: bool
) -> tuple[str, ...]:
    cells = table[name].to_pylist()
    values = ["" if cells[i] is None else str(cells[i]) for i in rows]
    if unique:
        seen: dict[str, int] = {}
        for i, v in zip(rows, values, strict=True):
            if not v:
                raise SweepError(f"{path}: column {name!r}, data row {i + 1}: empty")
            if v in seen:
                raise SweepError(
                    f"{path}: column {name!r}: {v!r} in data rows {seen[v]} and {i + 1}"
                )
            seen[v] = i + 1
    return tuple(values)
