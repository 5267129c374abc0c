"""`active`: the runs that most lower the expected error of the prediction at the
target within the budget, under a form that is only roughly right; with target runs, by
default, a sample spread over the pool as the pool is (coverage.py), which lost to
`random` on real sweeps at fewer budgets than any plan aimed at the targets did.

The form's misfit is modelled as a smooth discrepancy (discrepancy.py): log L(x) =
form(x; theta) + delta(x) + noise, delta a Gaussian process over x = (log N, log D/N),
its scale and length scales learned from the fit's residuals with an honest floor. The
quantity wanted at a target is form + delta there (log L at each target run; log L_opt
and log N_opt at C*, where N_opt is taken as the form's alone). The law that will
predict is the form's own fit, which knows nothing of delta, so a run is worth what it
lowers that fit's expected squared error at the targets (`FitErrorState`): bias from the
discrepancies of the runs it is fitted to, plus their noise, plus the target's own
delta. A run near the targets in x shares their delta and corrects the fit; a cheap run
in a far corner of the N-D plane (very under- or over-trained, where the Chinchilla form
fits worst) drags the fit by its own delta and can be worth less than nothing. The
fall does not depend on the loss a run will report, so "fantasised" runs are cheap.

Per round, greedy plans for the whole remaining budget are built, each taking runs by
fall in MSE / cost^p (p in `_COST_POWERS`: per FLOP, per square root of FLOPs, and
regardless of cost) until nothing affordable lowers the MSE; the plan that ends with the
lowest MSE wins, and its `n` cheapest runs are proposed: per-FLOP ranking alone keeps
buying cheap runs that add up to less than the few dear runs near the targets, while the
dear runs of a plan made on an early fit are better chosen after the cheap ones are back
(the Study refits after every batch, so the linearisation point and the discrepancy
move with the data). The MSE is averaged over draws of theta from the fit's covariance
rather than taken at the estimate alone (pseudo-Bayesian design, Chaloner & Verdinelli
1995).

Where it applies. The plan is used when the target names runs (`Target.runs`: the
replay's held-out runs, a plan's production run) and `coverage=False`; with
`coverage=True` (the default) such a target gets coverage.py's representative sample,
since on bench/replay_real.py the plan's median held-out error was above `random`'s at
15 of 32 sweep x budget cells and the sample's at 11 (17 and 15 since AutoLaw's change
of cfad305, geometric means 1.04 and 0.91 of random's median; none beyond the spread
over seeds; coverage.py says what else was tried). A target of frontier
quantities alone keeps the plain design below: on bench/active_vs_grid.py (10
simulated studies each, Chinchilla and curved truths, C* 100x beyond the largest
candidate) the plan spent the whole budget and its N_opt error at the end grew from 18%
to 26% (Chinchilla truths) and 18% to 49% (curved): no candidate lies near C*, so the
discrepancy there cannot be corrected, only the parameters, which is what the plain
design aims at. On the Epoch replay the plan matches the pool's held-out error with 5%
of its compute (the plain design: not within 25%). At C*, herding (coverage.py) matched
the grid's error only with 0.12 of its compute on Chinchilla and curved truths (8
studies each; the plain design 0.04-0.11): it buys dear runs as readily as cheap ones.

`discrepancy=False` keeps the plain c-optimal design this replaced (the form trusted):
with S = F^-1 and F = J^T W J / s^2 + P (a weak Gaussian prior P), candidate c lowers
a target quantity's variance g^T S g by (g^T S j_c)^2 / (s^2 + j_c^T S j_c)
(Sherman-Morrison), and the batch is taken greedily by that fall per FLOP.

Lineages. A parent run and its WSD cooldown branches share weights and seed noise
(`orchestrator.laws.lineage`). With the discrepancy, the observed runs' noise is
correlated rho within a lineage the fit was given (`fit(..., groups=)`). In the plain
design, F is the precision of that fit's own estimator, H B^+ H / s^2 + P with
H = J^T W J and B = J^T W diag(design effects) J (`information`). In both, a candidate
branch of a lineage that already holds m runs enters with noise variance s^2 (1 + m rho).
Until the study has measured rho (no lineage with two finished runs), `_BRANCH_CORR`
stands in. A MAP fit's prior precision is part of the prior too.
"""

