"""The study loop: `Study` (ask / tell / run), its record in the store, the candidate
pool, stopping rules, noise, the strategies, and `submit` / `resume` (the one driver path
every plan takes, a grid plan being a study with zero adaptive rounds).
"""

from orchestrator.adaptive.results import RunResult, StudyResult
from orchestrator.adaptive.study import Study, StudyError
from orchestrator.adaptive.submit import SubmitResult, resume, submit

__all__ = ["RunResult", "Study", "StudyError", "StudyResult", "SubmitResult", "resume", "submit"]
