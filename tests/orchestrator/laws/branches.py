"""Simulated WSD studies with cooldown branches: parents whose branches share their noise.

Shared by the lineage tests of the laws and of the active strategy. Truth: Hoffmann et
al.'s Chinchilla fit (conftest.HOFFMANN). Parents: 4 sizes log-spaced over a factor 10
around the true N_opt at each of 3 compute levels (1e18-1e20 FLOPs), 12 in all. Each
parent has k branches that cooled down after 25%, 50% and 75% of its tokens. Noise on
log L: a lineage draw shared by a parent and its branches (sd `shared`) plus a small
draw of each run's own (sd `own`), so a lineage's runs are correlated 0.96.
"""

from __future__ import annotations

import numpy as np

from tests.orchestrator.laws.conftest import hoffmann_loss, hoffmann_n_opt

LEVELS = (1e18, 1e19, 1e20)  # FLOPs of the parents
BRANCH_FRACTIONS = (0.25, 0.5, 0.75)  # a branch's tokens / its parent's


def parents() -> tuple[np.ndarray, np.ndarray]:
    """(N, D) of the 12 parent runs."""
    n = np.concatenate([hoffmann_n_opt(c) * np.geomspace(0.3, 3.0, 4) for c in LEVELS])
    c = np.repeat(LEVELS, 4)
    return n, c / (6 * n)


def branch_design() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, lineage label) of every run: each parent, then its branches."""
    pn, pd = parents()
    fractions = np.array((1.0, *BRANCH_FRACTIONS))
    n = np.repeat(pn, fractions.size)
    d = (pd[:, None] * fractions).ravel()
    labels = np.repeat([f"parent{i}" for i in range(pn.size)], fractions.size)
    return n, d, labels


def branch_study(seed: int, *, shared: float = 0.01, own: float = 0.002):
    """(N, D, L, lineage label) of one simulated study; `seed` fixes every draw."""
    n, d, labels = branch_design()
    rng = np.random.default_rng(seed)
    _, codes = np.unique(labels, return_inverse=True)
    lineage = shared * rng.standard_normal(codes.max() + 1)[codes]
    loss = hoffmann_loss(n, d) * np.exp(lineage + own * rng.standard_normal(n.size))
    return n, d, loss, labels
