"""Learning-rate schedules as a pure function of the optimizer step.

`lr_multiplier(schedule, step, total_steps)` is the fraction of `peak_lr` used by
optimizer step `step` (0-based) of a run of `total_steps` steps. Being a function of the
step alone, a resumed run or a WSD branch needs no scheduler state from its checkpoint.

With W = warmup steps = round(warmup_frac x T), T = total_steps, f = min_lr_frac:
- warmup (every kind): (step + 1) / W for step < W, so the first step is not at lr 0;
- constant: 1;
- cosine: f + (1 - f) (1 + cos(pi p)) / 2, p = (step - W) / (T - W) (Loshchilov & Hutter
  2017, without restarts); the last step is one step short of the floor;
- wsd (warmup-stable-decay; Hu et al. 2024, MiniCPM, sec. 4): 1 until the decay start
  S = T - round(cooldown_frac x T), then with q = (step - S + 1) / (T - S), reaching the
  floor f at the last step:
    linear:  1 - (1 - f) q
    cosine:  f + (1 - f) (1 + cos(pi q)) / 2
    1-sqrt:  1 - (1 - f) sqrt(q)      (Hägele et al. 2024, sec. 3)

`lr_multipliers` is the same at many steps at once (for the simulator's loss curves).
"""

from __future__ import annotations

import math

import numpy as np

from workers.spec import LrSchedule, RunSpec


def lr_multiplier(schedule: LrSchedule, step: int, total_steps: int) -> float:
    """Fraction of the peak learning rate at optimizer step `step` (0-based)."""
    warmup = schedule.warmup_steps(total_steps)
    if step < warmup:
        return (step + 1) / warmup
    floor = schedule.min_lr_frac
    if schedule.kind == "constant":
        return 1.0
    if schedule.kind == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_start = schedule.decay_start(total_steps)
    if step < decay_start:
        return 1.0
    q = min(1.0, (step - decay_start + 1) / max(1, total_steps - decay_start))
    if schedule.decay_shape == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * q))
    if schedule.decay_shape == "1-sqrt":
        return 1.0 - (1.0 - floor) * math.sqrt(q)
    return 1.0 - (1.0 - floor) * q


def learning_rate(spec: RunSpec, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based) of `spec`."""
    return spec.schedule.peak_lr * lr_multiplier(spec.schedule, step, spec.steps)


def lr_multipliers(schedule: LrSchedule, steps, total_steps: int) -> np.ndarray:
    """`lr_multiplier` at an array of optimizer steps (0-based) at once, as float64.

    The same formulas, vectorised, for code that needs whole schedules (the simulator's
    loss curves); tests/workers/test_simulated_curves.py checks it step by step against
    `lr_multiplier`.
    """
    step = np.asarray(steps, dtype=float)
    warmup = schedule.warmup_steps(total_steps)
    floor = schedule.min_lr_frac
    if schedule.kind == "constant":
        after = np.ones_like(step)
    elif schedule.kind == "cosine":
        progress = np.minimum(1.0, (step - warmup) / max(1, total_steps - warmup))
        after = floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * progress))
    else:
        decay_start = schedule.decay_start(total_steps)
        q = np.clip((step - decay_start + 1) / max(1, total_steps - decay_start), 0.0, 1.0)
        if schedule.decay_shape == "cosine":
            decay = floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * q))
        elif schedule.decay_shape == "1-sqrt":
            decay = 1.0 - (1.0 - floor) * np.sqrt(q)
        else:
            decay = 1.0 - (1.0 - floor) * q
        after = np.where(step < decay_start, 1.0, decay)
    if warmup > 0:
        return np.where(step < warmup, (step + 1) / warmup, after)
    return after
