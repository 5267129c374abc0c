"""Fit provenance: which form, options and data gave which parameters, by which code.

A `FitRecord` is plain data saved as JSON beside the experiment
(`<experiment>/fits/<fit_id>.json`). Its `fit_id` is the first 16 hex digits of the
sha256 of its canonical JSON (sorted keys, no NaN) without the creation time, so
refitting the same data with the same options and code gives the same id. The data
hash is the sha256 of the observations sorted by (N, D, L), so row order does not
matter. Non-finite numbers (an unidentified parameter's infinite variance) are stored
as null.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.laws.axis import ComputeAxis
from orchestrator.laws.base import FitError

log = logging.getLogger(__name__)

_DISTRIBUTION = "scaling-orch"
_QUANTILES = (2.5, 5.0, 50.0, 95.0, 97.5)  # percent, kept per parameter for bootstrap fits


@dataclass(frozen=True)
class FitRecord:
    """Provenance of one fit; `to_dict`/`from_dict` round-trip, `save` writes JSON."""

    form: str  # "chinchilla", "kaplan", ...
    options: dict[str, Any]  # the law's constructor options (callables by qualified name)
    params: dict[str, float]  # public parameters, e.g. E, A, B, alpha, beta
    intervals: dict[str, tuple[float | None, float | None]]  # 95% interval per parameter
    interval_method: str  # "covariance" (Huber asymptotics) or "bootstrap" (percentiles)
    objective: float  # Huber objective at the optimum
    n_obs: int  # observations (rows) fitted
    data_hash: str  # sha256 of the sorted observations
    run_ids: tuple[str, ...]  # runs whose results were fitted (empty for bare files)
    covariance: dict[str, Any] | None  # {"names": [...], "matrix": [[...]]}, log-scale names
    bootstrap: dict[str, Any] | None  # {"n_resamples", "n_failed", "seed", "quantiles"}
    warnings: tuple[str, ...]  # why the fit may be unreliable, or cautions
    reliable: bool  # False when a parameter is unconstrained or not identified
    package_version: str
    created_utc: str = field(default="")  # ISO 8601; not part of fit_id
    # How C was counted for N_opt / D_opt / frontier (laws/axis.py): "6nd", or the plan's
    # count, e.g. "chinchilla (C / 6ND 89.4 at N=4.93e+04 to 1.01)". Records written before
    # it existed were all 6 N D.
    axis: str = field(default="6nd")
    # A MAP fit's prior: {"mean": {name: value}, "sd": {name: width in the record's log
    # coordinates}, "source": a fit id or ""}; None for a plain fit (and older records).
    prior: dict[str, Any] | None = field(default=None)
    # Runs sharing weights and seed noise (`fit(groups=)`): {"count": lineages, "corr":
    # within-lineage correlation, "runs": observations}; None when fitted as independent.
    lineages: dict[str, Any] | None = field(default=None)

    @property
    def fit_id(self) -> str:
        """16 hex digits of sha256 over the canonical JSON of the record without its time."""
        body = self.to_dict()
        body.pop("created_utc")
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists for tuples, null for non-finite numbers)."""
        return _jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitRecord:
        """Rebuilds a record from `to_dict` output (for instance read back from JSON).

        Raises:
            FitError: a field is missing or unknown.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - set(data) - {"created_utc", "axis", "prior", "lineages"}
        unknown = set(data) - names
        if missing or unknown:
            raise FitError(
                f"fit record: missing {sorted(missing)}, unknown {sorted(unknown)}",
                hint="was it written by a different version?",
            )
        values = dict(data)
        values["run_ids"] = tuple(values["run_ids"])
        values["warnings"] = tuple(values["warnings"])
        values["intervals"] = {k: tuple(v) for k, v in values["intervals"].items()}
        return cls(**values)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the record as JSON to `path` atomically (temp file, then rename)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("fit %s saved to %s", self.fit_id, target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> FitRecord:
        """Reads a record written by `save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def record_for(law, *, run_ids, data_hash, bootstrap) -> FitRecord:
    """Builds the record of a fitted `HuberLaw` (and optionally its `BootstrapFit`)."""
    n, d, loss, w = law.observations_
    if bootstrap is None:
        intervals, method, summary = law.param_intervals(level=0.95), "covariance", None
    else:
        intervals, method = bootstrap.param_intervals(level=0.95), "bootstrap"
        summary = {
            "n_resamples": bootstrap.n_resamples_,
            "n_failed": bootstrap.n_failed_,
            "seed": bootstrap.seed,
            "quantiles": {
                name: {f"{q:g}": float(np.nanpercentile(s, q)) for q in _QUANTILES}
                for name, s in bootstrap.param_samples.items()
            },
        }
    return FitRecord(
        form=law.form_name,
        options=_options(law.get_params()),
        params=law.params,
        intervals={k: tuple(_jsonable([v.lo, v.hi])) for k, v in intervals.items()},
        interval_method=method,
        objective=law.objective_,
        n_obs=law.n_obs_,
        data_hash=data_hash or hash_observations(n, d, loss, w),
        run_ids=tuple(str(r) for r in run_ids),
        covariance=_record_covariance(law),
        bootstrap=summary,
        warnings=tuple(law.warnings_),
        reliable=bool(law.reliable_),
        package_version=package_version(),
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        axis=axis_label(law.flops_per_token),
        prior=_record_prior(law),
        lineages=_record_lineages(law),
    )


def _record_prior(law) -> dict[str, Any] | None:
    prior = getattr(law, "prior_", None)
    if prior is None:
        return None
    penalty = getattr(law, "penalty_", None)
    sd = dict(prior.sd)
    if penalty is not None:  # the widths the fit used, defaults included (`prior_terms`
        # orders them as the prior's means)
        sd = {name: float(w) for name, w in zip(prior.mean, penalty.sd, strict=True)}
    return {"mean": dict(prior.mean), "sd": sd, "source": prior.source or ""}


def _record_lineages(law) -> dict[str, Any] | None:
    lineages = getattr(law, "lineages_", None)
    if lineages is None or getattr(law, "groups_", None) is None:
        return None
    return {"count": int(lineages.count), "corr": float(lineages.corr), "runs": int(law.n_obs_)}


def axis_label(flops_per_token) -> str:
    """What a law's `flops_per_token` counts: "6nd" for None, a `ComputeAxis`'s own
    description, else the function's qualified name."""
    if flops_per_token is None:
        return "6nd"
    owner = getattr(flops_per_token, "__self__", None)
    if isinstance(owner, ComputeAxis):
        return owner.describe()
    return _options({"f": flops_per_token})["f"]


def hash_observations(n_params, tokens, loss, weights=None) -> str:
    """sha256 hex of the observations sorted by (N, D, L); weights count only if not all 1."""
    columns = [np.asarray(c, dtype=float) for c in (n_params, tokens, loss)]
    if weights is not None and np.any(np.asarray(weights) != 1):
        columns.append(np.asarray(weights, dtype=float))
    rows = np.column_stack(columns)
    rows = rows[np.lexsort(rows.T[::-1])]
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    return hashlib.sha256(text.encode()).hexdigest()


def package_version() -> str:
    """The installed scaling-orch version, or "unknown" when it is not installed."""
    try:
        return version(_DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, no NaN: the text that ids are hashed from."""
    return json.dumps(_jsonable(data), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _record_covariance(law) -> dict[str, Any]:
    """Covariance in the form's record coordinates (e.g. a, b, e, alpha, beta)."""
    form, theta = law.form_, law.theta_
    h = 1e-6 * (1 + np.abs(theta))
    jac = np.empty((len(form.record_names), theta.size))
    for j in range(theta.size):
        step = np.zeros_like(theta)
        step[j] = h[j]
        up = form.record_coords((theta + step)[None])[0]
        down = form.record_coords((theta - step)[None])[0]
        jac[:, j] = (up - down) / (2 * h[j])
    if np.all(np.isfinite(law.cov_)):
        matrix = jac @ law.cov_ @ jac.T
    else:
        matrix = np.full((len(form.record_names),) * 2, np.inf)
    return {"names": list(form.record_names), "matrix": _jsonable(matrix)}


def _options(options: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in options.items():
        if callable(value):
            value = f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', value)}"
        elif isinstance(value, dict) or hasattr(value, "items"):
            value = {k: list(np.atleast_1d(v).astype(float)) for k, v in value.items()}
        out[key] = value
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value
