"""The study loop: `Study` (ask / tell / run), its record in the store, the candidate
pool, targets (C* and runs to predict), stopping rules, noise, the strategies, and
`submit` / `resume` (the one driver path every plan takes, a grid plan being a study with
zero adaptive rounds); `replay`, the strategies replayed on a finished sweep (`orch
replay`).
"""

from orchestrator.adaptive.replay import ReplayResult, replay
from orchestrator.adaptive.results import RunResult, StudyResult
from orchestrator.adaptive.study import Study, StudyError
from orchestrator.adaptive.submit import SubmitResult, resume, submit
from orchestrator.adaptive.sweep import load_sweep, load_targets

__all__ = [
    "ReplayResult",
    "RunResult",
    "Study",
    "StudyError",
    "StudyResult",
    "SubmitResult",
    "load_sweep",
    "load_targets",
    "replay",
    "resume",
    "submit",
]
