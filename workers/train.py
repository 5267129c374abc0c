"""One training run on DeepSpeed: the same code for a CPU test and a GPU node.

Every rank calls `train(spec, ...)`; rank 0 writes the metrics and the run's summary row
to the store. Runnable alone, without Ray:

    python -m workers.train spec.json --store ./experiments/x

which starts `spec.world_size` local ranks itself, or, under `torchrun`, is one of the
ranks torchrun started (`torchrun --nproc-per-node 8 -m workers.train spec.json ...`).

Each optimizer step: the lr is set from the schedule (a function of the step alone), each
rank runs `grad_accum` micro-batches (DeepSpeed averages gradients over micro-batches and
ranks, clips, and steps at the last), and the step's loss is averaged over all ranks, so
every rank takes the same decision on divergence. A NaN/inf loss, or one more than
`_DIVERGED_ABOVE_MIN_NATS` above the lowest step loss so far, ends the run as "diverged":
the metrics up to the last good step are kept, no checkpoint is written from the bad state.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.fs as pafs
import torch

from storage.store import Store
from workers import checkpoint, distributed
from workers.data import open_source
from workers.errors import WorkerError
from workers.logs import attempt_log
from workers.metrics import MetricsLog, bits_per_byte
from workers.model import GPT
from workers.schedule import learning_rate
from workers.sinks import Sinks
from workers.spec import RunSpec

__all__ = ["RunOutcome", "main", "train"]

# Named, not __name__: run as `python -m workers.train` this module is __main__ (and
# __mp_main__ in its spawned ranks), and its records would miss the attempt's log file,
# which takes the `workers` loggers (workers/logs.py).
log = logging.getLogger("workers.train")

# A step loss this far above the run's best step loss (nats/token) is a blow-up, not noise:
# consecutive step losses of our tiny CPU runs differ by hundredths of a nat, and on bytes
# 2 nats above a loss of 3 is most of the way back to the uniform 5.5.
_DIVERGED_ABOVE_MIN_NATS = 2.0


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    attempt: int
    status: str  # "finished" | "diverged"
    steps: int  # optimizer steps done (good ones, if diverged)
    tokens: int  # training tokens seen
    final_loss: float  # nats/token, train loss over the last log interval
    eval_loss: float  # nats/token, held-out loss at the end (the last good one if diverged)
    wall_s: float  # seconds this attempt took
    # eval_loss in bits per byte of the held-out text; None where the data has no bytes
    # per token (synthetic, token shards without a manifest).
    eval_bpb: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _ds_config(spec: RunSpec) -> dict:
    zero: dict = {"stage": spec.zero_stage}
    if spec.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_batch_size": spec.global_batch,
        "train_micro_batch_size_per_gpu": spec.micro_batch,
        "gradient_accumulation_steps": spec.grad_accum,
        "gradient_clipping": spec.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": spec.precision == "bf16"},
        "steps_per_print": 2**62,  # we log ourselves
        "wall_clock_breakdown": False,
        # torch's AdamW, not DeepSpeed's: theirs are JIT-built C++ ops (a minute, and a
        # compiler, on first use), also when the optimizer state is offloaded.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
    }


def _optimizer(model: torch.nn.Module, spec: RunSpec) -> torch.optim.Optimizer:
    # Decay matrices only; norms' weights are scales that decay would pull to zero.
    params = dict(model.named_parameters())
    decay = [p for p in params.values() if p.dim() >= 2]
    other = [p for p in params.values() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=spec.schedule.peak_lr, betas=(0.9, 0.95))


def _quiet_libraries() -> None:
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"deepspeed")


def train(
    spec: RunSpec,
    store: Store,
    *,
    attempt: int = 0,
    rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    threads: int | None = None,
    peak_flops_per_s: float | None = None,
    on_log: Callable[[dict], None] | None = None,
    local_rank: int | None = None,
    rendezvous_store=None,
) -> RunOutcome:
    """Train `spec` as rank `rank` of `spec.world_size`, resuming from its last checkpoint.

    Args:
        attempt: this attempt's number (0 first); metrics parts carry it.
        threads: CPU threads for torch (the CPUs this rank was given).
        peak_flops_per_s: one device's declared peak (FLOP/s), for MFU; None leaves MFU
            empty.
        on_log: called on rank 0 with each metrics row (and `steps_total`), e.g. to
            show live progress or export gauges.
        local_rank: which of this node's GPUs (see `distributed.setup`).
        master_addr, master_port: where a multi-rank group meets without a
            `rendezvous_store` (a launcher's MASTER_ADDR / MASTER_PORT).
        rendezvous_store: the process group's store (see `distributed.setup`). A single
            rank without one hosts its own, on a port the kernel picks.
    Returns:
        The run's outcome (the same on every rank).
    Raises:
        WorkerError: the data or a checkpoint cannot be used (not retried usefully).
    """
    _quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    # Importing DeepSpeed creates its logger (level WARNING, its own stdout handler); do it
    # first, so that the attempt's log file below can take its INFO records too.
    import deepspeed  # noqa: F401

    # This rank's log file for this attempt (runs/<id>/logs/), for `orch status`.
    if rendezvous_store is None and spec.world_size == 1:
        rendezvous_store = distributed.host_rendezvous("127.0.0.1")
    with attempt_log(store, spec.run_id, attempt=attempt, rank=rank):
        ctx = distributed.setup(
            rank=rank,
            world_size=spec.world_size,
            master_addr=master_addr,
            master_port=master_port,
            local_rank=local_rank,
            store=rendezvous_store,
        )
        try:
            return _train(
                spec, store, ctx, attempt=attempt, peak_flops_per_s=peak_flops_per_s, on_log=on_log
            )
        finally:
            distributed.teardown()


def _train(spec: RunSpec, store, ctx, *, attempt, peak_flops_per_s, on_log) -> RunOutcome:
    import deepspeed

    t0 = time.monotonic()
    run_id = spec.run_id
    torch.manual_seed(spec.seed)  # the same initial weights on every rank
    model = GPT(spec.shape, activation_checkpointing=spec.activation_checkpointing)
    n_params = model.num_params()
    flops_per_token = spec.flops_per_token or 6.0 * n_params
    source = open_source(spec.data, seq_len=spec.shape.seq_len, vocab=spec.shape.vocab)
    optimizer = _optimizer(model, spec)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=_ds_config(spec), dist_init_required=False
    )
    torch.manual_seed(spec.seed + ctx.rank)  # anything random from here differs per rank
    device = engine.device
    start_step, client = checkpoint.restore(engine, spec, store, rank=ctx.rank)
    if start_step:
        log.info("run %s attempt %d: starting at step %d", run_id, attempt, start_step)
    log.info(
        "run %s attempt %d: %d params, %d steps, ZeRO-%d, %s, %d ranks on %s",
        run_id, attempt, n_params, spec.steps, spec.zero_stage, spec.precision,
        spec.world_size, ctx.backend,
    )  # fmt: skip

    total_steps = spec.steps
    sinks = None
    if ctx.rank == 0 and spec.sinks:
        sinks = Sinks(spec, run_dir=_local_run_dir(store, run_id), attempt=attempt)
    metrics = MetricsLog(
        spec,
        store.metrics_writer(run_id, attempt=attempt) if ctx.rank == 0 else None,
        flops_per_token=flops_per_token,
        peak_flops_per_s=peak_flops_per_s,
        accelerator=ctx.accelerator,
        on_log=on_log,
        t0=t0,
        sinks=sinks,
    )
    # Stage 0 in fp32 is the one layout where DeepSpeed clips without keeping the norm.
    own_grad_norm = spec.zero_stage == 0 and spec.precision == "fp32"
    loss_min = float(client.get("loss_min", math.inf))
    eval_loss = float(client.get("eval_loss", math.nan))
    status, done = "finished", start_step
    ended = False  # whether the loop ended (finished or diverged), not raised
    try:
        for step in range(start_step, total_steps):
            t_step = time.monotonic()
            logs = _is_log_step(spec, step + 1)
            for group in optimizer.param_groups:  # the groups every ZeRO wrapper steps
                group["lr"] = learning_rate(spec, step)
            step_loss = torch.zeros((), device=device)
            grad_norm = None
            for micro in range(spec.grad_accum):
                x, y = source.batch(
                    seed=spec.seed, rank=ctx.rank, step=step, micro=micro, size=spec.micro_batch
                )
                _, loss = engine(x.to(device), y.to(device))
                engine.backward(loss)
                if own_grad_norm and logs and micro == spec.grad_accum - 1:
                    grad_norm = _total_norm(engine.module)  # averaged, before clipping
                engine.step()
                step_loss += loss.detach().float()
            # Mean over ranks and micro-batches: every rank sees the same number, so every
            # rank agrees on divergence and stops together.
            if spec.world_size > 1:
                torch.distributed.all_reduce(step_loss)
            mean_loss = step_loss.item() / (spec.grad_accum * spec.world_size)
            if not math.isfinite(mean_loss) or mean_loss > loss_min + _DIVERGED_ABOVE_MIN_NATS:
                status = "diverged"
                log.warning(
                    "run %s diverged at step %d: loss %s (best %.4f)",
                    run_id, step + 1, mean_loss, loss_min,
                )  # fmt: skip
                if metrics.steps:  # keep the good steps since the last row
                    metrics.write(done, eval_loss=None, grad_norm=None)
                break
            loss_min = min(loss_min, mean_loss)
            metrics.add(mean_loss, time.monotonic() - t_step)
            done = step + 1
            is_last = done == total_steps
            if grad_norm is None:
                grad_norm = _grad_norm(engine)
            if is_last or (spec.eval_every_steps and done % spec.eval_every_steps == 0):
                eval_loss = _evaluate(engine, source, spec, device)
                metrics.write(
                    done,
                    eval_loss=eval_loss,
                    eval_bpb=bits_per_byte(eval_loss, source.bytes_per_token),
                    grad_norm=grad_norm,
                )
            elif logs:
                metrics.write(done, eval_loss=None, grad_norm=grad_norm)
            if is_last or (spec.checkpoint_every_steps and done % spec.checkpoint_every_steps == 0):
                client = {"loss_min": loss_min, "eval_loss": eval_loss}
                metrics.flush()
                checkpoint.save(engine, store, spec, step=done, rank=ctx.rank, client=client)
        ended = True
    finally:
        metrics.close()
        if sinks is not None:
            sinks.close(status if ended else "failed")

    last_loss = metrics.last_loss
    if done == start_step == total_steps:
        # Resumed from the final checkpoint: nothing left to train; report the end state.
        eval_loss = _evaluate(engine, source, spec, device)
        if ctx.rank == 0:
            logged = store.metrics([run_id], columns=["loss"]).column("loss").to_pylist()
            last_loss = logged[-1] if logged else math.nan
    outcome = RunOutcome(
        run_id=run_id,
        attempt=attempt,
        status=status,
        steps=done,
        tokens=done * spec.tokens_per_step,
        final_loss=last_loss,
        eval_loss=eval_loss,
        wall_s=time.monotonic() - t0,
        eval_bpb=bits_per_byte(eval_loss, source.bytes_per_token),
    )
    if ctx.rank == 0:
        store.write_run_summary(_summary_row(outcome, spec, model, flops_per_token))
    log.info("run %s attempt %d: %s after %d steps", run_id, attempt, status, done)
    return outcome


def _local_run_dir(store, run_id: str) -> Path | None:
    """The run's directory when the store is on a local file system, else None."""
    if not isinstance(store.fs, pafs.LocalFileSystem):
        return None
    return Path(store.root) / "runs" / run_id


def _summary_row(outcome: RunOutcome, spec: RunSpec, model: GPT, flops_per_token: float) -> dict:
    """The run's row of storage.schema.SUMMARY: N, D, C and the losses, for fitting."""
    n_params = model.num_params()
    return {
        **{k: getattr(outcome, k) for k in ("run_id", "attempt", "status", "tokens", "steps")},
        **{k: getattr(outcome, k) for k in ("final_loss", "eval_loss", "eval_bpb", "wall_s")},
        "n_params": n_params,
        "n_params_total": model.num_params(non_embedding=False),
        "flops": flops_per_token * outcome.tokens,
        "flops_6nd": 6.0 * n_params * outcome.tokens,
        "gpu_hours": spec.world_size * outcome.wall_s / 3600,
        "n_layer": spec.shape.n_layer,
        "d_model": spec.shape.d_model,
        "world_size": spec.world_size,
        "zero_stage": spec.zero_stage,
    }


def _is_log_step(spec: RunSpec, done: int) -> bool:
    """Whether a metrics row is written after `done` steps (evals always get one)."""
    return (
        done == spec.steps
        or bool(spec.log_every_steps and done % spec.log_every_steps == 0)
        or bool(spec.eval_every_steps and done % spec.eval_every_steps == 0)
    )


@torch.no_grad()
def _evaluate(engine, source, spec: RunSpec, device) -> float:
    """Mean held-out loss in nats/token. Every rank evaluates the same batches (ZeRO-3
    needs every rank in every forward), so every rank has the same number."""
    engine.eval()
    total = torch.zeros((), device=device)
    batches = source.eval_batches(n_batches=spec.eval_batches, size=spec.micro_batch)
    for x, y in batches:
        _, loss = engine(x.to(device), y.to(device))
        total += loss.float()
    engine.train()
    return total.item() / len(batches)


def _total_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads])))


