"""A run's metrics rows: train loss, throughput, MFU and memory per log interval.

Rows follow storage.schema.METRICS. `tokens_per_s` counts the tokens of all ranks over
the interval's training time only (evaluation and checkpointing are left out); `mfu` is
that rate times the FLOPs per token over the declared peak of all ranks' devices.
`eval_bpb` is the held-out loss in bits per byte of the text it stands for (see
`bits_per_byte`), so that corpora with different tokenizers compare.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable

import torch

from storage.writer import MetricsWriter
from workers.schedule import learning_rate
from workers.sinks import Sinks
from workers.spec import RunSpec


class MetricsLog:
    """Train loss and throughput per log interval, and the rows rank 0 writes.

    Every rank keeps the accounting (so every rank reports the same final loss); only
    rank 0 has a writer.
    """

    def __init__(
        self,
        spec: RunSpec,
        writer: MetricsWriter | None,
        *,
        flops_per_token: float,
        peak_flops_per_s: float | None,
        accelerator: str,
        on_log: Callable[[dict], None] | None,
        t0: float,
        sinks: Sinks | None = None,
    ):
        """`t0`: the attempt's start (time.monotonic) that `wall_s` counts from; `sinks`:
        where rank 0 also sends each row once it is in Parquet (workers/sinks.py)."""
        self.spec, self.writer, self.on_log, self.t0 = spec, writer, on_log, t0
        self.sinks = sinks
        self.flops_per_token = flops_per_token
        self.peak_flops_per_s = peak_flops_per_s
        self.accelerator = accelerator
        self.last_loss = math.nan  # nats/token, mean over the last written interval
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.steps, self.train_s = 0.0, 0, 0.0

    def add(self, loss: float, seconds: float) -> None:
        """One good optimizer step: its mean loss and its training seconds."""
        self.loss_sum += loss
        self.steps += 1
        self.train_s += seconds

    def write(
        self,
        step: int,
        *,
        eval_loss: float | None,
        grad_norm: float | None,
        eval_bpb: float | None = None,
    ) -> None:
        """Close the interval with a row at `step` (optimizer steps done)."""
        spec = self.spec
        self.last_loss = self.loss_sum / self.steps
        tokens_per_s = self.steps * spec.tokens_per_step / max(self.train_s, 1e-9)
        self._reset()
        if self.writer is None:
            return
        row = {
            "step": step,
            "tokens": step * spec.tokens_per_step,
            "flops": self.flops_per_token * step * spec.tokens_per_step,
            "wall_s": time.monotonic() - self.t0,
            "loss": self.last_loss,
            "eval_loss": eval_loss,
            "lr": learning_rate(spec, step - 1),  # the last step's
            "grad_norm": grad_norm,
            "tokens_per_s": tokens_per_s,
            "mfu": (
                tokens_per_s * self.flops_per_token / (self.peak_flops_per_s * spec.world_size)
                if self.peak_flops_per_s
                else None
            ),
            "peak_mem_bytes": _peak_mem_bytes(self.accelerator),
            "eval_bpb": eval_bpb,
        }
        self.writer.write(row)
        if self.sinks is not None:
            self.sinks.log(row)
        if self.on_log is not None:
            self.on_log({**row, "steps_total": spec.steps})

    def flush(self) -> None:
        """Make every row written so far durable (a checkpoint is a consistency point:
        a run resumed from it must find all the rows up to it)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def bits_per_byte(nats_per_token: float, bytes_per_token: float | None) -> float | None:
    """A loss in bits per byte of source text: nats/token / ln 2 / bytes per token. None
    when the tokens stand for no text (`bytes_per_token` None)."""
    if bytes_per_token is None:
        return None
    return nats_per_token / math.log(2) / bytes_per_token


def _peak_mem_bytes(accelerator: str) -> int:
    if accelerator == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
