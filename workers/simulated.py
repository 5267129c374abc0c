"""A run that trains nothing: a ground-truth law plus noise stands in for the loss.

It writes what a real run writes (a loss curve and a summary row), so the scheduler, the
adaptive loop and the benchmarks can drive thousands of runs in seconds. The default
truth is Chinchilla's form, L(N, D) = E + A / N^alpha + B / D^beta, with multiplicative
lognormal noise on the final loss (seed-to-seed variation); the defaults are Hoffmann et
al. (2022)'s Approach 3 estimates.

A strategy judged only on the form it fits is judged on its own assumption, so there are
truths of other shapes too (`TRUTHS`): `FarseerTruth` (Li et al. 2025's form, whose data
term changes with N), `CurvedTruth` (Chinchilla whose N exponent drifts with log N), and
any truth's noise may grow as models shrink (`noise_exponent`). A cooldown branch shares
most of its parent's noise, and a run's curve shares its final loss's noise.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np

from workers.spec import RunSpec

_CURVE_POINTS = 8  # metric rows per simulated run


class _Truth:
    """What every truth shares: its noise, the observed loss of a spec, a numeric optimum.

    Subclasses are frozen dataclasses with a `loss(n_params, tokens)` and the fields
    `noise` (std of log-loss between seeds, at 1e9 parameters) and `noise_exponent`.
    """

    noise: float
    noise_exponent: float

    def loss(self, n_params, tokens):  # pragma: no cover - every truth defines it
        raise NotImplementedError

    def noise_at(self, n_params: float) -> float:
        """Seed-to-seed std of log-loss for a model of N parameters: small models are
        noisier when noise_exponent > 0 (noise * (N / 1e9)^-noise_exponent)."""
        return self.noise * (n_params / _NOISE_REF_PARAMS) ** (-self.noise_exponent)

    def observed_loss(self, spec: RunSpec) -> float:
        """The final loss a simulated run of `spec` reports: the law at its (N, D) times
        lognormal noise drawn from its run_id (so every attempt, and every caller that
        tells a study this loss, sees the same value)."""
        noise = _rng(spec.run_id, 0, "loss").standard_normal()
        if spec.branch_from:
            # A cooldown branch shares its parent's initialisation, data order and weights
            # up to the branch step, so most of its seed noise is its parent's: two
            # branches of one run correlate by _BRANCH_SHARED, a branch and its parent by
            # its square root.
            trunk = _rng(spec.branch_from, 0, "loss").standard_normal()
            noise = math.sqrt(_BRANCH_SHARED) * trunk + math.sqrt(1 - _BRANCH_SHARED) * noise
        n = simulated_n_params(spec)
        return float(self.loss(n, spec.tokens)) * math.exp(self.noise_at(n) * noise)

    def optimum(self, flops: float) -> dict[str, float]:
        """L_opt and N_opt at `flops` for C = 6 N D, by search along the iso-FLOP line
        (a fine log grid of N, then a parabola through the best point and its neighbours)."""
        log_n = np.linspace(math.log(1e3), math.log(flops / 6 / 1e2), 4000)  # D >= 100
        n = np.exp(log_n)
        losses = np.asarray(self.loss(n, flops / (6 * n)), dtype=float)
        i = int(np.clip(np.nanargmin(losses), 1, n.size - 2))
        y0, y1, y2 = losses[i - 1 : i + 2]
        denom = y0 - 2 * y1 + y2
        shift = 0.5 * (y0 - y2) / denom if denom > 0 else 0.0
        n_opt = math.exp(log_n[i] + shift * (log_n[1] - log_n[0]))
        return {"loss_opt": float(self.loss(n_opt, flops / (6 * n_opt))), "n_opt": n_opt}


@dataclass(frozen=True)
class TrueLaw(_Truth):
    """Chinchilla's form (the default truth)."""

    E: float = 1.69
    A: float = 406.4
    B: float = 410.7
    alpha: float = 0.34
    beta: float = 0.28
    noise: float = 0.01  # std of log-loss between seeds
    noise_exponent: float = 0.0  # > 0: smaller models are noisier (see noise_at)

    def loss(self, n_params, tokens):
        return self.E + self.A / n_params**self.alpha + self.B / tokens**self.beta

    def optimum(self, flops: float) -> dict[str, float]:
        """L_opt and N_opt at `flops` for C = 6 N D (Hoffmann et al. 2022, eq. 4)."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        n_opt = g * (flops / 6) ** (b / (a + b))
        return {"loss_opt": self.loss(n_opt, flops / (6 * n_opt)), "n_opt": n_opt}

    @classmethod
    def drawn(cls, i: int) -> TrueLaw:
        """The i-th random truth (bench/active_vs_grid.py's studies, the adaptive tests):
        alpha, beta in [0.25, 0.45], E in [1.5, 2], A, B log-uniform in [150, 1500],
        lognormal noise of 0.5-2% of the loss. A function of i alone."""
        rng = np.random.default_rng([2026, i])
        return cls(
            E=rng.uniform(1.5, 2.0),
            A=math.exp(rng.uniform(math.log(150), math.log(1500))),
            B=math.exp(rng.uniform(math.log(150), math.log(1500))),
            alpha=rng.uniform(0.25, 0.45),
            beta=rng.uniform(0.25, 0.45),
            noise=rng.uniform(0.005, 0.02),
        )


@dataclass(frozen=True)
class CurvedTruth(_Truth):
    """Chinchilla's form whose N exponent drifts with model size:
    L = E + A / N^(alpha + gamma ln(N / 1e9)) + B / D^beta, so log L is curved in log N
    and a power law fitted on small models mispredicts large ones."""

    E: float = 1.69
    A: float = 406.4
    B: float = 410.7
    alpha: float = 0.34
    beta: float = 0.28
    gamma: float = -0.01  # d alpha / d ln N
    noise: float = 0.01
    noise_exponent: float = 0.0

    def loss(self, n_params, tokens):
        alpha = self.alpha + self.gamma * np.log(np.asarray(n_params, dtype=float) / 1e9)
        return self.E + self.A / n_params**alpha + self.B / tokens**self.beta

    @classmethod
    def drawn(cls, i: int) -> CurvedTruth:
        """TrueLaw.drawn(i)'s parameters with gamma in [-0.008, 0.008] (the exponent moves
        by up to 0.04 over 1e7-1e11 parameters) and noise growing as N^-0.15."""
        base = TrueLaw.drawn(i)
        gamma = np.random.default_rng([2027, i]).uniform(-0.008, 0.008)
        fields = {k: getattr(base, k) for k in ("E", "A", "B", "alpha", "beta", "noise")}
        return cls(**fields, gamma=float(gamma), noise_exponent=0.15)


@dataclass(frozen=True)
class FarseerTruth(_Truth):
    """Li et al. (2025)'s form: L = exp(s N^q + S) + exp(B N^b + Q) D^(-exp(A N^a + E)):
    the data term's scale and exponent change with N, so the optimum moves unlike any
    Chinchilla law's. Defaults as bench/real_sweeps.py's synthetic truth."""

    s: float = 100.0
    q: float = -0.3
    S: float = math.log(1.5)
    B: float = 0.5
    b: float = 0.1
    Q: float = 3.0
    A: float = -0.02
    a: float = 0.1
    E: float = -1.0
    noise: float = 0.01
    noise_exponent: float = 0.0

    def loss(self, n_params, tokens):
        n = np.asarray(n_params, dtype=float)
        model = np.exp(self.s * n**self.q + self.S)
        data = np.exp(self.B * n**self.b + self.Q) * np.asarray(tokens, dtype=float) ** (
            -np.exp(self.A * n**self.a + self.E)
        )
        return model + data

    @classmethod
    def drawn(cls, i: int) -> FarseerTruth:
        """The defaults with the model term's scale, the data term's exponent drift and
        the noise drawn per i (noise growing as N^-0.15)."""
        rng = np.random.default_rng([2028, i])
        return cls(
            s=float(rng.uniform(60, 140)),
            A=float(rng.uniform(-0.03, -0.01)),
            E=float(rng.uniform(-1.1, -0.9)),
            noise=float(rng.uniform(0.005, 0.02)),
            noise_exponent=0.15,
        )


TRUTHS = {"chinchilla": TrueLaw, "curved": CurvedTruth, "farseer": FarseerTruth}
"""Truth families by name; each has `drawn(i)`, the i-th random truth of its family."""

_NOISE_REF_PARAMS = 1e9  # N at which a truth's noise is `noise`


# Share of a cooldown branch's seed-noise variance that comes from the trunk it shares with
# its parent (a modelling choice: the decay after the branch point adds the rest).
_BRANCH_SHARED = 0.8


def _rng(run_id: str, attempt: int, salt: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{run_id}:{attempt}:{salt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def simulated_n_params(spec: RunSpec) -> int:
    """Non-embedding parameters of the spec's shape (the count workers/model.py reaches)."""
    s = spec.shape
    return s.n_layer * (4 * s.d_model**2 + 2 * s.d_model * s.ffw_width + 2 * s.d_model) + s.d_model


