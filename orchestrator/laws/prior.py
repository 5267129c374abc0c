"""Priors: a previous fit's parameters as a Gaussian prior on a new fit (a MAP fit).

A plan's `seed_grid.prior_fit` names a fit of the same setup (data, tokenizer, model
family). Besides centring the seed grid, its parameters can pull the new fit:
`Chinchilla().fit(N, D, L, prior=Prior.from_fit(record))` minimises

    sum_i w_i Huber_delta(r_i) + c/2 sum_k ((phi_k(theta) - mu_k) / sd_k)^2,

a maximum a posteriori (MAP) fit with independent Gaussians on the parameters named.

Coordinates: phi is the form's log-parametrisation, the coordinates of
`FitRecord.covariance`: the log of each positive parameter (log E, log A, log B) and
the others as they are (alpha, beta). Gaussians there keep E, A, B positive, and for
Chinchilla and the over-training form phi is linear in the internal theta, so the
penalty is an exact quadratic in theta.

Default widths (sd in phi; `DEFAULT_SD` per form, override with `sd=`) pull without
pinning. On 49 runs with 1% noise the fit's own standard errors are about 0.02-0.03 on
the exponents and 3% on E, so these widths move such a fit by a tenth of the way or
less, while with a handful of noisy runs (exponent errors of 0.1-0.3) the prior
dominates:
- exponents alpha, beta: 0.1 (fits of one setup rarely differ by more; published
  Chinchilla refits span 0.28-0.37 in beta across *different* analyses); the
  over-training form's eta = alpha / 2 gets 0.05;
- E: 0.1 on log E, i.e. +-10%: the irreducible loss of one data set and tokenizer;
- A, B (and the over-training a, b): 2.0 on the log, a factor e^2 = 7.4. They are the
  terms' sizes at N = 1 and D = 1, far outside any data, where log A moves by log N
  when alpha moves by 1 (about 18 at N = 1e8); a tighter width there would be a strong
  hidden prior on the exponents.
Kaplan and Farseer have no defaults: their parameters (critical scales, stretched
exponents) have no width we could defend, so a prior on them must give `sd`.

Scale c: the Huber objective is not a log-likelihood, so the penalty is scaled to
weigh the prior against the data as Bayes would. Near the optimum the objective's
curvature is E[psi'] J^T W J while the data's precision is J^T W J / tau^2, with
tau^2 = E[psi^2] / E[psi']^2 (`covariance.huber_covariance`); the penalty's curvature
c / sd^2 matches the prior's precision 1 / sd^2 in that ratio when
c = tau^2 E[psi'] = E[psi^2] / E[psi'], evaluated for N(0, sigma^2) residuals with
sigma the residual scale of the plain fit (`covariance.prior_scale`). For least squares
(delta >> sigma) this is sigma^2, the usual ridge weight. When runs share lineages
(`lineage`), the data are worth fewer independent runs, so c is multiplied by the
mean design effect M / M_eff. The fit's covariance is then the posterior one,
(data precision + J_phi^T diag(1 / sd^2) J_phi)^-1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from orchestrator.laws.base import FitError
from orchestrator.laws.covariance import prior_scale, residual_scale
from orchestrator.laws.lineage import fit_lineages

_N_PLAIN_STARTS = 4  # local optima of the plain search that also start the MAP search

# Default widths in the form's log-parametrisation, by form name and public parameter
# name (see the module docstring for the reasons).
DEFAULT_SD: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "chinchilla": MappingProxyType({"E": 0.1, "A": 2.0, "B": 2.0, "alpha": 0.1, "beta": 0.1}),
        "overtraining": MappingProxyType({"E": 0.1, "a": 2.0, "b": 2.0, "eta": 0.05}),
    }
)


@dataclass(frozen=True)
class Prior:
    """Independent Gaussian priors on a law's parameters, by public name.

    Example:
        >>> prior = Prior.from_params({"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34,
        ...                            "beta": 0.28})
        >>> law = Chinchilla().fit(n_params, tokens, loss, prior=prior)

    Attributes:
        mean: public parameter name (E, A, alpha, ...) -> prior mean, in the law's units.
        sd: name -> width in the form's log-parametrisation (on log E, log A, log B;
            on alpha and beta as they are); a name left out gets `DEFAULT_SD`.
        source: where the prior came from (a fit id), for the record.

    Raises:
        FitError: no names, a non-finite mean, a width that is not finite and > 0, or
            a width for a parameter without a mean.
    """

    mean: Mapping[str, float]
    sd: Mapping[str, float] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        mean = _float_map(self.mean, "mean")
        sd = _float_map(self.sd, "sd")
        if not mean:
            raise FitError("prior: expected at least one parameter, got none")
        for name, value in mean.items():
            if not math.isfinite(value):
                raise FitError(f"prior: the mean of {name!r} must be finite, got {value!r}")
        for name, value in sd.items():
            if name not in mean:
                raise FitError(f"prior: a width for {name!r} but no mean for it")
            if not (math.isfinite(value) and value > 0):
                raise FitError(
                    f"prior: the width of {name!r} must be finite and > 0, got {value!r}"
                )
        # Plain dict copies (a mappingproxy would not pickle, and fitted laws travel).
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "sd", sd)

    @classmethod
    def from_params(
        cls, params: Mapping[str, float], *, sd: Mapping[str, float] | None = None, source=""
    ) -> Prior:
        """A prior centred on `params` (e.g. `Plan.seed_grid.prior_fit`), default widths."""
        return cls(mean=dict(params), sd=dict(sd or {}), source=source)

    @classmethod
    def from_fit(cls, fit, *, sd: Mapping[str, float] | None = None) -> Prior:
        """A prior centred on a previous fit: a fitted law or a `FitRecord`.

        The fit's own intervals are not used as widths: they say how well its data
        pinned the parameters, not how far a new sweep of the same setup may land.
        """
        source = getattr(fit, "fit_id", "") or getattr(fit, "form_name", "")
        return cls(mean=dict(fit.params), sd=dict(sd or {}), source=source)

    def describe(self) -> str:
        """One line naming each parameter's mean and width, for fit notes."""
        parts = [
            f"{k}={v:.4g}" + (f" (sd {self.sd[k]:g})" if k in self.sd else "")
            for k, v in self.mean.items()
        ]
        return ", ".join(parts) + (f" from {self.source}" if self.source else "")


