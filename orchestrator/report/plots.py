"""The report's figures, drawn with matplotlib (no pyplot, no display) into inline SVG.

Each function takes the gathered `ReportData` and returns a `Plot`: the SVG text, or
None with a note saying what data is missing. Text stays text in the SVG
(`svg.fonttype: none`), so titles and labels are searchable in the page and small.
Every figure has a title, axis labels with units and a legend.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from orchestrator.report.data import ReportData

log = logging.getLogger(__name__)

_TOKENS_PER_PARAM = 20.0  # Chinchilla's rule of thumb (Hoffmann et al. 2022, Table 3)
_WIDE = (10.0, 4.2)  # inches: two panels side by side
_SINGLE = (7.5, 4.5)
_SMALL = (6.5, 3.4)


@dataclass(frozen=True)
class Plot:
    """One figure of the report, or why it could not be drawn."""

    key: str  # HTML id of the figure
    title: str
    svg: str | None  # inline <svg> element; None when there is nothing to draw
    note: str = ""  # why not (svg None), or a caution shown under the figure


def loss_curves(data: ReportData) -> Plot:
    key, title = "plot-loss-curves", "Loss curves by model size"
    curves = [c for c in data.curves if c.tokens.size or c.eval_tokens.size]
    if not curves:
        return Plot(key, title, None, "no run has logged a loss yet")
    sizes = np.array([c.n_params for c in curves])
    known = sizes[np.isfinite(sizes)]
    lo, hi = (known.min(), known.max()) if known.size else (1.0, 10.0)
    norm = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 10)
    cmap = mpl.colormaps["viridis"]

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for c in curves:
            colour = cmap(norm(c.n_params)) if math.isfinite(c.n_params) else "grey"
            ax.plot(c.tokens, c.loss, color=colour, lw=1.2, alpha=0.9)
            ax.plot(c.eval_tokens, c.eval_loss, "o", color=colour, ms=4, mec="black", mew=0.4)
        ax.set_xscale("log")
        ax.set_xlabel("training tokens D (tokens)")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(f"{title}: {len(curves)} runs")
        ax.plot([], [], "-", color="grey", label="train loss")
        ax.plot([], [], "o", color="grey", mec="black", mew=0.4, label="eval loss")
        ax.legend(loc="upper right")
        bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax)
        bar.set_label("model size N (non-embedding params)")
        ax.grid(True, which="major", alpha=0.3)

    return Plot(key, title, _svg(draw, _SINGLE, key))


def isoflop_profiles(data: ReportData) -> Plot:
    key, title = "plot-isoflop", "IsoFLOP profiles"
    obs = data.observations
    if obs is None:
        return Plot(key, title, None, "no finished runs yet")
    cmap = mpl.colormaps["plasma"]
    colours = [cmap(0.85 * i / max(1, len(data.levels) - 1)) for i in range(len(data.levels))]

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for members, colour in zip(data.levels, colours, strict=True):
            c = float(np.exp(np.mean(np.log(obs.flops[members]))))
            ax.plot(obs.n_params[members], obs.loss[members], "o", color=colour, ms=5)
            ax.plot([], [], "o-", color=colour, label=f"C = {c:.2g} FLOPs")
        for p, colour in zip(data.profiles, colours, strict=True):
            if not all(math.isfinite(v) for v in p.coef):
                continue
            x = np.linspace(np.log(p.n_params.min()) - 0.3, np.log(p.n_params.max()) + 0.3, 80)
            c0, c1, c2 = p.coef
            ax.plot(np.exp(x), c0 + c1 * x + c2 * x * x, "-", color=colour, lw=1.2)
            if math.isfinite(p.n_opt):
                ax.plot(
                    p.n_opt, p.loss_opt, "*", ms=13, mec="black", mew=0.6,
                    color=colour if p.used else "white",
                )  # fmt: skip
        ax.plot([], [], "*", color="grey", mec="black", ms=11, label="parabola minimum")
        ax.set_xscale("log")
        ax.set_xlabel("model size N (non-embedding params)")
        ax.set_ylabel("final loss (nats/token)")
        ax.set_title(f"{title}: fitted parabolas in log N and their minima")
        ax.legend(fontsize="small", loc="best")
        ax.grid(True, which="major", alpha=0.3)

    left_out = [
        f"level C = {p.flops:.2g} left out: {p.reason}" for p in data.profiles if not p.used
    ]
    note = "; ".join([*left_out, *([data.isoflop_note] if data.isoflop_note else [])])
    return Plot(key, title, _svg(draw, _SINGLE, key), note)


def frontier(data: ReportData) -> Plot:
    key, title = "plot-frontier", "Compute-optimal frontier"
    law, iso, obs = data.law, data.isoflop, data.observations
    if obs is None or (law is None and iso is None):
        return Plot(key, title, None, data.law_note or data.isoflop_note)
    c_obs = obs.flops
    target = data.status.target_flops
    top = max(c_obs.max(), target or 0.0)
    grid = np.logspace(np.log10(c_obs.min()) - 0.3, np.log10(top) + 0.3, 60)
    band = law.frontier(grid, level=0.95) if law is not None else None
    at_target = law.frontier(target, level=0.95) if law is not None and target else None
    ref_n = _tokens_per_param_n(obs.axis, grid, _TOKENS_PER_PARAM)
    weights = law.weights_.items() if law is not None else ()
    fitted = ", ".join(f"{form} {w:.0%}" for form, w in weights if w >= 0.005)

    def draw(fig: Figure) -> None:
        panels = fig.subplots(1, 2)
        for ax, what, ref, unit in (
            (panels[0], "n_opt", ref_n, "params"),
            (panels[1], "d_opt", _TOKENS_PER_PARAM * ref_n, "tokens"),
        ):
            name = "N_opt" if what == "n_opt" else "D_opt"
            if band is not None:
                pred = getattr(band, what)
                ax.fill_between(grid, pred.lo, pred.hi, color="C0", alpha=0.25, label="95% band")
                ax.plot(grid, pred.mean, "C0-", label=f"{name}(C), forms by weight: {fitted}")
            ax.plot(grid, ref, "k--", lw=1, label="20 tokens/param")
            if iso is not None:
                used = [p for p in iso.profiles if p.used]
                c = np.array([p.flops for p in used])
                n = np.array([p.n_opt for p in used])
                y = n if what == "n_opt" else obs.axis.tokens(n, c)
                ax.plot(c, y, "s", color="C1", mec="black", label="IsoFLOP minima")
            if target:
                ax.axvline(target, color="C3", ls=":", label=f"target C = {target:.2g}")
                if at_target is not None:
                    p = getattr(at_target, what)
                    ax.errorbar(
                        [target], [p.mean], yerr=[[p.mean - p.lo], [p.hi - p.mean]],
                        fmt="o", color="C3", capsize=4,
                    )  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"compute C (FLOPs, counted as {obs.axis.name})")
            ax.set_ylabel(f"{name} ({unit})")
            ax.set_title(f"{name}(C)")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize="small", loc="upper left")
        fig.suptitle(title)

    return Plot(key, title, _svg(draw, _WIDE, key), data.law_note)


def residuals(data: ReportData) -> Plot:
    key, title = "plot-residuals", "Predicted vs observed loss"
    law, obs = data.law, data.observations
    if law is None or obs is None:
        return Plot(key, title, None, data.law_note)
    predicted = np.asarray(law.predict(obs.n_params, obs.tokens).mean)
    c = obs.flops
    pct = 100.0 * (obs.loss / predicted - 1.0)

    def draw(fig: Figure) -> None:
        left, right = fig.subplots(1, 2)
        norm = LogNorm(vmin=c.min(), vmax=max(c.max(), c.min() * 1.01))
        points = left.scatter(predicted, obs.loss, c=c, norm=norm, cmap="viridis", s=22)
        lo, hi = min(predicted.min(), obs.loss.min()), max(predicted.max(), obs.loss.max())
        left.plot([lo, hi], [lo, hi], "k--", lw=1, label="observed = predicted")
        left.scatter([], [], color="grey", s=22, label="finished runs")
        left.set_xlabel("predicted loss (nats/token)")
        left.set_ylabel("observed loss (nats/token)")
        left.set_title("observed against the fit")
        left.legend(fontsize="small", loc="upper left")
        right.axhline(0.0, color="black", lw=1, label="no error")
        right.scatter(c, pct, c=c, norm=norm, cmap="viridis", s=22)
        right.scatter([], [], color="grey", s=22, label="residual of a run")
        right.set_xscale("log")
        right.xaxis.set_minor_formatter(NullFormatter())  # a narrow range labels every minor tick
        right.set_xlabel("compute C (FLOPs)")
        right.set_ylabel("residual: observed / predicted - 1 (%)")
        right.set_title(f"residuals (RMS {np.sqrt(np.mean(pct**2)):.2f}%)")
        right.legend(fontsize="small", loc="best")
        fig.colorbar(points, ax=right).set_label("compute C (FLOPs)")
        for ax in (left, right):
            ax.grid(True, alpha=0.3)
        fig.suptitle(title)

    return Plot(key, title, _svg(draw, _WIDE, key))


def rival_forms(data: ReportData) -> Plot:
    key, title = "plot-forms", "Rival forms: extrapolation to held-out compute"
    if data.comparison_note or data.law is None:
        return Plot(key, title, None, data.comparison_note or data.law_note)
    rows = [r for r in data.law.backtest_ if r.origins]

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r.mean_abs_pct_error for r in rows], 0.4, label="mean |error| (%)")
        ax.set_xticks(x, [f"{r.form}\nweight {r.weight:.2f}" for r in rows])
        ax.set_ylabel("held-out loss error (%)")
        cover = ax.twinx()
        cover.bar(x + 0.2, [100 * r.coverage for r in rows], 0.4, color="C1", label="coverage")
        cover.axhline(90, color="C1", ls=":", lw=1, label="90% (the intervals' level)")
        cover.set_ylabel("90% prediction intervals covering (%)")
        cover.set_ylim(0, 105)
        ax.set_title(title)  # the section says how the origins are made
        handles = [h for a in (ax, cover) for h in a.get_legend_handles_labels()[0]]
        # Below the axes: inside them, any corner can hide a bar (a form's error or
        # coverage may be the tallest of either axis).
        fig.legend(handles, [h.get_label() for h in handles], fontsize="small", ncol=3,
                   loc="outside lower center", frameon=False)  # fmt: skip
        ax.grid(True, axis="y", alpha=0.3)

    return Plot(key, title, _svg(draw, _SMALL, key))


def budget_burn_down(data: ReportData) -> Plot:
    key, title = "plot-budget", "Budget burn-down"
    h = data.history
    if h is None:
        return Plot(key, title, None, data.history_note)
    whole = h.budget_flops or h.planned_flops

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        used = h.spent_flops + h.committed_flops
        ax.fill_between(h.hours, 0, h.spent_flops, step="post", color="C2", alpha=0.6)
        ax.fill_between(h.hours, h.spent_flops, used, step="post", color="C1", alpha=0.4)
        ax.fill_between([], [], color="C2", alpha=0.6, label="spent")
        ax.fill_between([], [], color="C1", alpha=0.4, label="committed (running)")
        ax.step(h.hours, whole - used, where="post", color="C0", label="remaining")
        if h.budget_flops:
            ax.axhline(h.budget_flops, color="C3", ls="--", label="budget")
        ax.axhline(h.planned_flops, color="grey", ls=":", label="planned")
        ax.set_xlabel("time since the first run started (hours)")
        ax.set_ylabel("training compute (FLOPs)")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the data
        ax.grid(True, alpha=0.3)

    return Plot(key, title, _svg(draw, _SINGLE, key))


PLOTS: tuple[Callable[[ReportData], Plot], ...] = (
    loss_curves,
    isoflop_profiles,
    frontier,
    residuals,
    rival_forms,
    budget_burn_down,
)


def _tokens_per_param_n(axis, flops: np.ndarray, tokens_per_param: float) -> np.ndarray:
    """N whose D = k N tokens spend C on `axis` (for 6ND, sqrt(C / (6 k)))."""
    n = np.logspace(0, 16, 3200)
    spent = axis.flops(n, tokens_per_param * n)  # increasing in N
    return np.exp(np.interp(np.log(flops), np.log(spent), np.log(n)))


def _svg(draw: Callable[[Figure], None], size: tuple[float, float], key: str) -> str:
    """`draw` on a fresh figure, as an <svg> element (no XML prologue, for inline HTML)."""
    # A salt per figure: matplotlib derives element ids from content, and two inline
    # SVGs sharing an id would clip or mark each other's paths.
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": key, "font.size": 9}):
        fig = Figure(figsize=size, layout="constrained")
        draw(fig)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]
