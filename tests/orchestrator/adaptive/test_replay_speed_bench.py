"""bench/replay_speed.py's tables: a pool of the size asked for, targets beyond it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from orchestrator.adaptive.sweep import load_sweep, load_targets

BENCH = Path(__file__).resolve().parents[3] / "bench"


def test_the_pool_has_the_runs_asked_for_and_the_targets_lie_beyond_it(tmp_path):
    spec = importlib.util.spec_from_file_location("replay_speed", BENCH / "replay_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    pool_path, targets_path = bench.write_tables(tmp_path, 300)
    pool, targets = load_sweep(pool_path), load_targets(targets_path)
    assert len(pool) == 300 and len(targets.runs) == 10
    # Compute spread over decades (not a grid), and every target above all of it.
    assert np.log10(pool.flops.max() / pool.flops.min()) > 4
    assert min(6 * t.n_params * t.tokens for t in targets.runs) > pool.flops.max()
    assert all(loss is not None and np.isfinite(loss) for loss in targets.loss)
