"""Benchmark: what the DeepSpeed worker costs over a plain PyTorch loop, on this CPU.

In one run, on the same model, batch, data and optimizer (torch AdamW, clipping, the same
lr schedule, one loss `.item()` per step):
- steps/s of a plain PyTorch training loop, and of the worker (`workers.train.train`,
  DeepSpeed ZeRO-0, 1 rank), timed between the worker's metrics rows at steps 10 and 30
  (so its logging and bookkeeping count; start-up, the final eval and checkpoint do not),
  by wall clock and by the process's CPU time (which other load on the machine barely moves);
- tokens/s per core of ZeRO-3 on 2 gloo ranks against ZeRO-0 on 1 rank, same global batch.
Each rank gets one thread. Each figure is the median of REPEATS interleaved runs, since the
machine may be shared. Prints a Markdown section for bench/RESULTS.md and exits 0.

    .venv/bin/python bench/worker_overhead.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # no GPU probing noise

import torch  # noqa: E402

from storage.store import Store  # noqa: E402
from workers import distributed  # noqa: E402
from workers.data import open_source  # noqa: E402
from workers.model import GPT  # noqa: E402
from workers.schedule import lr_multiplier  # noqa: E402
from workers.spec import LrSchedule, RunSpec, Shape  # noqa: E402
from workers.train import train  # noqa: E402

REPEATS = 3
STEPS = 40  # per run; the worker logs every 10 steps; steps 10 to 30 are timed
TIMED = (10, 30)  # after step 10 (warm-up) up to step 30 (before the final eval/checkpoint)
SHAPE = Shape(n_layer=4, d_model=96, n_head=4, seq_len=64)  # 0.44M non-embedding params
SPEC = RunSpec(
    shape=SHAPE,
    tokens=16 * 64 * STEPS,
    global_batch=16,
    micro_batch=8,  # 1 rank: 2 micro-batches per step; 2 ranks: 1 each
    schedule=LrSchedule(kind="cosine", peak_lr=1e-3),
    log_every_steps=10,
    eval_batches=1,
)


@dataclasses.dataclass
class Rate:
    steps_per_s: float  # wall clock
    steps_per_cpu_s: float  # this process's CPU time: robust to other load on the machine


def _rate(marks: dict[int, tuple[float, float]]) -> Rate:
    (w0, c0), (w1, c1) = marks[TIMED[0]], marks[TIMED[1]]
    steps = TIMED[1] - TIMED[0]
    return Rate(steps / (w1 - w0), steps / (c1 - c0))


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def plain_loop(spec: RunSpec) -> Rate:
    """A hand-written loop doing what the worker does per step, without DeepSpeed."""
    torch.manual_seed(spec.seed)
    model = GPT(spec.shape)
    params = dict(model.named_parameters())
    groups = [
        {"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": spec.weight_decay},
        {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=spec.schedule.peak_lr, betas=(0.9, 0.95))
    source = open_source(spec.data, seq_len=spec.shape.seq_len, vocab=spec.shape.vocab)
    marks = {}
    for step in range(spec.steps):
        for group in opt.param_groups:
            group["lr"] = spec.schedule.peak_lr * lr_multiplier(spec.schedule, step, spec.steps)
        loss_sum = torch.zeros(())
        for micro in range(spec.grad_accum):
            x, y = source.batch(
                seed=spec.seed, rank=0, step=step, micro=micro, size=spec.micro_batch
            )
            _, loss = model(x, y)
            (loss / spec.grad_accum).backward()
            loss_sum += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum.item()
        if step + 1 in TIMED:
            marks[step + 1] = _now()
    return _rate(marks)


def _marker(marks: dict[int, tuple[float, float]]):
    def on_log(row: dict) -> None:  # called on rank 0 as each metrics row is written
        marks[row["step"]] = _now()

    return on_log


def one_rank(spec: RunSpec, store_uri: str) -> Rate:
    marks: dict[int, tuple[float, float]] = {}
    train(spec, Store(store_uri), threads=1, on_log=_marker(marks))
    return _rate(marks)


def _rank(rank: int, spec_json: str, store_uri: str, port: int, results) -> None:
    marks: dict[int, tuple[float, float]] = {}
    spec = RunSpec.from_json(spec_json)
    store = distributed.join_rendezvous("127.0.0.1", port)
    train(
        spec, Store(store_uri), rank=rank, rendezvous_store=store, threads=1, on_log=_marker(marks)
    )
    if rank == 0:  # a tuple: this module is __mp_main__ here, so its classes don't unpickle
        results.put(dataclasses.astuple(_rate(marks)))


def two_ranks(spec: RunSpec, store_uri: str) -> Rate:
    results = torch.multiprocessing.get_context("spawn").SimpleQueue()
    rendezvous = distributed.host_rendezvous("127.0.0.1")  # bound before the ranks start
    torch.multiprocessing.start_processes(
        _rank,
        args=(spec.to_json(), store_uri, rendezvous.port, results),
        nprocs=2,
        start_method="spawn",
    )
    return Rate(*results.get())


@contextlib.contextmanager
def stdout_to_stderr():
    """Library chatter (also from C++, spawned ranks and child processes) goes to stderr,
    not the report (bench/sinks.py uses it too)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def measure() -> dict[str, list[Rate]]:
    torch.set_num_threads(1)
    zero3 = dataclasses.replace(SPEC, zero_stage=3, world_size=2)
    out: dict[str, list[Rate]] = {"plain": [], "zero0": [], "zero3x2": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(REPEATS):
            # Distinct seeds: distinct run_ids, so no run resumes another's checkpoint.
            spec = dataclasses.replace(SPEC, seed=i)
            out["plain"].append(plain_loop(spec))
            out["zero0"].append(one_rank(spec, f"{tmp}/zero0-{i}"))
            out["zero3x2"].append(two_ranks(dataclasses.replace(zero3, seed=i), f"{tmp}/z3-{i}"))
    return out


def report(out: dict[str, list[Rate]], elapsed_s: float, load: tuple[float, float]) -> str:
    tokens_per_step = SPEC.tokens_per_step
    wall = {k: statistics.median(r.steps_per_s for r in v) for k, v in out.items()}
    cpu = {k: statistics.median(r.steps_per_cpu_s for r in v) for k, v in out.items()}
    cores = {"plain": 1, "zero0": 1, "zero3x2": 2}
    names = {
        "plain": "plain PyTorch loop (AdamW), 1 rank",
        "zero0": "worker, DeepSpeed ZeRO-0, 1 rank",
        "zero3x2": "worker, DeepSpeed ZeRO-3, 2 ranks (gloo)",
    }
    n_params = GPT(SHAPE).num_params()
    lines = [
        "## Worker overhead: DeepSpeed worker vs a plain PyTorch loop (CPU)",
        "",
        "Command: `.venv/bin/python bench/worker_overhead.py`",
        "",
        f"Model: {SHAPE.n_layer} layers, d_model {SHAPE.d_model}, {n_params:,} non-embedding "
        f"params, seq {SHAPE.seq_len}; global batch {SPEC.global_batch} x {SHAPE.seq_len} = "
        f"{tokens_per_step:,} tokens/step (micro-batch {SPEC.micro_batch}); fp32, byte data, "
        f"AdamW, clipping. 1 thread per rank. Median of {REPEATS} interleaved runs, steps "
        f"{TIMED[0]}-{TIMED[1]} of {STEPS} timed. Machine load average {load[0]:.1f} at start, "
        f"{load[1]:.1f} at end, on {os.cpu_count()} cores: wall-clock figures move with other "
        "load; CPU-time figures (the rank-0 process's own CPU seconds) much less.",
        "",
        "| run | cores | steps/s (wall) | tokens/s (wall) | tokens/s per core (wall) "
        "| steps per CPU-s (rank 0) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in ("plain", "zero0", "zero3x2"):
        tps, n = wall[key] * tokens_per_step, cores[key]
        lines.append(
            f"| {names[key]} | {n} | {wall[key]:.2f} | {tps:,.0f} | {tps / n:,.0f} "
            f"| {cpu[key]:.2f} |"
        )
    by_cpu, by_wall = cpu["plain"] / cpu["zero0"], wall["plain"] / wall["zero0"]
    per_core = (wall["zero3x2"] / 2) / wall["zero0"]
    lines += [
        "",
        f"- Worker (ZeRO-0) step time / plain loop step time: **{by_cpu:.3f}x** by CPU time, "
        f"{by_wall:.3f}x by wall clock (goal: within 1.15x).",
        f"- ZeRO-3 on 2 ranks vs ZeRO-0 on 1 rank, tokens/s per core (wall): **{per_core:.2f}**.",
        "- MFU on an H100: not measured (no GPU on this machine).",
        f"- Wall time of this benchmark: {elapsed_s:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    with stdout_to_stderr():
        out = measure()
    print(report(out, time.monotonic() - t0, (load0, os.getloadavg()[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