def simulate_run(
    spec: RunSpec,
    store,
    *,
    attempt: int,
    law: TrueLaw,
    duration_s: float = 0.0,
    write_curve: bool = True,
) -> dict:
    """Write a simulated run's metrics and summary to `store`; its outcome as a dict.

    The loss depends only on the spec (not the attempt): a retried run reports the same.
    """
    t0 = time.monotonic()
    if duration_s > 0:
        time.sleep(duration_s)
    n = simulated_n_params(spec)
    final = law.observed_loss(spec)
    per_token = spec.flops_per_token or 6.0 * n
    if write_curve:
        with store.metrics_writer(spec.run_id, attempt=attempt) as writer:
            for k in range(1, _CURVE_POINTS + 1):
                step = max(1, spec.steps * k // _CURVE_POINTS)
                tokens = step * spec.tokens_per_step
                writer.write(
                    {
                        "step": step,
                        "tokens": tokens,
                        "flops": per_token * tokens,
                        "wall_s": duration_s * k / _CURVE_POINTS,
                        "loss": law.loss(n, tokens) * final / law.loss(n, spec.tokens),
                        "eval_loss": final if k == _CURVE_POINTS else None,
                    }
                )
    outcome = {
        "run_id": spec.run_id,
        "attempt": attempt,
        "status": "finished",
        "steps": spec.steps,
        "tokens": spec.steps * spec.tokens_per_step,
        "final_loss": final,
        "eval_loss": final,
        "wall_s": time.monotonic() - t0,
    }
    store.write_run_summary(
        {
            **outcome,
            "n_params": n,
            "n_params_total": n + spec.shape.vocab * spec.shape.d_model,
            "flops": per_token * outcome["tokens"],
            "flops_6nd": 6.0 * n * outcome["tokens"],
            "gpu_hours": spec.world_size * outcome["wall_s"] / 3600,
            "n_layer": spec.shape.n_layer,
            "d_model": spec.shape.d_model,
            "world_size": spec.world_size,
            "zero_stage": spec.zero_stage,
        }
    )
    return outcome
