"""RunSpec: everything one training run needs, frozen, typed and hashed.

This module is pure Python (no torch) so the orchestrator can build and hash specs
without importing the training stack.

Identity: `run_id` is the first 16 hex digits of sha256 over the canonical JSON of the
spec (sorted keys, no NaN), leaving out only the fields in `NOT_IDENTITY`, which cannot
change a stored metric or checkpoint. Submitting the same spec twice is one run.

Fields added after the first release are marked `_added(...)`: at their default they
are left out of the hash, so every run_id computed before they existed stays the same
(a store written then is still resumed by id), and JSON written before them still loads.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from storage.errors import OrchError

PosEncoding = Literal["rope", "learned"]
ScheduleKind = Literal["cosine", "wsd", "constant"]
DecayShape = Literal["linear", "cosine", "1-sqrt"]
Precision = Literal["fp32", "bf16"]
SourceKind = Literal["bytes", "synthetic", "tokens"]
TokenDtype = Literal["uint16", "uint32"]
SHARD_SUFFIXES = (".npy", ".bin", ".parquet")  # token shard files workers/data.py reads
SinkKind = Literal["tensorboard", "mlflow", "wandb"]
SINK_KINDS = ("tensorboard", "mlflow", "wandb")
SINK_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # imported

_ADDED = "orch.added"  # field metadata key: added later, hashed only when not at default


def _added(default: Any) -> Any:
    return field(default=default, metadata={_ADDED: True})


class SpecError(OrchError, ValueError):
    """A RunSpec field is out of range or inconsistent."""


@dataclass(frozen=True, kw_only=True)
class Shape:
    """The transformer's shape. See workers/model.py for the exact architecture."""

    n_layer: int
    d_model: int
    n_head: int
    vocab: int = 256  # tokens; 256 for byte-level data
    seq_len: int = 64  # tokens per sequence (context length)
    ffw: int = 0  # MLP hidden width; 0 means 4 * d_model
    pos: PosEncoding = "rope"
    tied: bool = True  # output head shares the token embedding matrix

    @property
    def ffw_width(self) -> int:
        return self.ffw or 4 * self.d_model

    def validate(self) -> None:
        for name in ("n_layer", "d_model", "n_head", "vocab", "seq_len"):
            if getattr(self, name) <= 0:
                raise SpecError(f"shape.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise SpecError(
                f"shape.d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        if self.pos == "rope" and (self.d_model // self.n_head) % 2:
            raise SpecError("RoPE needs an even head dimension (d_model / n_head)")


@dataclass(frozen=True, kw_only=True)
class LrSchedule:
    """Learning-rate schedule; fractions are of the run's total optimizer steps.

    The formulas are in workers/schedule.py.
    """

    kind: ScheduleKind = "cosine"
    peak_lr: float = 3e-3
    warmup_frac: float = 0.05
    cooldown_frac: float = 0.2  # wsd only: the final decay phase
    min_lr_frac: float = 0.1  # floor as a fraction of peak_lr (cosine end, wsd end)
    # wsd only: how the decay phase falls from peak to floor. "1-sqrt" is the shape
    # Hägele et al. 2024 (sec. 3) found best for cooldowns; "linear" is MiniCPM's.
    decay_shape: DecayShape = _added("linear")

    def warmup_steps(self, total_steps: int) -> int:
        """Optimizer steps of linear warmup."""
        return round(self.warmup_frac * total_steps)

    def decay_start(self, total_steps: int) -> int:
        """wsd: the first optimizer step of the decay phase (0-based)."""
        return total_steps - round(self.cooldown_frac * total_steps)

    def validate(self) -> None:
        if not self.peak_lr > 0:
            raise SpecError(f"schedule.peak_lr must be positive, got {self.peak_lr}")
        for name in ("warmup_frac", "cooldown_frac", "min_lr_frac"):
            if not 0 <= getattr(self, name) <= 1:
                raise SpecError(f"schedule.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.decay_shape not in ("linear", "cosine", "1-sqrt"):
            raise SpecError(
                f"schedule.decay_shape must be linear, cosine or 1-sqrt, got {self.decay_shape!r}"
            )


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Where training tokens come from (workers/data.py).

    - "bytes": the text files under `root` read as bytes (vocab 256). `root` is symbolic
      where it can be ("stdlib" = this Python's standard library source tree) so that the
      same spec hashes the same on every machine. Held out: `eval_frac` of the files.
    - "synthetic": a first-order Markov chain over the model's vocab whose transition rows
      are drawn from Dirichlet(`markov_alpha`) by `markov_seed`; its entropy rate is known
      exactly, so the irreducible loss is. Held out: a separate stream of the same chain.
    - "tokens": pre-tokenized shards under `root` (a file or a directory): `.npy` (with a
      NumPy header, or headerless like OLMo's memmaps), raw `.bin` of `token_dtype`, or
      `.parquet` with token ids in `column` (ints, or lists of ints per document). Held
      out: the shards under `eval_root` if given; else the shards named as validation
      (nanoGPT's `val.bin` beside `train.bin`; `val_*`, `validation-*`, ...); else the
      last `eval_frac` of every shard (of a Parquet shard: its last tokens in row order).
      Held-out tokens never reach training.
      `root` and `eval_root` may be `s3://bucket/prefix` URIs, S3 options in the query
      string (`?endpoint_override=host:port&scheme=http`), credentials from the AWS
      environment. Listing and validation names follow the same rules as on disk, and no
      rank downloads a whole shard: `.bin`/`.npy` windows are ranged reads, Parquet is
      read by row group.
      `eod_id` (Parquet lists only): each document's list is followed by this id, as
      `orch prepare` ends every document of its `.bin` shards (the last document of a
      shard too; empty documents add nothing); -1 = none, documents simply run on. A
      Parquet shard is read one row group at a time, the few last used kept decoded, so
      a rank's memory does not grow with the shard.
      `content_hash` (workers/data_hash.py) is the shards' content, filled in when the
      plan is loaded: a changed corpus changes every run id, and the worker refuses data
      that no longer matches it.
    """

    source: SourceKind = "bytes"
    root: str = "stdlib"
    eval_frac: float = 0.05  # fraction held out for evaluation (files or shard tails)
    token_dtype: TokenDtype = _added("uint16")  # tokens, .bin shards: element type
    column: str = _added("tokens")  # tokens, .parquet shards: the token-id column
    eval_root: str = _added("")  # tokens: held-out shards kept apart ("" = see above)
    markov_alpha: float = _added(0.5)  # synthetic: Dirichlet concentration; lower = less entropy
    markov_seed: int = _added(0)  # synthetic: which chain; the run's seed only orders samples
    content_hash: str = _added("")  # tokens: 64 hex sha256 of the shards ("" = not checked)
    eod_id: int = _added(-1)  # tokens, .parquet lists: token id after each document; -1 = none

    def validate(self) -> None:
        if self.source not in ("bytes", "synthetic", "tokens"):
            raise SpecError(f"data.source must be bytes, synthetic or tokens, got {self.source!r}")
        if not 0 < self.eval_frac < 1:
            raise SpecError(f"data.eval_frac must be in (0, 1), got {self.eval_frac}")
        if not self.markov_alpha > 0:
            raise SpecError(f"data.markov_alpha must be positive, got {self.markov_alpha}")
        if self.token_dtype not in ("uint16", "uint32"):
            raise SpecError(f"data.token_dtype must be uint16 or uint32, got {self.token_dtype!r}")
        if self.eod_id < -1 or (self.eod_id != -1 and self.source != "tokens"):
            raise SpecError(
                f"data.eod_id must be a token id (>= 0) on a tokens source, or -1 for none, "
                f"got {self.eod_id} on {self.source!r}"
            )
        if self.content_hash and (
            self.source != "tokens"
            or len(self.content_hash) != 64
            or self.content_hash.strip("0123456789abcdef")
        ):
            raise SpecError(
                "data.content_hash must be 64 lowercase hex digits, on a tokens source only, "
                f"got {self.content_hash!r} on {self.source!r}"
            )


@dataclass(frozen=True, kw_only=True)
class SinkSpec:
    """A tool rank 0 also sends its metric rows to (workers/sinks.py); Parquet stays the
    record, so a sink never changes what a run is.

    - "tensorboard": event files in `dir` ("" = runs/<id>/tensorboard in a local store);
    - "mlflow": one MLflow run per run id at `tracking_uri`, in experiment `experiment`;
    - "wandb": one W&B run per run id in `project`, grouped by `experiment`; `mode`
      "offline" writes under `dir` ("" = runs/<id>/ in a local store), "online" syncs.
    """

    kind: SinkKind
    dir: str = ""
    tracking_uri: str = ""
    project: str = ""
    mode: str = "offline"
    experiment: str = ""  # the study's name: MLflow experiment, W&B group

    def validate(self) -> None:
        if self.kind not in SINK_KINDS:
            raise SpecError(f"sink kind must be one of {', '.join(SINK_KINDS)}, got {self.kind!r}")
        if self.kind == "mlflow" and not self.tracking_uri:
            raise SpecError("an mlflow sink needs a tracking_uri (e.g. sqlite:///mlflow.db)")
        if self.mode not in ("offline", "online"):
            raise SpecError(f"sink mode must be offline or online, got {self.mode!r}")


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    shape: Shape
    tokens: int  # D, training tokens (not steps)
    global_batch: int = 16  # sequences per optimizer step, across all ranks
    micro_batch: int = 16  # sequences per rank per forward pass
    schedule: LrSchedule = field(default_factory=LrSchedule)
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    zero_stage: Literal[0, 1, 2, 3] = 0
    offload_optimizer: bool = False
    precision: Precision = "fp32"
    world_size: int = 1  # data-parallel ranks (one accelerator or CPU slot each)
    eval_every_steps: int = 0  # 0: evaluate only at the end
    eval_batches: int = 8  # micro-batches per evaluation
    checkpoint_every_steps: int = 0  # 0: checkpoint only at the end
    log_every_steps: int = 10
    # Training FLOPs per token by the plan's counting method (orchestrator/planning/flops.py), for
    # the metrics' FLOP column; 0 means 6 x non-embedding params. A function of the shape
    # and the method, so it is bookkeeping, not identity.
    flops_per_token: float = 0.0
    # Recompute each block's activations in the backward pass: memory for compute. The
    # loss curve is the same, but peak memory and throughput (stored metrics) are not.
    activation_checkpointing: bool = _added(False)
    # Keep every interval checkpoint instead of only the latest, so that WSD cooldowns can
    # branch from them (see `wsd_branch`). Changes which files stay, not what they hold.
    keep_checkpoints: bool = _added(False)
    # A WSD cooldown branch: start from run `branch_from`'s checkpoint at optimizer step
    # `branch_step` (weights, optimizer state) instead of from scratch. "" = no branch.
    branch_from: str = _added("")
    branch_step: int = _added(0)  # optimizer steps; the parent's checkpoint to start from
    # Where rank 0 also sends its metric rows (TensorBoard, MLflow, W&B): bookkeeping.
    sinks: tuple[SinkSpec, ...] = _added(())

    # Bookkeeping that cannot change what is trained: the loss curve and the checkpoints
    # of two specs differing only here are the same.
    NOT_IDENTITY: ClassVar[frozenset[str]] = frozenset(
        {
            "checkpoint_every_steps",
            "log_every_steps",
            "flops_per_token",
            "keep_checkpoints",
            "sinks",
        }
    )

    def __post_init__(self) -> None:
        self.shape.validate()
        self.schedule.validate()
        self.data.validate()
        for sink in self.sinks:
            sink.validate()
        if self.tokens <= 0:
            raise SpecError(f"tokens must be positive, got {self.tokens}")
        if self.world_size <= 0 or self.micro_batch <= 0 or self.global_batch <= 0:
            raise SpecError("world_size, micro_batch and global_batch must be positive")
        if self.global_batch % (self.micro_batch * self.world_size):
            raise SpecError(
                f"global_batch ({self.global_batch}) must be a multiple of "
                f"micro_batch x world_size ({self.micro_batch} x {self.world_size})"
            )
        if self.zero_stage not in (0, 1, 2, 3):
            raise SpecError(f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.data.source == "bytes" and self.shape.vocab < 256:
            raise SpecError(f"byte data needs shape.vocab >= 256, got {self.shape.vocab}")
        if self.branch_from or self.branch_step:
            self._validate_branch()

    def _validate_branch(self) -> None:
        if not self.branch_from or self.branch_step <= 0:
            raise SpecError(
                "a branch needs both branch_from (a run_id) and branch_step (> 0), got "
                f"{self.branch_from!r} and {self.branch_step}"
            )
        if self.schedule.kind != "wsd":
            raise SpecError(f"only wsd runs can branch, got schedule.kind {self.schedule.kind!r}")
        warmup = self.schedule.warmup_steps(self.steps)
        decay = self.schedule.decay_start(self.steps)
        if not warmup <= self.branch_step <= decay:
            raise SpecError(
                f"branch_step {self.branch_step} must lie in this run's stable phase "
                f"(steps {warmup} to {decay} of {self.steps})",
                hint="RunSpec.wsd_branch builds a consistent branch",
            )

    @property
    def grad_accum(self) -> int:
        """Micro-batches each rank accumulates per optimizer step."""
        return self.global_batch // (self.micro_batch * self.world_size)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.shape.seq_len

    @property
    def steps(self) -> int:
        """Optimizer steps; the run trains on steps * tokens_per_step >= tokens tokens."""
        return max(1, -(-self.tokens // self.tokens_per_step))

    @functools.cached_property  # a frozen spec never changes; the driver asks often
    def run_id(self) -> str:
        identity = _identity(self)
        for name in self.NOT_IDENTITY:
            identity.pop(name, None)
        return hashlib.sha256(_canonical_json(identity).encode()).hexdigest()[:16]

    def wsd_branch(self, *, at_step: int, decay_steps: int) -> RunSpec:
        """The cooldown of this WSD run taken at optimizer step `at_step`, `decay_steps` long.

        The branch trains `at_step + decay_steps` steps in all: it starts from this run's
        checkpoint at `at_step` and follows this run's schedule up to there (same warmup,
        same peak), then decays over `decay_steps` to the floor. One long run with kept
        checkpoints so yields a finished run at each of several token counts.

        Raises:
            SpecError: this run is not WSD, `at_step` is outside its stable phase, or no
                checkpoint is kept at `at_step`.
        """
        sched = self.schedule
        warmup, stable_end = sched.warmup_steps(self.steps), sched.decay_start(self.steps)
        if sched.kind != "wsd":
            raise SpecError(f"only wsd runs have cooldown branches, this one is {sched.kind!r}")
        if not warmup <= at_step <= stable_end or decay_steps <= 0:
            raise SpecError(
                f"a branch must start in the stable phase (steps {warmup} to {stable_end}) "
                f"and decay for > 0 steps, got at_step={at_step}, decay_steps={decay_steps}"
            )
        every = self.checkpoint_every_steps
        if not (self.keep_checkpoints and every and at_step % every == 0):
            raise SpecError(
                f"run {self.run_id} keeps no checkpoint at step {at_step}",
                hint="set keep_checkpoints and a checkpoint_every_steps that divides at_step",
            )
        total = at_step + decay_steps
        # Fractions of the branch's own length that reproduce the parent's warmup steps
        # and put the decay exactly at `at_step` (round() undoes the float division).
        schedule = dataclasses.replace(
            sched, warmup_frac=warmup / total, cooldown_frac=decay_steps / total
        )
        return dataclasses.replace(
            self,
            tokens=total * self.tokens_per_step,
            schedule=schedule,
            branch_from=self.run_id,
            branch_step=at_step,
        )

    def to_dict(self) -> dict[str, Any]:
        return _as_data(self)

    def to_json(self) -> str:
        # Not cached: a cached copy (with the instance dict it outgrows) costs ~2.3 KB per
        # spec, 23 MB of a 10,000-run driver, to save one ~30 us encoding per launch.
        return _canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunSpec:
        raw = dict(raw)
        return cls(
            shape=Shape(**raw.pop("shape")),
            schedule=LrSchedule(**raw.pop("schedule", {})),
            data=DataSpec(**raw.pop("data", {})),
            sinks=tuple(SinkSpec(**s) for s in raw.pop("sinks", ())),
            **raw,
        )

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.from_dict(json.loads(text))


def _as_data(obj: Any) -> Any:
    """`dataclasses.asdict`, without its deep copies of every leaf (a spec is frozen and
    its leaves are numbers and strings; the driver converts a spec at each launch)."""
    if isinstance(obj, _LEAVES):  # most calls: answered before any dataclass machinery
        return obj
    if dataclasses.is_dataclass(obj):
        return {name: _as_data(getattr(obj, name)) for name in _field_names(type(obj))}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_as_data(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _as_data(v) for k, v in obj.items()}
    return obj


_LEAVES = (str, int, float, bool, type(None))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _identity(obj: Any) -> Any:
    """`obj` as JSON-able data, without added fields that are still at their default."""
    if not dataclasses.is_dataclass(obj):
        return obj
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get(_ADDED) and value == f.default:
            continue
        out[f.name] = _identity(value)
    return out


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