def _grad_norm(engine) -> float | None:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return None
    return float(norm.item() if torch.is_tensor(norm) else norm)


# -- standalone entry point -------------------------------------------------------------


def _standalone_rank(
    rank: int, spec_json: str, store_uri: str, port: int, options: dict, results
) -> None:
    outcome = train(
        RunSpec.from_json(spec_json),
        Store(store_uri),
        rank=rank,
        rendezvous_store=distributed.join_rendezvous("127.0.0.1", port),
        **options,
    )
    if rank == 0:
        results.put(outcome.to_dict())


def main(argv: list[str] | None = None) -> int:
    """Run one spec without Ray; print its outcome as JSON. Exit 0 when the run ends,
    finished or diverged (a diverged run is a result, not an error)."""
    parser = argparse.ArgumentParser(prog="python -m workers.train", description=__doc__)
    parser.add_argument("spec", help="path to a RunSpec JSON file")
    parser.add_argument("--store", required=True, help="experiment URI (path or s3://...)")
    parser.add_argument("--attempt", type=int, default=0, help="attempt number (resumes: 1, 2..)")
    parser.add_argument(
        "--peak-flops", type=float, default=None, help="one device's peak FLOP/s, for MFU"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spec = RunSpec.from_json(Path(args.spec).read_text())
    options = {"attempt": args.attempt, "peak_flops_per_s": args.peak_flops}
    launch = distributed.from_launcher()
    if launch is not None:  # torchrun started this process as one rank
        if launch.world_size != spec.world_size:
            raise WorkerError(
                f"launcher started {launch.world_size} ranks, the spec wants {spec.world_size}"
            )
        outcome = train(
            spec,
            Store(args.store),
            rank=launch.rank,
            local_rank=launch.local_rank,
            master_addr=launch.master_addr,
            master_port=launch.master_port,
            **options,
        )
        if launch.rank == 0:
            print(json.dumps(outcome.to_dict()))
        return 0
    options["threads"] = max(1, (os.cpu_count() or 1) // spec.world_size)
    if spec.world_size == 1:
        outcome = train(spec, Store(args.store), **options)
        print(json.dumps(outcome.to_dict()))
        return 0
    # This process hosts the ranks' rendezvous, bound before they start (see
    # distributed.host_rendezvous); every rank joins it as a client.
    rendezvous = distributed.host_rendezvous("127.0.0.1")
    results = torch.multiprocessing.get_context("spawn").SimpleQueue()
    torch.multiprocessing.start_processes(
        _standalone_rank,
        args=(spec.to_json(), args.store, rendezvous.port, options, results),
        nprocs=spec.world_size,
        start_method="spawn",
    )
    print(json.dumps(results.get()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
