"""Approach 3 fit speed: the project's fitter vs a loop of scipy L-BFGS-B over the same starts.

Both fit Chinchilla's law to the Epoch AI extraction of Hoffmann et al.'s runs (240
runs after dropping the 5 highest losses) by the plain Huber (delta = 1e-3) sum on
log-loss residuals, from Hoffmann's 4,500-start grid. The baseline calls
`scipy.optimize.minimize(method="L-BFGS-B")` once per start, with the exact analytic
gradient (a numeric gradient would be several times slower and flatter the ratio).
The fitter screens all starts in one numpy batch, refines the best with batched
Gauss-Newton, and polishes with L-BFGS-B. Then 1,000 bootstrap refits are timed.

Prints one Markdown section to stdout (`make bench` collects it into bench/RESULTS.md)
and exits 0. Usage: python bench/fit_speed.py [--baseline-every K] [--bootstrap N]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# One BLAS thread: both contenders do tiny linear algebra, where a second OpenBLAS thread
# only spins (doubling CPU time, not cutting wall time) and competes with training jobs.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.special import huber  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.laws import Chinchilla  # noqa: E402
from orchestrator.laws.base import grid_product  # noqa: E402
from orchestrator.laws.chinchilla import HOFFMANN_GRID  # noqa: E402

DATA = Path("/work/shared/data/chinchilla_epoch_svg_extracted.csv")
DELTA = 1e-3
# Besiroglu et al. (2024): "replicate exactly" optimum and 95 % bootstrap intervals.
PUBLISHED = {"A": 477.84, "B": 2143.86, "E": 1.81724, "alpha": 0.34731, "beta": 0.36718}
PUBLISHED_CI = {"alpha": (0.317, 0.373), "beta": (0.331, 0.415), "E": (1.769, 1.871)}


def load_runs(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, L) of the 240 runs kept by the data README's filter."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = loss < np.sort(loss)[-5]
    return n[keep], c[keep] / (6 * n[keep]), loss[keep]


def baseline_objective(x, log_n, log_d, log_l):
    """Huber sum and its gradient in (a, b, e, alpha, beta), as in the Epoch notebook."""
    a, b, e, alpha, beta = x
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)
    w = np.exp(terms - top)
    total = w.sum(axis=0)
    r = top + np.log(total) - log_l
    w /= total
    psi = np.clip(r, -DELTA, DELTA)
    grad = np.array(
        [psi @ w[0], psi @ w[1], psi @ w[2], -(psi * w[0]) @ log_n, -(psi * w[1]) @ log_d]
    )
    return float(huber(DELTA, r).sum()), grad


class Timer:
    """Wall and process CPU seconds of a block; CPU time is less disturbed by other jobs."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run_baseline(starts, log_n, log_d, log_l):
    best = None
    with Timer() as timer:
        for x0 in starts:
            res = minimize(
                baseline_objective, x0, args=(log_n, log_d, log_l), jac=True, method="L-BFGS-B"
            )
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
    return timer, best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline-every",
        type=int,
        default=1,
        help="run the baseline on every K-th start only (quick look)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap refits to time")
    parser.add_argument("--repeats", type=int, default=3, help="fitter timings (median shown)")
    args = parser.parse_args(argv)

    print("## Approach 3 fit speed (`bench/fit_speed.py`)\n")
    command = " ".join(["python bench/fit_speed.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"Command: `{command}`\n")
    if not DATA.is_file():
        print(f"Skipped: {DATA} not found.\n")
        return 0
    n, d, loss = load_runs(DATA)
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    names = ("a", "b", "e", "alpha", "beta")
    starts = grid_product(HOFFMANN_GRID, names)[:: args.baseline_every]

    base_t, base = run_baseline(starts, log_n, log_d, log_l)
    scale = args.baseline_every  # baseline time per 4,500 starts = measured x scale

    timers, law = [], None
    for _ in range(args.repeats):
        with Timer() as timer:
            law = Chinchilla().fit(n, d, loss)
        timers.append(timer)
    fit_wall = statistics.median(t.wall for t in timers)
    fit_cpu = statistics.median(t.cpu for t in timers)
    coords = law.form_.record_coords(law.theta_[None])[0]
    fit_obj, _ = baseline_objective(coords, log_n, log_d, log_l)

    with Timer() as boot_t:
        ensemble = law.bootstrap(args.bootstrap, seed=0)
    ci = ensemble.param_intervals(level=0.95)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{len(loss)} runs; {len(starts)} baseline starts; the fitter screens all "
        f"{law.n_starts_} starts (4,500 grid + {law.n_starts_ - 4500} variable-projection) "
        f"in one batch. {os.cpu_count()} cores, load average {load:.1f} at the end, "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}; "
        f"Python {platform.python_version()}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}.\n"
    )
    scaled = f" (x{scale} to 4,500 starts)" if scale > 1 else ""
    print("| measure | wall | CPU |")
    print("|---|---|---|")
    print(
        f"| baseline: {len(starts)} x `minimize(L-BFGS-B)`{scaled} | "
        f"{base_t.wall * scale:.2f} s | {base_t.cpu * scale:.2f} s |"
    )
    print(f"| project fitter, median of {args.repeats} | {fit_wall:.3f} s | {fit_cpu:.3f} s |")
    print(
        f"| speed-up (goal >= 20x) | {base_t.wall * scale / fit_wall:.0f}x | "
        f"{base_t.cpu * scale / fit_cpu:.0f}x |"
    )
    print(
        f"| {args.bootstrap} bootstrap refits (goal < 30 s) | {boot_t.wall:.2f} s | "
        f"{boot_t.cpu:.2f} s |"
    )
    print()
    print("| result | value |")
    print("|---|---|")
    print(f"| baseline best objective | {base.fun:.15g} |")
    print(f"| fitter objective | {fit_obj:.15g} |")
    verdict = "yes" if fit_obj <= base.fun else f"no (+{fit_obj - base.fun:.3g})"
    print(f"| fitter objective <= baseline best | {verdict} |")
    for name, published in PUBLISHED.items():
        value = law.params[name]
        print(
            f"| {name}: fitted (published) | {value:.6g} ({published}, "
            f"{100 * (value / published - 1):+.3f} %) |"
        )
    for name, (lo, hi) in PUBLISHED_CI.items():
        print(
            f"| {name} 95 % bootstrap CI (published) | ({ci[name].lo:.4g}, {ci[name].hi:.4g}) "
            f"(({lo}, {hi})) |"
        )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
