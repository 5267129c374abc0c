"""Scaling-law fitting: laws with intervals, the three Chinchilla approaches, provenance.

numpy/scipy/pyarrow only (no torch), so a laptop can fit. Symbols are defined in
`orchestrator.laws.base`. Approach 3 is `Chinchilla` (and its rivals `Kaplan`,
`Farseer` and `Overtraining`), Approach 2 `fit_isoflop`, Approach 1 `fit_envelope`; `compare_forms`
backtests forms on held-out large-compute runs and `AutoLaw` weighs them by it;
`fit_path` is what `orch fit` calls.

The names below are loaded on first use (PEP 562): the planner and the run loop import
`orchestrator.laws.axis` alone, and loading every form with scipy.stats on the way cost
each driver 1.5 s and about 100 MB before its first run.
"""

import importlib

_HOMES = {
    "AutoLaw": "auto",
    "BootstrapFit": "bootstrap",
    "Chinchilla": "chinchilla",
    "Farseer": "farseer",
    "FitError": "base",
    "FitRecord": "record",
    "FitReport": "fit_report",
    "Kaplan": "kaplan",
    "NotFittedError": "base",
    "Overtraining": "overtraining",
    "Prediction": "base",
    "compare_forms": "compare",
    "fit_envelope": "envelope",
    "fit_isoflop": "isoflop",
    "fit_path": "fit_report",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
