"""Lineages: runs that share weights and seed noise, such as a run and its cooldown branches.

With a WSD schedule a study trains cooldown branches: runs that start from a parent
run's stable-phase checkpoint (`RunSpec.branch_from`). A parent and its branches share
the initialisation, the data order and every update up to the branch point, so the
seed-to-seed part of their losses is largely one draw. Counting them as independent
runs makes the fit look better informed than it is.

`fit(..., groups=labels)` gives each observation a lineage label (runs with one label
share a lineage). The model: within a lineage the Huber scores psi(r_i) of the log-loss
residuals are exchangeably correlated, corr(psi_i, psi_k) = rho for i != k, and
lineages are independent. The point fit is unchanged (working independence, as in
generalised estimating equations, Liang and Zeger 1986: still consistent); what changes
is its covariance and what resampling does:

- Covariance: the M-estimator's sandwich tau^2 H^-1 B H^-1 with H = J^T W J. With
  exchangeable correlation the meat would be J^T W R W J; we use its upper bound

      B = sum_i w_i (1 + (m_g - 1) rho) j_i j_i^T,     m_g: the runs in i's lineage,

  each run's term inflated by its lineage's design effect (Kish 1965). By
  Cauchy-Schwarz (sum_g j)(sum_g j)^T <= m_g sum_g j j^T, so B bounds the exchangeable
  meat from above, and B >= H: the intervals never get narrower than independence. With
  precision weights (a run stopped early weighs less, see `covariance`) each term is
  w_i^2 E[psi_i^2] j_i j_i^T instead, and the same bound holds with m_g still counting
  runs: a weight says how much a run is trusted, not how many runs it stands for. It
  is exact for quantities every run of a lineage informs alike (E, the level of L) and
  conservative for within-lineage contrasts (the D slope along one parent's branches),
  which the exchangeable model would call nearly free of noise. We do not take that
  credit: branches leave the parent at different steps, so their shared noise is a
  trajectory, not one constant, and with few lineages nothing could check the claim.
  An empirical cluster-robust sandwich (sum over lineages of score outer products) is
  avoided for the same reason: with G lineages its meat has rank <= G, fewer than the
  5-9 parameters in a typical study, and it is biased low with few clusters (Cameron
  and Miller 2015); one pooled rho borrows strength across all lineages.
- rho: the pooled within-lineage correlation of psi (`lineage_correlation`), the
  moment estimator of Liang and Zeger for an exchangeable working correlation, applied
  to the scores rather than the raw residuals because the scores are what enter B.
  Clipped to [0, 1]: a negative estimate is noise, not a reason for narrower intervals.
- Degrees of freedom for the Student t: the Kish effective number of runs,
  sum_g m_g / (1 + (m_g - 1) rho), minus the parameter count (m_g counts runs here too).
- Bootstrap: whole lineages are resampled with replacement (the cluster bootstrap,
  Davison and Hinkley 1997, Sec. 3.8).

With every label distinct (or groups=None) all of this reduces exactly to the
independent-run formulas.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from orchestrator.laws.base import FitError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lineages:
    """The lineage of each observation and the within-lineage correlation of the fit."""

    codes: np.ndarray  # (M,) lineage index of each observation, numbered by first appearance
    count: int  # G, the number of lineages
    corr: float  # rho, within-lineage correlation of the Huber scores (0 with no pairs)

    @property
    def shared(self) -> bool:
        """Whether some lineage holds more than one observation."""
        return self.count < self.codes.size

    def design_effects(self, counts: np.ndarray) -> np.ndarray:
        """Each observation's design effect 1 + (m_g - 1) rho, (M,); m_g: the sum of
        `counts` (M,) over its lineage, how many runs each observation is (a fit passes
        1 per run of positive weight, whatever its precision weight)."""
        sizes = np.bincount(self.codes, weights=counts, minlength=self.count)
        return 1.0 + np.maximum(sizes[self.codes] - 1.0, 0.0) * self.corr

    def effective_count(self, counts: np.ndarray) -> float:
        """Kish's effective number of independent runs, sum_g m_g / (1 + (m_g - 1) rho),
        m_g summing `counts` (M,) as in `design_effects`."""
        sizes = np.bincount(self.codes, weights=counts, minlength=self.count)
        return float(np.sum(sizes / (1.0 + np.maximum(sizes - 1.0, 0.0) * self.corr)))


def lineage_codes(groups, m: int) -> np.ndarray | None:
    """Lineage indices (M,) numbered by first appearance, or None for groups=None.

    Numbering by first appearance makes all-distinct labels the identity 0..M-1, so
    that a cluster bootstrap of distinct lineages draws exactly the run bootstrap.

    Raises:
        FitError: not one hashable, non-None label per observation.
    """
    if groups is None:
        return None
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__len__"):
        raise FitError(
            f"groups: expected a sequence of {m} lineage labels (one per observation), "
            f"got {type(groups).__name__}"
        )
    labels = list(groups.tolist() if isinstance(groups, np.ndarray) else groups)
    if len(labels) != m:
        raise FitError(
            f"groups: expected {m} lineage labels (one per observation), got {len(labels)}",
            hint="give each run the run_id of the run its lineage starts from",
        )
    index: dict[object, int] = {}
    codes = np.empty(m, dtype=np.intp)
    for i, label in enumerate(labels):
        if label is None:
            raise FitError(f"groups[{i}] is None: every observation needs a lineage label")
        try:
            codes[i] = index.setdefault(label, len(index))
        except TypeError as err:
            raise FitError(f"groups[{i}] = {label!r} is not hashable: {err}") from err
    return codes


def lineage_correlation(psi: np.ndarray, weights: np.ndarray, codes: np.ndarray) -> float:
    """Pooled within-lineage correlation of the scores psi, clipped to [0, 1].

    rho = [sum over pairs i != k in one lineage of w_i w_k psi_i psi_k / number of such
    pairs] / [weighted mean of psi^2]; 0 when no lineage holds two runs.
    """
    count = int(codes.max()) + 1 if codes.size else 0
    wpsi = weights * psi
    sums = np.bincount(codes, weights=wpsi, minlength=count)
    cross = float(np.sum(sums**2) - np.sum(wpsi**2))
    sizes = np.bincount(codes, weights=weights, minlength=count)
    pairs = float(np.sum(sizes**2) - np.sum(weights**2))
    mean_sq = float(np.sum(weights * psi**2) / np.sum(weights))
    if pairs <= 0 or mean_sq <= 0:
        return 0.0
    return float(np.clip(cross / pairs / mean_sq, 0.0, 1.0))


def fit_lineages(codes: np.ndarray | None, psi: np.ndarray, weights: np.ndarray) -> Lineages:
    """The `Lineages` of a fit from its scores psi; groups=None is one run per lineage."""
    m = psi.size
    if codes is None:
        return Lineages(codes=np.arange(m), count=m, corr=0.0)
    count = int(codes.max()) + 1 if m else 0
    corr = lineage_correlation(psi, weights, codes) if count < m else 0.0
    return Lineages(codes=codes, count=count, corr=corr)


def resample_counts(
    rng: np.random.Generator, codes: np.ndarray, n: int, *, strata: np.ndarray | None = None
) -> np.ndarray:
    """(n, M) draw counts of a cluster bootstrap: G lineages drawn with replacement, each
    observation counted as often as its lineage. With M distinct lineages this is the same
    draw (and the same counts) as a bootstrap over runs from the same generator.

    strata: optional label per lineage (G,): lineages are then drawn within each stratum,
    as many as it holds (a design's fixed groups, e.g. model sizes, are not a sample)."""
    count = int(codes.max()) + 1
    if strata is None:
        drawn = rng.multinomial(count, np.full(count, 1.0 / count), size=n)
        return drawn[:, codes]
    drawn = np.zeros((n, count), dtype=np.int64)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        k = members.size
        drawn[:, members] = rng.multinomial(k, np.full(k, 1.0 / k), size=n)
    return drawn[:, codes]
