"""Redraw two of `orch report`'s plots from `orch export`'s tables alone.

    orch export experiments/local --out /tmp/local
    python docs/rebuild_plots.py /tmp/local --save /tmp/local/plots

Writes loss_curves.png (train loss against tokens, one line per run, coloured by model
size) and isoflop_profiles.png (final loss against N per compute level, with a parabola
in log N and its minimum, as the report's IsoFLOP section fits). Only pyarrow, numpy and
matplotlib: a starting point for figures of your own (docs/notebooks.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

LEVEL_TOL_DEX = 0.05  # runs within 12% of compute share a level, as the report groups them


def loss_curves(runs: dict, curves: dict, path: Path) -> None:
    n_of = dict(zip(runs["run_id"], runs["N"], strict=True))
    ids = np.asarray(curves["run_id"], dtype=object)
    tokens = np.asarray(curves["tokens"], dtype=float)
    loss = np.asarray(curves["loss"], dtype=float)
    sizes = [n for n in n_of.values() if n]
    norm = LogNorm(min(sizes), max(sizes) * 1.01)
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for run_id in sorted(set(ids), key=lambda r: n_of.get(r) or 0):
        mine = (ids == run_id) & np.isfinite(loss)
        if mine.any() and n_of.get(run_id):
            ax.plot(tokens[mine], loss[mine], color=plt.cm.viridis(norm(n_of[run_id])), lw=1)
    fig.colorbar(plt.cm.ScalarMappable(norm, "viridis"), ax=ax, label="N (non-embedding params)")
    ax.set(xscale="log", xlabel="training tokens D", ylabel="train loss (nats/token)")
    ax.set_title(f"Loss curves: {len(set(ids))} runs")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def isoflop_profiles(runs: dict, path: Path) -> None:
    done = [i for i, s in enumerate(runs["state"]) if s == "finished" and runs["loss"][i]]
    c = np.array([runs["C"][i] for i in done], dtype=float)
    n = np.array([runs["N"][i] for i in done], dtype=float)
    y = np.array([runs["loss"][i] for i in done], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for k, members in enumerate(_levels(c)):
        colour = plt.cm.plasma(0.85 * k / max(1, len(_levels(c)) - 1))
        level = float(np.exp(np.mean(np.log(c[members]))))
        ax.plot(n[members], y[members], "o", color=colour, label=f"C = {level:.2g} FLOPs")
        if members.size >= 3:
            x = np.log(n[members])
            c2, c1, c0 = np.polyfit(x, y[members], 2)
            grid = np.linspace(x.min() - 0.3, x.max() + 0.3, 80)
            ax.plot(np.exp(grid), c0 + c1 * grid + c2 * grid**2, "-", color=colour, lw=1)
            if c2 > 0:  # a minimum
                best = -c1 / (2 * c2)
                ax.plot(np.exp(best), c0 + c1 * best + c2 * best**2, "*", ms=12, color=colour)
    ax.set(xscale="log", xlabel="N (non-embedding params)", ylabel="final loss (nats/token)")
    ax.set_title("IsoFLOP profiles: a parabola in log N per compute level")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _levels(c: np.ndarray) -> list[np.ndarray]:
    """Runs grouped by compute: a level takes runs within LEVEL_TOL_DEX of its first."""
    order = np.argsort(c)
    levels, current = [], []
    for i in order:
        if current and np.log10(c[i] / c[current[0]]) > 2 * LEVEL_TOL_DEX:
            levels.append(np.array(current))
            current = []
        current.append(i)
    return levels + ([np.array(current)] if current else [])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", help="the directory `orch export --out` wrote")
    p.add_argument("--save", required=True, help="directory for the PNG files")
    args = p.parse_args(argv)
    tables, out = Path(args.tables), Path(args.save)
    out.mkdir(parents=True, exist_ok=True)
    runs = pq.read_table(tables / "runs.parquet").to_pydict()
    curves = pq.read_table(tables / "curves.parquet", columns=["run_id", "tokens", "loss"])
    loss_curves(runs, curves.to_pydict(), out / "loss_curves.png")
    isoflop_profiles(runs, out / "isoflop_profiles.png")
    print(f"wrote {out / 'loss_curves.png'} and {out / 'isoflop_profiles.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
