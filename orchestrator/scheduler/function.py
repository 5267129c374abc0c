"""FunctionBackend: a plain Python function `spec -> loss` as a Backend.

For studies whose "training run" is a user's own code (or a formula): the function runs
when the loop polls (one run per poll call, so capacity and cancellation still work),
and its answer is written to the store as a summary row, just as a worker writes one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchestrator.planning.flops import count_params
from orchestrator.scheduler.base import Backend, RunState, RunStatus
from storage.store import Store
from workers.spec import RunSpec

log = logging.getLogger(__name__)

RunFunction = Callable[[RunSpec], "float | Mapping[str, Any]"]


class FunctionBackend(Backend):
    def __init__(self, store: Store, fn: RunFunction):
        """fn: spec -> final eval loss (nats per token), or a mapping with `eval_loss`
        (and optionally `final_loss`, `wall_s`). An exception fails the run."""
        self.store = store
        self.fn = fn
        self._pending: dict[str, tuple[RunSpec, int]] = {}

    def submit(self, spec: RunSpec, *, attempt: int) -> None:
        self._pending[spec.run_id] = (spec, attempt)

    def poll(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        out = {}
        for run_id in run_ids:
            if run_id not in self._pending:
                continue
            spec, attempt = self._pending.pop(run_id)
            t0 = time.monotonic()
            try:
                answer = self.fn(spec)
            except Exception as err:  # noqa: BLE001 - the user's code: any error fails the run
                log.warning("run %s: %s: %s", run_id, type(err).__name__, err)
                out[run_id] = RunStatus(RunState.FAILED, detail=f"{type(err).__name__}: {err}")
                continue
            row = summary_row(spec, answer, attempt=attempt, wall_s=time.monotonic() - t0)
            self.store.write_run_summary(row)
            state = RunState(row["status"])
            out[run_id] = RunStatus(state, outcome=row)
        return out

    def cancel(self, run_id: str, *, reason: str) -> None:
        self._pending.pop(run_id, None)

    def wait(self, timeout_s: float) -> bool:
        return True  # a submitted run runs at the next poll: nothing to wait for

    def capacity(self) -> int | None:
        return None


def summary_row(spec: RunSpec, answer, *, attempt: int = 0, wall_s: float = 0.0) -> dict:
    """The store's summary row for a run whose loss came from outside a worker."""
    if isinstance(answer, Mapping):
        eval_loss = float(answer.get("eval_loss", answer.get("final_loss", math.nan)))
        final_loss = float(answer.get("final_loss", eval_loss))
        wall_s = float(answer.get("wall_s", wall_s))
    else:
        eval_loss = final_loss = float(answer)
    counts = count_params(spec.shape)
    n = counts.non_embedding_params
    per_token = spec.flops_per_token or 6.0 * n
    return {
        "run_id": spec.run_id,
        "attempt": attempt,
        "status": (
            RunState.FINISHED if math.isfinite(eval_loss) and eval_loss > 0 else RunState.DIVERGED
        ).value,
        "steps": spec.steps,
        "tokens": spec.tokens,
        "final_loss": final_loss,
        "eval_loss": eval_loss,
        "wall_s": wall_s,
        "n_params": n,
        "n_params_total": counts.params_total,
        "flops": per_token * spec.tokens,
        "flops_6nd": 6.0 * n * spec.tokens,
        "gpu_hours": spec.world_size * wall_s / 3600,
        "n_layer": spec.shape.n_layer,
        "d_model": spec.shape.d_model,
        "world_size": spec.world_size,
        "zero_stage": spec.zero_stage,
    }
