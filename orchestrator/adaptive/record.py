"""A study's decisions in its store (`<experiment>/study.json`), so a restart repeats them.

The record holds every round's run ids in the order they were asked for, the target's
estimate after each round, the stop reason once there is one, and the predicted final
loss of each run stopped early (the outcome the study's fits use for it). It is rewritten whole
(atomic on every filesystem the store supports) each time it changes; only the driver
writes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from storage.errors import StoreError
from storage.fsio import read_bytes, write_bytes_atomic
from storage.store import Store

_FILE = "study.json"


@dataclass(frozen=True)
class Round:
    index: int  # 0: the seed grid (and noise repeats); 1, 2, ...: adaptive rounds
    run_ids: tuple[str, ...]
    strategy: str  # "seed" for round 0


@dataclass(frozen=True)
class Estimate:
    """The target after a refit: what the stopping rule and the benchmarks read."""

    round: int
    n_runs: int  # finished runs in the fit
    spent_flops: float  # ledger's spent FLOPs at the time
    values: dict[str, list[float]]  # quantity -> [estimate, lo, hi]
    noise: float  # std of log-loss used by the strategy


@dataclass(frozen=True)
class Predicted:
    """A run stopped early (orchestrator/adaptive/early_stop.py): its final loss as its
    curve predicted it when it stopped, the outcome the study's fits use for it."""

    loss: float  # predicted final loss, nats per token (held-out, as a summary's eval_loss)
    lo: float  # the interval at `level`
    hi: float
    level: float
    weight: float  # its precision weight in the fits, (0, 1]: 1 is a measured run's
    step: int  # the step it had reported when stopped
    reason: str


@dataclass
class StudyRecord:
    rounds: list[Round] = field(default_factory=list)
    history: list[Estimate] = field(default_factory=list)
    stop: str | None = None
    predicted: dict[str, Predicted] = field(default_factory=dict)  # run_id -> its outcome

    @classmethod
    def load(cls, store: Store) -> StudyRecord:
        raw = read_bytes(store.fs, f"{store.root}/{_FILE}")
        if raw is None:
            return cls()
        try:
            data = json.loads(raw)
            return cls(
                rounds=[
                    Round(r["index"], tuple(r["run_ids"]), r["strategy"]) for r in data["rounds"]
                ],
                history=[Estimate(**h) for h in data["history"]],
                stop=data["stop"],
                predicted={k: Predicted(**v) for k, v in data.get("predicted", {}).items()},
            )
        except (ValueError, KeyError, TypeError) as err:
            raise StoreError(
                f"cannot read {store.root}/{_FILE}: {err}",
                hint="the study's decisions are lost; start it in a fresh experiment",
            ) from err

    def save(self, store: Store) -> None:
        data = {
            "rounds": [asdict(r) for r in self.rounds],
            "history": [asdict(h) for h in self.history],
            "stop": self.stop,
        }
        if self.predicted:  # a study without early stopping keeps its file as it was
            data["predicted"] = {k: asdict(v) for k, v in self.predicted.items()}
        write_bytes_atomic(
            store.fs, f"{store.root}/{_FILE}", json.dumps(data, indent=1, sort_keys=True).encode()
        )
