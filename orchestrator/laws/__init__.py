"""Scaling-law fitting: laws with intervals, the three Chinchilla approaches, provenance.

numpy/scipy/pyarrow only (no torch), so a laptop can fit. Symbols are defined in
`orchestrator.laws.base`. Approach 3 is `Chinchilla` (and its rivals `Kaplan`,
`Farseer` and `Overtraining`), Approach 2 `fit_isoflop`, Approach 1 `fit_envelope`; `compare_forms`
backtests forms on held-out large-compute runs and `AutoLaw` weighs them by it;
`fit_path` is what `orch fit` calls.
"""

from orchestrator.laws.auto import AutoLaw
from orchestrator.laws.base import FitError, NotFittedError, Prediction
from orchestrator.laws.bootstrap import BootstrapFit
from orchestrator.laws.chinchilla import Chinchilla
from orchestrator.laws.compare import compare_forms
from orchestrator.laws.envelope import fit_envelope
from orchestrator.laws.farseer import Farseer
from orchestrator.laws.fit_report import FitReport, fit_path
from orchestrator.laws.isoflop import fit_isoflop
from orchestrator.laws.kaplan import Kaplan
from orchestrator.laws.overtraining import Overtraining
from orchestrator.laws.record import FitRecord

__all__ = [
    "AutoLaw",
    "BootstrapFit",
    "Chinchilla",
    "Farseer",
    "FitError",
    "FitRecord",
    "FitReport",
    "Kaplan",
    "NotFittedError",
    "Overtraining",
    "Prediction",
    "compare_forms",
    "fit_envelope",
    "fit_isoflop",
    "fit_path",
]