from __future__ import annotations

import logging

import numpy as np

from orchestrator.adaptive.strategies.base import (
    Candidate,
    StrategyView,
    Target,
    affordable,
    best_affordable,
    unknown,
)
from orchestrator.adaptive.strategies.coverage import herd
from orchestrator.adaptive.strategies.discrepancy import (
    Discrepancy,
    FitErrorState,
    coordinates,
    learn_discrepancy,
    plan_fit_error,
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
# Plans rank runs by MSE fall / cost^p: per FLOP, in between, and regardless of cost.
_COST_POWERS = (1.0, 0.5, 0.0)


class ActiveStrategy:
    name = "active"

    def __init__(
        self,
        fallback,
        *,
        n_samples: int = _N_SAMPLES,
        discrepancy: bool = True,
        coverage: bool = True,
    ):
        """fallback: the strategy used before a fit exists (the seed grid not yet run).
        n_samples: parameter draws the criterion is averaged over (1: the estimate only).
        discrepancy: plan against the form's misfit when the target names runs (module
        docstring); False: always the plain c-optimal design, which trusts the form.
        coverage: when the target names runs, a representative sample of the pool
        (coverage.py) instead of either design."""
        self.fallback = fallback
        self.n_samples = n_samples
        self.discrepancy = discrepancy
        self.coverage = coverage

    def propose(self, state: StrategyView, n: int, *, budget_flops: float) -> list[Candidate]:
        law = state.law
        # A run whose outcome is predicted tightly already (a cooldown branch) adds little.
        pool = unknown(affordable(state.pool, budget_flops), state.known_width)
        if not pool or n <= 0:
            return []
        if law is None:
            return self.fallback.propose(state, n, budget_flops=budget_flops)
        if self.coverage and state.target.runs:
            x_made = coordinates(state.n_params, state.tokens)
            x_cand = coordinates([c.n_params for c in pool], [c.tokens for c in pool])
            cost = np.array([c.flops for c in pool])
            return [pool[i] for i in herd(x_made, x_cand, cost, n, budget_flops)]
        # Frontier quantities alone (L_opt, N_opt at C*): the plain design, which measured
        # better there (module docstring); the discrepancy plan needs runs to aim at.
        planned = self.discrepancy and bool(state.target.runs)
        choose = self._choose_planned if planned else self._choose_plain
        chosen = choose(state, pool, n, budget_flops)
        if chosen is None:
            log.warning("active: the target's gradient is not finite; using %s", self.fallback.name)
            return self.fallback.propose(state, n, budget_flops=budget_flops)
        return [pool[i] for i in chosen]

    def _choose_planned(self, state, pool, n, budget_flops) -> list[int] | None:
        """Indices into `pool` of the best plan's n cheapest runs (module docstring);
        None if no draw's target gradient is finite."""
        law = state.law
        disc = fit_discrepancy(law)
        s2 = disc.noise_sd**2
        n_obs, d_obs, _, weights = law.observations_
        keep = weights > 0
        x_o, noise_o = coordinates(n_obs, d_obs)[keep], _observed_noise(law, s2)
        x_c = coordinates([c.n_params for c in pool], [c.tokens for c in pool])
        x_t, mask = target_points(law, state.target)
        draws = []
        for theta in _parameter_draws(law, s2, self.n_samples, state.rng()):
            g = target_gradients(law, state.target, theta)
            if not np.all(np.isfinite(g)):
                continue
            _, jac = law.form_.log_loss(theta[None], jac=True)
            draws.append(
                FitErrorState(
                    disc,
                    (x_o, weights[keep], noise_o, jac[0][keep]),
                    (x_c, candidate_rows(law, pool, theta)),
                    (x_t, mask, g),
                    s2 * _prior(law, theta),  # the prior in H's units (J^T W J): s^2 x precision
                )
            )
        if not draws:
            return None
        cost = np.array([c.flops for c in pool])
        labels, sizes, corr = _lineage_state(law, pool)
        plans = [
            (
                *plan_fit_error(draws, cost, budget_flops, labels, sizes.copy(), corr, s2, power),
                power,
            )
            for power in _COST_POWERS
        ]
        picks, left_mse, power = min(plans, key=lambda plan: plan[1])
        chosen = sorted(picks, key=lambda i: cost[i])[:n]
        if chosen:
            log.info(
                "active round %d: the %d cheapest runs of a %d-run plan (MSE fall / cost^%g), "
                "MSE at the targets x %.3f by its end (plans by power: %s); discrepancy sd "
                "%.4f (lengths %.0f, %.0f e-folds of N, D/N), noise sd %.4f",
                state.round,
                len(chosen),
                len(picks),
                power,
                left_mse,
                ", ".join(f"{p:g}: {m:.3f}" for _, m, p in plans),
                disc.sd,
                disc.length_n,
                disc.length_r,
                disc.noise_sd,
            )
        return chosen

    def _choose_plain(self, state, pool, n, budget_flops) -> list[int] | None:
        """Indices into `pool` of the plain c-optimal batch (the form trusted); None if
        no draw's target gradient is finite."""
        law = state.law
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
            return None
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
            best = best_affordable(fall.sum(axis=1).mean(axis=0) / cost, chosen, cost > left)
            if best is None:
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
        return chosen


def fit_discrepancy(law) -> Discrepancy:
    """The misfit model learned from the law's residuals at its estimate (discrepancy.py)."""
    n, d, loss, weights = law.observations_
    mean, jac = law.form_.log_loss(law.theta_[None], jac=True)
    keep = weights > 0
    return learn_discrepancy(
        coordinates(n, d)[keep],
        (np.log(loss) - mean[0])[keep],
        jac[0][keep],
        weights[keep],
        min_noise=_MIN_NOISE,
    )


def target_points(law, target: Target) -> tuple[np.ndarray, np.ndarray]:
    """Each target quantity's point (log N, log D/N), (Q, 2), in `target.keys` order, and
    whether the discrepancy there is part of it, (Q,): a run's log-loss and L_opt (at the
    estimate's optimum) are form + delta; N_opt is taken as the form's alone."""
    points, mask = [], []
    if target.quantities:
        log_n, log_d, _ = frontier_logs(law, law.theta_[None], np.log([target.flops]))
        for q in target.quantities:
            points.append([log_n[0, 0], log_d[0, 0] - log_n[0, 0]])
            mask.append(1.0 if q == "loss_opt" else 0.0)
    if target.runs:
        runs = target.runs
        points += coordinates([r.n_params for r in runs], [r.tokens for r in runs]).tolist()
        mask += [1.0] * len(runs)
    return np.nan_to_num(np.array(points, float)), np.array(mask)


def _observed_noise(law, s2: float) -> np.ndarray:
    """Covariance of the observed runs' noise: s^2 / w on the diagonal, rho s^2 between
    runs of one lineage when the fit was given lineages (rho: the fit's own)."""
    weights = law.observations_[3]
    keep = weights > 0
    cov = np.diag(s2 / weights[keep])
    lineages = getattr(law, "lineages_", None)
    if lineages is not None and lineages.corr > 0:
        codes = lineages.codes[keep]
        same = (codes[:, None] == codes[None, :]) & ~np.eye(codes.size, dtype=bool)
        cov = cov + s2 * lineages.corr * same
    return cov


def _prior(law, theta: np.ndarray) -> np.ndarray:
    """The prior precision of theta: the weak default, plus a MAP fit's own prior."""
    prior = np.diag(1.0 / _PRIOR_SD**2)
    if getattr(law, "penalty_", None) is not None:  # a MAP fit: its prior is information
        prior = prior + law.penalty_.precision(theta)
    return prior


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
    return info / s2 + _prior(law, theta)


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
        # An optimum the search cannot bracket is infinite on both sides of theta: its
        # slope is NaN (inf - inf), which the callers check for, not a warning's matter.
        with np.errstate(invalid="ignore"):
            rows += [(values[q][:p] - values[q][p:]) / (2 * step) for q in target.quantities]
    if target.runs:
        runs = target.runs
        rows += list(
            log_loss_rows(law, [r.n_params for r in runs], [r.tokens for r in runs], theta)
        )
    return np.stack(rows, axis=0)
