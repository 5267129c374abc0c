"""`active`: the runs that shrink the target's uncertainty most per FLOP (c-optimal design).

Linearise the fitted law around its estimate theta. Each observed run i contributes a
row j_i = d log L(N_i, D_i) / d theta to the Jacobian J, and with seed-to-seed noise s
on log-loss the information matrix is

    F = J^T W J / s^2 + P,

where W holds the runs' multiplicities and P is a weak Gaussian prior (so F stays
invertible when the runs cannot separate the parameters). Each quantity q of the target
(log L_opt(C*), log N_opt(C*), and log L(N, D) at each target run) has gradient
g = dq/dtheta and variance g^T F^-1 g (the delta method, as the laws' own intervals
use). Running candidate c adds j_c j_c^T / s^2 to F; by Sherman-Morrison, with
S = F^-1, the variance falls by

    (g^T S j_c)^2 / (s^2 + j_c^T S j_c),

which does not depend on the loss the run will report: that is what makes "fantasised"
observations cheap. A batch is built greedily: take the candidate with the largest
fall per FLOP (relative to the current variance, summed over the target's quantities),
apply its rank-one update to S as if it had been observed, and score the rest again (the
greedy batch is the usual sequential approximation). Early fits are far from the truth,
so the fall is averaged over draws of theta from the fit's covariance rather than taken
at the estimate alone (pseudo-Bayesian c-optimality, Chaloner & Verdinelli 1995). The
Study refits after every batch, so the linearisation point moves with the data.

Lineages. A parent run and its WSD cooldown branches share weights and seed noise
(`orchestrator.laws.lineage`). When the fit was given lineages (`fit(..., groups=)`),
F is the precision of that fit's own estimator, H B^+ H / s^2 + P with H = J^T W J and
B = J^T W diag(design effects) J, the inverse of the sandwich the fit's intervals use;
since B >= H, k runs of one lineage carry less information than k independent runs
(in the positive semi-definite order). A candidate branch of a lineage that already
holds m runs enters with weight 1 / (1 + m rho): its share once it joins. Until the
study has measured rho (no lineage with two finished runs), `_BRANCH_CORR` stands in.
A MAP fit's prior precision is part of F too.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from orchestrator.adaptive.strategies.base import (
    Candidate,
    StrategyView,
    Target,
    affordable,
    unknown,
)
from orchestrator.laws.frontier import frontier_logs

log = logging.getLogger(__name__)

# Prior standard deviations in the fit's internal coordinates (a_c, b_c, e, alpha, beta):
# a factor e^3 on each term at the data's centre and +-1 on each exponent, far wider than
# any fit's own interval, so the data decide wherever they can.
_PRIOR_SD = np.array([3.0, 3.0, 3.0, 1.0, 1.0])
_MIN_NOISE = 1e-4  # std of log-loss; below it F would be numerically singular
_N_SAMPLES = 16  # parameter draws per round: the criterion's average settles by ~10
_MIN_EXPONENT = 0.02  # draws of alpha or beta are kept above this (0 has no optimum)
# Within-lineage correlation assumed for a candidate branch before any lineage has two
# finished runs to measure it: branches share their parent's trajectory up to the branch
# point, so their scores are correlated; half is cautious enough that one parent's
# branches do not crowd out new runs, and loose enough that their low cost still counts.
_BRANCH_CORR = 0.5


class ActiveStrategy:
    name = "active"

    def __init__(self, fallback, *, n_samples: int = _N_SAMPLES):
        """fallback: the strategy used before a fit exists (the seed grid not yet run).
        n_samples: parameter draws the criterion is averaged over (1: the estimate only)."""
        self.fallback = fallback
        self.n_samples = n_samples

    def propose(self, state: StrategyView, n: int, *, budget_flops: float) -> list[Candidate]:
        law = state.law
        # A run whose outcome is predicted tightly already (a cooldown branch) adds little.
        pool = unknown(affordable(state.pool, budget_flops), state.known_width)
        if not pool or n <= 0:
            return []
        if law is None:
            return self.fallback.propose(state, n, budget_flops=budget_flops)
        s2 = max(state.noise, _MIN_NOISE) ** 2
        thetas = _parameter_draws(law, s2, self.n_samples, state.rng())
        rows, covs, grads = [], [], []
        for theta in thetas:
            g = target_gradients(law, state.target, theta)
            if not np.all(np.isfinite(g)):
                continue
            grads.append(g)
            covs.append(np.linalg.inv(information(law, s2, theta)))
            rows.append(candidate_rows(law, pool, theta))
        if not grads:
            log.warning("active: the target's gradient is not finite; using %s", self.fallback.name)
            return self.fallback.propose(state, n, budget_flops=budget_flops)
        rows_, cov, grads_ = np.stack(rows), np.stack(covs), np.stack(grads)
        cost = np.array([c.flops for c in pool])
        labels, sizes, corr = _lineage_state(law, pool)
        weight = 1.0 / (1.0 + sizes[labels] * corr)  # (K,); 1 for a run starting a lineage
        var0 = np.einsum("sqp,spr,sqr->sq", grads_, cov, grads_)
        chosen: list[int] = []
        left = budget_flops
        for _ in range(n):
            s_rows = np.einsum("skp,spr->skr", rows_, cov)  # (S, K, P); cov is symmetric
            denom = s2 / weight + np.einsum("skp,skp->sk", s_rows, rows_)
            fall = np.einsum("sqp,skp->sqk", grads_, s_rows) ** 2
            fall = fall / denom[:, None, :] / var0[:, :, None]  # relative, (S, Q, K)
            score = fall.sum(axis=1).mean(axis=0) / cost
            score[chosen] = -np.inf
            score[cost > left] = -np.inf
            best = int(np.argmax(score))
            if not math.isfinite(score[best]) or score[best] <= 0:
                break
            chosen.append(best)
            left -= cost[best]
            picked = s_rows[:, best, :]
            cov = cov - np.einsum("sp,sr->spr", picked, picked) / denom[:, best, None, None]
            sizes[labels[best]] += 1  # later branches of its lineage share it with this run
            weight = 1.0 / (1.0 + sizes[labels] * corr)
        if chosen:
            after = np.einsum("sqp,spr,sqr->sq", grads_, cov, grads_)
            log.info(
                "active round %d: %d runs, expected target sd x %s (mean over %d draws)",
                state.round,
                len(chosen),
                np.array2string(np.sqrt(after / var0).mean(axis=0), precision=3),
                len(grads),
            )
        return [pool[i] for i in chosen]


def _parameter_draws(law, s2: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """The estimate, then n - 1 draws from N(estimate, covariance) inside the bounds.

    The fit's own (Huber) covariance is used when it is finite, else F^-1. Averaging the
    criterion over plausible parameters instead of trusting the estimate is the
    pseudo-Bayesian c-optimal design of Chaloner & Verdinelli (1995, sec. 2.2): a
    design tuned to a wrong early estimate is what it guards against.
    """
    theta = law.theta_
    if n <= 1:
        return theta[None]
    cov = law.cov_ if np.all(np.isfinite(law.cov_)) else np.linalg.inv(information(law, s2))
    cov = (cov + cov.T) / 2
    draws = rng.multivariate_normal(theta, cov, size=n - 1, method="eigh", check_valid="ignore")
    lower = law.form_.lower.copy()
    lower[3:] = np.maximum(lower[3:], _MIN_EXPONENT)
    return np.concatenate([theta[None], np.clip(draws, lower, law.form_.upper)])


def information(law, s2: float, theta: np.ndarray | None = None) -> np.ndarray:
    """F = J^T W J / s^2 + prior precision at theta (default: the law's estimate), in the
    fit's internal coordinates; with lineages, H B^+ H / s^2 + prior precision (see the
    module docstring), never more than the independent-run F."""
    theta = law.theta_ if theta is None else theta
    _, jac = law.form_.log_loss(theta[None], jac=True)
    weights = law.observations_[3]
    j = jac[0]
    info = j.T @ (j * weights[:, None])
    lineages = getattr(law, "lineages_", None)
    if lineages is not None and lineages.corr > 0:
        meat = j.T @ (j * (weights * lineages.design_effects(weights))[:, None])
        info = info @ np.linalg.pinv(meat, hermitian=True) @ info
    prior = np.diag(1.0 / _PRIOR_SD**2)
    if getattr(law, "penalty_", None) is not None:  # a MAP fit: its prior is information
        prior = prior + law.penalty_.precision(theta)
    return info / s2 + prior


def _lineage_state(law, pool: list[Candidate]) -> tuple[np.ndarray, np.ndarray, float]:
    """Each candidate's lineage index (K,), the finished runs' weight in each lineage,
    and the within-lineage correlation rho for candidates.

    A run's lineage is `Candidate.lineage` (the run it branches from, a sweep's group,
    else itself); the fit's `groups_` are taken to use the same labels. Without them,
    each finished run is its own lineage, so a branch's parent counts once."""
    observed: dict[str, float] = {}
    groups, weights = getattr(law, "groups_", None), law.observations_[3]
    if groups is not None:
        for label, w in zip(groups, weights, strict=True):
            observed[label] = observed.get(label, 0.0) + float(w)
    index: dict[str, int] = {}
    sizes: list[float] = []
    labels = np.empty(len(pool), dtype=np.intp)
    for i, c in enumerate(pool):
        label = c.lineage
        if label not in index:
            index[label] = len(sizes)
            # A cooldown branch's parent has finished, whether the fit was given lineages or not.
            parent = 1.0 if c.spec is not None and c.spec.branch_from else 0.0
            sizes.append(observed.get(label, parent))
        labels[i] = index[label]
    lineages = getattr(law, "lineages_", None)
    measured = lineages is not None and lineages.shared
    return labels, np.array(sizes), lineages.corr if measured else _BRANCH_CORR


