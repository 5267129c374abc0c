"""Learning rate and batch size per run, from a rule named in the plan.

- "fixed": the plan's own peak_lr and global_batch for every run.
- "deepseek": DeepSeek LLM (DeepSeek-AI 2024, sec. 3.1, eq. 1): eta = 0.3118 C^-0.125,
  B = 0.2920 C^0.3271, with C in FLOPs and B in tokens. Fitted at 1e17-2e19 FLOPs.
- "steplaw": Step Law (Li et al. 2025, "Predictable Scale", eq. 6): eta = 1.79 N^-0.713
  D^0.307, B = 0.58 D^0.571, with N non-embedding parameters, D tokens, B in tokens.
The batch in tokens becomes a whole number of sequences, rounded to a power of two (it
then divides evenly over power-of-two GPU counts) and at least `min_batch` sequences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RULES = ("fixed", "deepseek", "steplaw")


@dataclass(frozen=True)
class Hparams:
    peak_lr: float
    global_batch: int  # sequences per optimizer step


def choose_hparams(
    rule: str,
    *,
    n_params: float,
    tokens: float,
    flops: float,
    seq_len: int,
    fixed_lr: float,
    fixed_batch: int,
    min_batch: int = 1,
) -> Hparams:
    """Peak learning rate and global batch (sequences) for one run under `rule`."""
    if rule == "fixed":
        return Hparams(fixed_lr, fixed_batch)
    if rule == "deepseek":
        lr, batch_tokens = 0.3118 * flops**-0.125, 0.2920 * flops**0.3271
    elif rule == "steplaw":
        lr, batch_tokens = 1.79 * n_params**-0.713 * tokens**0.307, 0.58 * tokens**0.571
    else:
        raise ValueError(f"unknown hyper-parameter rule {rule!r}; expected one of {RULES}")
    sequences = max(1.0, batch_tokens / seq_len)
    batch = 2 ** max(0, round(math.log2(sequences)))
    return Hparams(lr, max(batch, min_batch))
