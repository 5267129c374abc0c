"""bench/curves_real.py's seed-noise floor: replicates of one spec differ only in their
seeds, so their spread is the noise no early prediction can remove."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import norm

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("curves_real", BENCH / "curves_real.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while it is made
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _row(replicate: int, d_model: int, kind: str, observed: float, error: float):
    """A `trained` row: its curve's spec, a prediction off by `error` (log), the observed loss."""
    curve = SimpleNamespace(
        spec=SimpleNamespace(
            shape=SimpleNamespace(d_model=d_model), schedule=SimpleNamespace(kind=kind)
        )
    )
    pred = SimpleNamespace(mean=observed * math.exp(error))
    return (replicate, curve, 6, pred, observed)


def test_the_floor_is_the_replicates_spread_and_the_oracle_misses_by_it(bench):
    # Two replicates of 2 sizes x 2 schedules whose log final losses differ by 0.4% (constant)
    # and 1.2% (wsd): per-run seed variances d^2 / 2.
    rows = []
    for d_model, base in ((16, 2.5), (24, 2.2)):
        for kind, gap in (("constant", 0.004), ("wsd", 0.012)):
            for r, sign in ((0, 0.5), (1, -0.5)):
                rows.append(_row(r, d_model, kind, base * math.exp(sign * gap), 0.0))
    floor = bench.noise_floor(rows)
    sd = math.sqrt((0.004**2 + 0.012**2) / 4)
    assert floor.seed_sd == pytest.approx(sd, rel=1e-9)
    assert floor.seed_sd_by_schedule["wsd"] == pytest.approx(0.012 / math.sqrt(2), rel=1e-9)
    assert floor.oracle_within == pytest.approx(2 * norm.cdf(0.01 / sd) - 1, rel=1e-9)
    assert floor.oracle_all_within == pytest.approx(floor.oracle_within**8, rel=1e-9)
    # constant runs' sd 0.28% puts 99.96% of them within 1%, wsd's 0.85% only 76%
    expected = np.mean([2 * norm.cdf(0.01 / (g / math.sqrt(2))) - 1 for g in (0.004, 0.012)])
    assert floor.oracle_within_by_schedule == pytest.approx(expected, rel=1e-9)


def test_prediction_errors_split_into_what_replicates_share_and_what_moves_with_seeds(bench):
    # Each spec's two predictions miss by its own shared +-1% plus -+0.5% that flips with
    # the seeds: the shared part's rms is 1%, the seeds' sd 0.5 x sqrt(2)%.
    rows = []
    for i, d_model in enumerate((16, 24, 32, 40)):
        shared = 0.01 if i % 2 else -0.01
        for r, seed in ((0, 0.005), (1, -0.005)):
            rows.append(_row(r, d_model, "cosine", 2.0, shared + seed))
    floor = bench.noise_floor(rows)
    within_var = 2 * 0.005**2  # the unbiased variance of (+0.5%, -0.5%)
    assert floor.seed_dependent == pytest.approx(math.sqrt(within_var), rel=1e-9)
    assert floor.systematic == pytest.approx(math.sqrt(0.01**2 - within_var / 2), rel=1e-9)
    assert np.allclose(floor.errors[(16, "cosine")], [-0.005, -0.015])


def test_one_replicate_has_no_floor(bench):
    assert bench.noise_floor([_row(0, 16, "wsd", 2.4, 0.0), _row(0, 24, "wsd", 2.1, 0.0)]) is None
