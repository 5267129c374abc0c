"""Seed-to-seed noise of the loss, as the adaptive loop's information matrix needs it.

The noise is the std of log-loss between runs that differ only in their seed. Pooled
over every group of such runs (sum of squared deviations from each group's mean over
the sum of (size - 1)) when that gives at least `min_dof` degrees of freedom; otherwise
the rms residual of the fitted law, which also holds any misfit of the law (an upper
bound on the noise, hence a cautious design); otherwise a default of 1%.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT = 0.01  # std of log-loss when nothing measures it: typical of LM seed variation


def estimate_noise(groups: Iterable[Sequence[float]], law=None, *, min_dof: int = 2) -> float:
    """Std of log-loss. groups: the losses (nats) of each set of runs alike but for the
    seed; law: a fitted HuberLaw for the fallback (None: no fit yet)."""
    ss, dof = 0.0, 0
    for losses in groups:
        logs = np.log(np.asarray(losses, dtype=float))
        ss += float(np.sum((logs - logs.mean()) ** 2))
        dof += logs.size - 1
    if dof >= min_dof:
        return math.sqrt(ss / dof)
    if law is None:
        return DEFAULT
    n, d, loss, weights = law.observations_
    # Residual degrees of freedom M - P (not `law.dof_`, which runs sharing a lineage lower
    # for the intervals' t): the rms is a per-run noise, whatever the lineages.
    dof = float(np.count_nonzero(weights)) - law.theta_.size  # runs, not weights (precision)
    if dof > 0:
        resid = np.log(loss) - np.log(law.predict(n, d).mean)
        return float(np.sqrt(np.sum(weights * resid**2) / dof))
    return DEFAULT
