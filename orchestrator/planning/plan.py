"""Plans: the frozen dataclasses a validated plan is made of (`parse.py` reads YAML into
them, naming the file, line and key of the first problem).

Two ways to say which runs to make (exactly one per plan):
- `grid`: an explicit IsoFLOP grid, model shapes x compute levels, each shape at every
  level or at the levels it names (plans/local.yaml);
- `budget` + `seed_grid`: a compute budget the planner turns into log-spaced compute
  levels with model sizes around a prior N_opt(C), holding a share back for adaptive
  rounds (plans/chinchilla.yaml). `orchestrator/planning/expand.py` expands both into runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from storage.store import experiment_uri
from workers.spec import DataSpec, LrSchedule, SinkSpec

# The loss the study's reported fit is made in: the held-out loss in nats per token, or in
# bits per byte of the held-out text, which compares across tokenizers (workers/metrics.py).
FitLoss = Literal["nats_per_token", "bits_per_byte"]
FIT_LOSSES: tuple[FitLoss, ...] = ("nats_per_token", "bits_per_byte")


@dataclass(frozen=True)
class Retries:
    preemption: int = 3  # restarts after a lost node or actor
    failure: int = 1  # restarts after an exception in the run
    # A running run whose progress (its latest step) has not moved for this long is
    # stopped and counted as a failure: a hung collective or a wedged node otherwise holds
    # its GPUs, and the study, forever. Generous by default: a first step may compile.
    stall_s: float = 3600.0


@dataclass(frozen=True, kw_only=True)
class GridSize:
    n_layer: int
    d_model: int
    n_head: int
    world_size: int  # data-parallel ranks for runs of this size
    zero_stage: int  # ZeRO stage for runs of this size
    # The compute levels this size runs at; None: every level. An IsoFLOP profile needs
    # sizes on both sides of its level's optimum, which moves with compute, so a grid
    # usually gives each level its own band of sizes rather than one band for all.
    levels: tuple[float, ...] | None = None

    def runs_at(self, level: float) -> bool:
        """Whether this size runs at compute level `level` (one of the grid's)."""
        return self.levels is None or level in self.levels


@dataclass(frozen=True, kw_only=True)
class Grid:
    compute_flops: tuple[float, ...]  # IsoFLOP levels, total training FLOPs per run
    sizes: tuple[GridSize, ...]

    def sizes_at(self, level: float) -> tuple[GridSize, ...]:
        """The sizes that run at compute level `level` (one of `compute_flops`)."""
        return tuple(s for s in self.sizes if s.runs_at(level))


@dataclass(frozen=True, kw_only=True)
class SeedGrid:
    min_flops: float  # smallest compute level, FLOPs per run
    max_flops: float | None  # largest level; None: the largest the budget allows
    levels: int  # compute levels, log-spaced
    sizes_per_level: int  # model sizes per level, log-spaced around the prior N_opt(C)
    size_spread: float  # largest / smallest model size at a level
    tokens_per_param: float  # prior: D_opt = k N_opt, so N_opt(C) = sqrt(C / (6 k))
    shape_rule: str  # "default" (widths of 64) | "tiny" (widths of 16, for CPU tests)
    prior_fit: dict[str, float] | None  # a previous Chinchilla fit's parameters, else None


@dataclass(frozen=True, kw_only=True)
class Budget:
    flops: float  # total training FLOPs of the study
    adaptive_share: float  # fraction held back for adaptive rounds


@dataclass(frozen=True, kw_only=True)
class Hardware:
    accelerator: str  # a key of orchestrator.planning.hardware.ACCELERATORS
    gpus_per_node: int
    max_gpus_per_run: int
    mfu: float  # expected model FLOPs utilisation, for GPU-hour estimates
    memory_safety: float  # fraction of device memory a run may fill
    max_wall_hours: float | None  # add GPUs until a run fits in this wall time
    allow_offload: bool  # optimizer state in host memory when nothing else fits


@dataclass(frozen=True, kw_only=True)
class Train:
    hparams: str  # "fixed" | "deepseek" | "steplaw" (orchestrator/planning/hparams.py)
    global_batch: int  # sequences per optimizer step ("fixed" rule)
    micro_batch: int | None  # sequences per rank per forward pass; None: sized by the planner
    schedule: LrSchedule  # peak_lr is used by the "fixed" rule
    weight_decay: float
    grad_clip: float
    seed: int
    precision: str
    eval_every_steps: int
    eval_batches: int
    log_every_steps: int
    checkpoint_every_steps: int
    zero_stage: int  # default for grid sizes
    world_size: int  # default for grid sizes


@dataclass(frozen=True, kw_only=True)
class Resources:
    cpus_per_rank: int  # CPU cores given to each rank
    gpus_per_rank: int  # 0 on CPU-only machines, else 1
    address: str | None  # Ray address; None starts an embedded local Ray


@dataclass(frozen=True, kw_only=True)
class BackendChoice:
    kind: str  # "ray" (real training) | "simulated" (a ground-truth law, no training, no Ray)
    #          | "ray-simulated" (Ray actors on the cluster, each answering from the law)
    slots: int | None  # simulated: rank slots of the pretend cluster; None unlimited
    flops_per_s: float  # simulated: speed of one run, FLOP/s (sets run durations; capped at
    #                     60 s per run for ray-simulated)
    preempt_rate: float  # simulated: probability an attempt is lost
    fail_rate: float  # simulated: probability an attempt raises
    noise: float  # simulated: seed-to-seed std of log-loss
    # simulated: write each run's loss curve (False: its summary only, for studies of
    # thousands of runs that fit final losses alone)
    curves: bool = True


@dataclass(frozen=True, kw_only=True)
class EarlyStop:
    """`adaptive.early_stop`: stop a running run once its final loss is known from its
    curve so far (orchestrator/adaptive/early_stop.py); its predicted loss is its outcome."""

    # Stop a run whose predicted final loss's 90% interval is at most this wide, as
    # (hi - lo) / estimate ("pinned down"); 0: never for this reason. 2%, +-1%: about
    # a final loss's own seed noise (0.5-1.5% on real CPU runs, bench/curves_real.py), so
    # a stopped run is known about as well as finishing it would tell. At 1% the curve
    # law's interval got there only at 65-93% of a run, and on bench/early_stop.py's 10
    # seeds the saving was 26% (3 seeds spent more than without stopping); at 2%, 45%.
    rel_width: float = 0.02
    # Stop a run whose predicted final loss's interval lies above the fitted frontier's
    # L_opt at its compute (the top of that interval) by more than `margin`. Off unless
    # asked: the active strategy picks such runs for what their distance from the optimum
    # tells the fit, and stopping them cost simulated studies more compute, not less
    # (bench/early_stop.py).
    off_frontier: bool = False
    margin: float = 0.02  # fraction of L_opt
    # Judge a run only after this fraction of its steps: before, its curve says little.
    min_progress: float = 0.2


@dataclass(frozen=True, kw_only=True)
class Adaptive:
    """Adaptive rounds after the seed grid (orchestrator/adaptive/)."""

    strategy: str  # "active" | "isoflop" | "random" | "grid"
    # C*, the compute whose optimum the study must pin down, FLOPs; None: only target runs
    target_flops: float | None
    quantity: str  # "loss_opt" | "n_opt" | "both": what must be known at C*
    level: float  # confidence level of the target's interval (0.9: a 90% interval)
    rel_width: float  # stop once (hi - lo) / estimate of the target is at most this; 0: never
    max_rounds: int  # stop after this many adaptive rounds
    batch: int  # runs per adaptive round
    repeat_seeds: int  # extra seeds of the cheapest seed run, to measure seed-to-seed noise
    max_run_flops: float | None  # the largest run a round may add, FLOPs; None: 2 x seed top
    seed: int  # randomness of the strategy (random picks)
    # Runs whose loss the study must predict (`target.runs`): (N non-embedding params,
    # D tokens) each, e.g. the production run being planned; () for none.
    target_runs: tuple[tuple[float, float], ...] = ()
    # The law the target is read with (estimates, the stopping rule, the history):
    # "chinchilla", the fit the strategies choose from, or "auto" (`AutoLaw`, every form
    # weighed by backtest, as `orch fit` and `orch status` read a study).
    target_form: str = "chinchilla"
    # With target_form "auto": AutoLaw's least form error per decade of compute beyond the
    # fitted runs, a share of L (`auto.FORM_ERROR_FLOOR`); None: AutoLaw's own default.
    form_error_floor: float | None = None
    early_stop: EarlyStop | None = None  # None: every run trains to its end


@dataclass(frozen=True, kw_only=True)
class Plan:
    path: str
    text: str  # the file as submitted, relative paths made absolute; the experiment's copy
    name: str
    store: str  # experiment root URI; this plan's experiment is <store>/<name>
    flops_method: str  # "6nd" | "6nd_total" | "chinchilla": how run compute is counted
    grid: Grid | None
    budget: Budget | None
    seed_grid: SeedGrid | None
    hardware: Hardware
    shape_defaults: dict[str, Any]  # vocab, seq_len, pos, tied
    data: DataSpec
    train: Train
    resources: Resources
    retries: Retries
    backend: BackendChoice
    report_flops: tuple[float, ...]  # budgets for the frontier table after the fit
    adaptive: Adaptive | None = None  # None: the seed runs only, no adaptive rounds
    sinks: tuple[SinkSpec, ...] = ()  # `logging.sinks`: where rank 0 also sends its rows
    fit_loss: FitLoss = "nats_per_token"  # `fit.loss`: the loss the fit after the runs uses

    @property
    def experiment_uri(self) -> str:
        return experiment_uri(self.store, self.name)  # keeps an s3:// URI's ?options last