def candidate_rows(law, pool: list[Candidate], theta: np.ndarray | None = None) -> np.ndarray:
    """d log L / d theta at each candidate's (N, D): (K, P)."""
    return log_loss_rows(
        law,
        [c.n_params for c in pool],
        [c.tokens for c in pool],
        law.theta_ if theta is None else theta,
    )


def log_loss_rows(law, n_params, tokens, theta: np.ndarray) -> np.ndarray:
    """d log L(N, D) / d theta at points (N, D) (sequences of one length K): (K, P),
    the form's analytic Jacobian."""
    form = law.form_
    x_n, x_d = form.centred(np.log(np.asarray(n_params, float)), np.log(np.asarray(tokens, float)))
    _, jac = form.log_loss_at(theta[None], x_n[None], x_d[None], jac=True)
    return jac[0]


def target_gradients(law, target: Target, theta: np.ndarray | None = None) -> np.ndarray:
    """d log q / d theta for each quantity q of the target, in `target.keys` order: (Q, P).

    L_opt and N_opt at C* by central differences (the laws' delta-method intervals
    differentiate the same way); the loss at each target run (N, D) from the form's
    analytic Jacobian, as a candidate's row: the criterion then aims at the predicted
    log-loss of the runs the study is asked to predict.
    """
    theta = law.theta_ if theta is None else theta
    rows = []
    if target.quantities:
        p = theta.size
        step = 1e-5 * (1.0 + np.abs(theta))
        stack = np.concatenate([theta + np.diag(step), theta - np.diag(step)])
        log_n, _, log_l = frontier_logs(law, stack, np.log([target.flops]))
        values = {"n_opt": log_n[:, 0], "loss_opt": log_l[:, 0]}
        rows += [(values[q][:p] - values[q][p:]) / (2 * step) for q in target.quantities]
    if target.runs:
        runs = target.runs
        rows += list(
            log_loss_rows(law, [r.n_params for r in runs], [r.tokens for r in runs], theta)
        )
    return np.stack(rows, axis=0)