def as_prior(prior) -> Prior | None:
    """The front door of `fit(..., prior=)`: None, a `Prior`, or a mapping of parameters.

    Raises:
        FitError: anything else, or a mapping that is not a valid prior.
    """
    if prior is None or isinstance(prior, Prior):
        return prior
    if isinstance(prior, Mapping):
        return Prior.from_params(prior)
    raise FitError(
        f"prior: expected a Prior or a mapping of parameter values, got {type(prior).__name__}"
    )


@dataclass(frozen=True)
class PriorPenalty:
    """The prior as a penalty in a form's internal coordinates (see `huber.Penalty`).

    value(theta) = c/2 sum_k ((phi_k(theta) - mu_k) / sd_k)^2, phi = the form's record
    coordinates at `columns`; derivatives of phi by central differences (phi is linear
    in theta for Chinchilla, smooth elsewhere).
    """

    form: object
    columns: np.ndarray  # (Q,) indices into the form's record coordinates
    mu: np.ndarray  # (Q,) prior means in record coordinates
    sd: np.ndarray  # (Q,) prior widths
    scale: float  # c, see the module docstring
    prior: Prior

    def _phi(self, theta: np.ndarray) -> np.ndarray:
        return self.form.record_coords(theta)[:, self.columns]

    def _phi_jac(self, theta: np.ndarray) -> np.ndarray:
        """d phi / d theta, (K, Q, P)."""
        k, p = theta.shape
        h = 1e-6 * (1.0 + np.abs(theta))  # (K, P)
        steps = h[:, :, None] * np.eye(p)  # (K, P, P): row j moves theta_j
        both = np.concatenate([theta[:, None, :] + steps, theta[:, None, :] - steps], axis=1)
        phi = self._phi(both.reshape(-1, p)).reshape(k, 2 * p, -1)
        return ((phi[:, :p] - phi[:, p:]) / (2.0 * h[:, :, None])).transpose(0, 2, 1)

    def value(self, theta: np.ndarray) -> np.ndarray:
        """The penalty for each row of theta (K, P): (K,)."""
        z = (self._phi(theta) - self.mu) / self.sd
        return 0.5 * self.scale * np.sum(z * z, axis=-1)

    def gauss_newton(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(value (K,), gradient (K, P), Gauss-Newton Hessian (K, P, P)) at rows of theta."""
        z = (self._phi(theta) - self.mu) / self.sd
        jz = self._phi_jac(theta) / self.sd[:, None]  # (K, Q, P)
        value = 0.5 * self.scale * np.sum(z * z, axis=-1)
        grad = self.scale * np.einsum("kq,kqp->kp", z, jz)
        hess = self.scale * np.einsum("kqp,kqr->kpr", jz, jz)
        return value, grad, hess

    def precision(self, theta: np.ndarray) -> np.ndarray:
        """The prior's precision in internal coordinates at theta (P,): (P, P)."""
        jz = self._phi_jac(theta[None])[0] / self.sd[:, None]
        return jz.T @ jz

    def start(self, theta: np.ndarray) -> np.ndarray:
        """theta (P,) with the prior's parameters moved to its means: a start for the MAP."""
        coords = self.form.record_coords(theta[None])
        coords[:, self.columns] = self.mu
        return self.form.theta_from_record(coords)[0]


def prior_penalty(
    form, log_loss: np.ndarray, weights: np.ndarray, codes, theta: np.ndarray, prior, terms, delta
) -> PriorPenalty:
    """The penalty of a MAP fit, weighed against the data by the plain fit at theta (P,).

    Args:
        form: the law's form; log_loss, weights: the observations (M,).
        codes: lineage index per observation (`lineage.lineage_codes`), or None.
        theta: the plain (prior-free) fit, which measures sigma and the design effect.
        prior, terms: the `Prior` and its `prior_terms` for this form.
        delta: the Huber threshold.

    Raises:
        FitError: no more observations than parameters, so sigma cannot be measured.
    """
    p = theta.size
    runs = (weights > 0).astype(float)  # weights are precisions; each run counts once
    if runs.sum() <= p:
        raise FitError(
            f"prior: {runs.sum():g} observations for {p} parameters leave no residual "
            "to measure the noise the prior is weighed against",
            hint="fit at least one more run than the law has parameters",
        )
    pred, _ = form.log_loss(theta[None], jac=False)
    resid = pred[0] - log_loss
    lineages = fit_lineages(codes, np.clip(resid, -delta, delta), weights)
    inflation = float(runs.sum()) / lineages.effective_count(runs)
    scale = prior_scale(residual_scale(resid, weights, p, delta), delta) * inflation
    columns, mu, sd = terms
    return PriorPenalty(form, columns, mu, sd, scale, prior)


def map_starts(penalty: PriorPenalty, best: np.ndarray, solutions: np.ndarray) -> np.ndarray:
    """Starts of the MAP search: the plain optimum with the prior's parameters at their
    means, the plain optimum, and the plain search's next best local optima."""
    return np.concatenate([penalty.start(best)[None], best[None], solutions[:_N_PLAIN_STARTS]])


def prior_terms(prior: Prior, form) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(record columns, means, widths) of `prior` for `form`, each (Q,).

    Raises:
        FitError: a name the form does not have, a non-positive mean for a positive
            parameter (its log is the coordinate), or no width for a parameter that has
            no default.
    """
    names = tuple(form.public_names)
    unknown = [k for k in prior.mean if k not in names]
    if unknown:
        raise FitError(
            f"prior: the {form.name} law has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are {', '.join(names)}"
        )
    defaults = DEFAULT_SD.get(form.name, {})
    missing = [k for k in prior.mean if k not in prior.sd and k not in defaults]
    if missing:
        raise FitError(
            f"prior: no default width for {form.name}'s {', '.join(map(repr, missing))}",
            hint="give Prior(sd={...}) in the log-parametrisation (log of positive parameters)",
        )
    columns, mu, sd = [], [], []
    for name, value in prior.mean.items():
        i = names.index(name)
        if form.public_positive[i]:
            if value <= 0:
                raise FitError(f"prior: {name} must be > 0 (its log is fitted), got {value!r}")
            value = math.log(value)
        columns.append(form.record_names.index(form.public_record[i]))
        mu.append(value)
        sd.append(prior.sd.get(name, defaults.get(name)))
    return np.array(columns), np.array(mu, dtype=float), np.array(sd, dtype=float)


def _float_map(values, what: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise FitError(f"prior: {what} must be a mapping of parameter names to numbers")
    out = {}
    for name, value in values.items():
        if not isinstance(name, str):
            raise FitError(f"prior: parameter names must be strings, got {name!r}")
        try:
            out[name] = float(value)
        except (TypeError, ValueError) as err:
            raise FitError(f"prior: {what} of {name!r} must be a number, got {value!r}") from err
    return out
