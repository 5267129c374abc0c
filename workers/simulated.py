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
most of its parent's noise.

Curves: a run logs a row where a real one would (at most `max_points`, thinned evenly):
a train loss, and an eval loss at its evaluations and at the end. `curve(spec)` is the
noiseless loss after each update. `AnnealingTruth` is Tissue et al. (2024)'s law,
L(s) = E + A_N / N^a + A S1(s)^-alpha - C S2(s), with the areas S1, S2 summed exactly from
the run's schedule (`annealing_areas`), so constant, cosine and WSD runs
of one size and length end at different losses; its `observed_loss` is its curve's end
times the seed noise. The final-loss truths keep an `observed_loss` that ignores the
schedule, and their curves are pinned to it: L(N, D S1(s) / S1(T)) (the law at the share
of the run's learning-rate area done) plus `_ANNEAL_DROP` nats times the annealing still to
come, (S2(T) - S2(s)) (1 - lam) / peak_lr; an annealing-law curve whose constants depend
on the run. Noise on log loss: the run's seed noise (the draw of `observed_loss`, so its
last eval loss is exactly that), a slow wander (an Ornstein-Uhlenbeck process over the
fraction of the run, correlation length `_DRIFT_SPAN`, std `_DRIFT` x the seed noise,
pinned to 0 at the end: a final loss is not all visible early), and per row
`_EVAL_NOISE` for an evaluation or `_STEP_NOISE` / sqrt(k) for a train loss averaged over
k updates (whose noiseless value is the curve's mean over them).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np

from workers.schedule import lr_multipliers
from workers.spec import LrSchedule, RunSpec

MAX_CURVE_POINTS = 256  # metric rows a simulated run writes at most (one per logged step)
LAMBDA = 0.999  # momentum of the annealing area S2 (Tissue et al. 2024's decay factor)
_ANNEAL_DROP = 0.04  # final-loss truths' curves: nats a long, full anneal removes
_DRIFT = 0.3  # a run's slow wander along its curve, std as a fraction of its seed noise
_DRIFT_SPAN = 0.1  # the wander's correlation length, as a fraction of the run
_EVAL_NOISE = 0.002  # std of log eval loss per evaluation (a few held-out batches)
_STEP_NOISE = 0.02  # std of log train loss of one update (one batch)


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

    def expected_loss(self, spec: RunSpec) -> float:
        """The noiseless final loss of a run of `spec`: the law at its (N, D)."""
        return float(self.loss(simulated_n_params(spec), spec.tokens))

    def observed_loss(self, spec: RunSpec) -> float:
        """The final loss a simulated run of `spec` reports: `expected_loss` times
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
        return self.expected_loss(spec) * math.exp(self.noise_at(n) * noise)

    def curve(self, spec: RunSpec) -> np.ndarray:
        """Noiseless loss after 0, 1, ..., spec.steps updates, ending at `expected_loss`
        (see the module docstring: the law along the learning-rate area, plus the
        annealing still to come)."""
        s1, s2 = annealing_areas(spec.schedule, spec.steps, lam=LAMBDA)
        s1 = np.maximum(s1, s1[1])  # no update yet: as after the first
        tokens = spec.tokens * s1 / s1[-1]
        anneal = (s2[-1] - s2) * (1 - LAMBDA) / spec.schedule.peak_lr
        shape = np.asarray(self.loss(simulated_n_params(spec), tokens), dtype=float)
        return shape + _ANNEAL_DROP * anneal

    def optimum(self, flops: float) -> dict[str, float]:
        """L_opt and N_opt at `flops` for C = 6 N D, by search along the iso-FLOP line
        (a fine log grid of N, then a parabola through the best point and its neighbours)."""
        return self._search(np.linspace(math.log(1e3), math.log(flops / 6 / 1e2), 4000), flops)

    def _search(self, log_n: np.ndarray, flops: float) -> dict[str, float]:
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


@dataclass(frozen=True)
class AnnealingTruth(_Truth):
    """Tissue et al. (2024)'s learning-rate-annealing law, tied across model sizes:
    L(s) = E + A_N / N^a + A S1(s)^-alpha - C S2(s) after s updates, S1 and S2 in learning
    rate x updates (`annealing_areas`). A run's final loss depends on its schedule.

    `loss(N, D)` is the final loss of a `reference` run (cosine to 10% by default, the
    Chinchilla protocol) of `tokens_per_step` tokens per update, so `optimum` is the
    frontier of that schedule family. Its N, D and steps are small (CPU scale): its
    curves are summed step by step.
    """

    E: float = 1.0
    A_N: float = 10.0
    a: float = 0.3
    A: float = 1.5
    alpha: float = 0.5
    C: float = 0.25  # nats per unit of S2 (learning rate x updates)
    lam: float = 0.99  # S2's momentum: ~100 updates of delay, for runs of ~1e3 updates
    noise: float = 0.01
    noise_exponent: float = 0.0
    reference: LrSchedule = LrSchedule(kind="cosine", peak_lr=1e-2)
    tokens_per_step: int = 1024  # tokens per update of the reference runs

    def law(self, n_params, s1, s2):
        """The law at N parameters and areas S1, S2 (arrays broadcast together)."""
        n = np.asarray(n_params, dtype=float)
        return (
            self.E
            + self.A_N * n**-self.a
            + self.A * np.asarray(s1) ** -self.alpha
            - (self.C * np.asarray(s2))
        )

    def curve(self, spec: RunSpec) -> np.ndarray:
        s1, s2 = annealing_areas(spec.schedule, spec.steps, lam=self.lam)
        return self.law(simulated_n_params(spec), np.maximum(s1, s1[1]), s2)

    def expected_loss(self, spec: RunSpec) -> float:
        return float(self.curve(spec)[-1])

    def loss(self, n_params, tokens):
        n, d = np.broadcast_arrays(np.asarray(n_params, float), np.asarray(tokens, float))
        steps = np.maximum(1, np.ceil(d / self.tokens_per_step)).astype(np.int64)
        s1, s2 = np.empty(d.shape), np.empty(d.shape)
        for total in np.unique(steps).tolist():
            a1, a2 = annealing_areas(self.reference, total, lam=self.lam)
            s1[steps == total], s2[steps == total] = a1[-1], a2[-1]
        out = self.law(n, s1, s2)
        return float(out) if out.ndim == 0 else out

    def optimum(self, flops: float) -> dict[str, float]:
        """L_opt and N_opt of the reference family at C = 6 N D: a grid of log N (runs of
        at least 10 updates), then a parabola through the best point and its neighbours."""
        top = math.log(flops / (6 * 10 * self.tokens_per_step))
        return self._search(np.linspace(min(math.log(1e2), top - 1), top, 121), flops)

    @classmethod
    def drawn(cls, i: int) -> AnnealingTruth:
        """The i-th random annealing truth for byte-level GPTs of 1e3-1e6 parameters at a
        peak learning rate of 1e-2 (lam 0.99): E in [0.8, 1.4], a in [0.25, 0.45], alpha
        in [0.35, 0.65]; the size term 0.4-0.9 nats at N = 1e4, the area term 0.3-0.7 nats
        at S1 = 10 (1,000 updates); C such that a long anneal to 10% of the peak (S2 =
        0.9 x 1e-2 / (1 - lam) = 0.9) gains 0.15-0.3 nats; noise of 0.5-1.5%."""
        rng = np.random.default_rng([2029, i])
        a, alpha = rng.uniform(0.25, 0.45), rng.uniform(0.35, 0.65)
        return cls(
            E=float(rng.uniform(0.8, 1.4)),
            A_N=float(rng.uniform(0.4, 0.9) * 1e4**a),
            a=float(a),
            A=float(rng.uniform(0.3, 0.7) * 10**alpha),
            alpha=float(alpha),
            C=float(rng.uniform(0.15, 0.3) / 0.9),
            noise=float(rng.uniform(0.005, 0.015)),
        )


TRUTHS = {"chinchilla": TrueLaw, "curved": CurvedTruth, "farseer": FarseerTruth}
"""Final-loss truth families by name; each has `drawn(i)`, the i-th random truth of its
family. (`AnnealingTruth` is not one: its loss depends on the schedule, and its areas
are summed step by step, too slowly for the Chinchilla-scale studies these drive.)"""

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


def annealing_areas(
    schedule: LrSchedule, total_steps: int, *, lam: float = LAMBDA
) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 of Tissue et al. (2024) after 0, 1, ..., total_steps updates.

    Update i (1-based) uses the learning rate eta_i of optimizer step i - 1
    (workers/schedule.py). After s updates S1(s) = sum_{i<=s} eta_i (the forward area) and
    S2(s) = sum_{i<=s} m_i with m_1 = 0 and m_i = lam m_{i-1} + max(0, eta_{i-1} - eta_i)
    (the annealing area; warmup's rises are not counted as negative annealing). The same
    definitions as orchestrator/laws/lr_areas.py, which fits the law (workers may not
    import orchestrator); both are tested against a plain Python sum.

    Returns:
        (S1, S2), each (total_steps + 1,), in learning rate x updates.
    """
    # Imported here: scipy.signal costs a fresh process about 0.7 s (more on a busy
    # machine), which every Ray worker running a summary-only simulated run paid first.
    from scipy.signal import lfilter

    eta = schedule.peak_lr * lr_multipliers(schedule, np.arange(total_steps), total_steps)
    drop = np.maximum(0.0, np.concatenate([[0.0], eta[:-1] - eta[1:]]))
    momentum = lfilter([1.0], [1.0, -lam], drop)  # m_i = drop_i + lam m_{i-1}
    return (
        np.concatenate([[0.0], np.cumsum(eta)]),
        np.concatenate([[0.0], np.cumsum(momentum)]),
    )


def simulate_run(
    spec: RunSpec,
    store,
    *,
    attempt: int,
    law: _Truth,
    duration_s: float = 0.0,
    write_curve: bool = True,
    write_summary: bool = True,
    max_points: int = MAX_CURVE_POINTS,
) -> dict:
    """Write a simulated run's metrics and summary to `store`; its summary row.

    The loss depends only on the spec (not the attempt): a retried run reports the same,
    and writes the same curve. `write_curve=False` writes the summary only (fast studies);
    a curve is at most `max_points` rows (see the module docstring). `write_summary=False`
    leaves the summary to the caller, who stores many runs' rows at once
    (`Store.write_run_summaries`) before it reports any of them ended.
    """
    t0 = time.monotonic()
    if duration_s > 0:
        time.sleep(duration_s)
    n = simulated_n_params(spec)
    final = law.observed_loss(spec)
    per_token = spec.flops_per_token or 6.0 * n
    if write_curve:
        rows = simulated_curve(spec, law, max_points=max_points)
        with store.metrics_writer(spec.run_id, attempt=attempt) as writer:
            for row in rows:
                tokens = row["step"] * spec.tokens_per_step
                writer.write(
                    {
                        **row,
                        "tokens": tokens,
                        "flops": per_token * tokens,
                        "wall_s": duration_s * row["step"] / spec.steps,
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
    row = {
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
    # Not flushed to disk: a simulated run costs nothing to redo and redoes to the same
    # loss, so one a power loss drops is simply run again at resume. The write is still
    # atomic: a killed process leaves the summary whole or absent.
    if write_summary:
        store.write_run_summary(row, durable=False)
    return row  # the outcome is the whole summary row: the driver need not read it back


def simulated_curve(spec: RunSpec, law: _Truth, *, max_points: int = MAX_CURVE_POINTS) -> list:
    """The metric rows (step, loss, eval_loss, lr) a simulated run of `spec` logs, with the
    noise of the module docstring; the last row's eval loss is `law.observed_loss(spec)`.

    Rows fall where a real run logs them (every `log_every_steps`, every
    `eval_every_steps`, the last step; a cooldown branch only after its branch step),
    thinned evenly to `max_points`.
    """
    total = spec.steps
    every = spec.log_every_steps or total
    evals = spec.eval_every_steps
    steps = np.arange(every, total + 1, every)
    if evals:
        steps = np.union1d(steps, np.arange(evals, total + 1, evals))
    steps = np.union1d(steps, [total])
    start = spec.branch_step if spec.branch_from else 0
    steps = steps[steps > start]
    interval = np.diff(steps, prepend=start)  # updates each row's train loss averages
    if steps.size > max_points:
        keep = np.unique(np.round(np.linspace(0, steps.size - 1, max_points)).astype(int))
        steps, interval = steps[keep], interval[keep]
    is_eval = steps == total
    if evals:
        is_eval |= steps % evals == 0
    curve = law.curve(spec)
    csum = np.concatenate([[0.0], np.cumsum(curve)])
    train_mean = (csum[steps] - csum[steps - interval]) / interval  # after s-k .. s-1 updates
    n = simulated_n_params(spec)
    final = law.observed_loss(spec)
    seed = math.log(final / law.expected_loss(spec))
    rng = _rng(spec.run_id, 0, "curve")
    wander = _pinned_wander(steps / total, _DRIFT * law.noise_at(n), rng)
    train = train_mean * np.exp(
        seed + wander + _STEP_NOISE / np.sqrt(interval) * rng.standard_normal(steps.size)
    )
    evaluated = curve[steps] * np.exp(seed + wander + _EVAL_NOISE * rng.standard_normal(steps.size))
    evaluated[-1] = final
    lr = spec.schedule.peak_lr * lr_multipliers(spec.schedule, steps - 1, total)
    return [
        {
            "step": int(s),
            "loss": float(train[i]),
            "eval_loss": float(evaluated[i]) if is_eval[i] else None,
            "lr": float(lr[i]),
        }
        for i, s in enumerate(steps.tolist())
    ]


def _pinned_wander(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """An Ornstein-Uhlenbeck process at run fractions x (increasing, ending at 1), with
    stationary `std` and correlation exp(-dx / _DRIFT_SPAN), conditioned on 0 at x = 1."""
    w = np.empty(x.size)
    w[0] = std * rng.standard_normal()
    rho = np.exp(-np.diff(x) / _DRIFT_SPAN)
    for i in range(1, x.size):
        w[i] = rho[i - 1] * w[i - 1] + std * math.sqrt(1 - rho[i - 1] ** 2) * rng.standard_normal()
    return w - np.exp(-(x[-1] - x) / _DRIFT_SPAN) * w[-1]
