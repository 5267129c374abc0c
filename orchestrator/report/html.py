"""The report as one self-contained HTML page: inline CSS, inline SVG, no scripts, no links out.

Sections, in order: loss curves, IsoFLOP profiles, the frontier, predicted vs observed,
rival forms, budget burn-down, the run table. A section whose figure could not be drawn
shows the reason instead. Every value from the store is escaped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from orchestrator.report.data import ReportData
from orchestrator.report.plots import PLOTS, Plot
from orchestrator.report.status import FitHeadline

SECTIONS = (  # (id, heading, plot function name or "", explanation)
    ("loss-curves", "Loss curves", "loss_curves", "Train loss (lines) and eval loss (dots) "
     "against tokens, coloured by model size."),
    ("isoflop", "IsoFLOP profiles", "isoflop_profiles", "Final loss against model size at "
     "each compute level, with the parabola in log N fitted per level and its minimum "
     "(Approach 2 of Hoffmann et al. 2022). A hollow star is a level left out of the fit."),
    ("frontier", "Compute-optimal frontier", "frontier", "N_opt(C) and D_opt(C) from the "
     "forms' fit, weighed by backtest, with 95% confidence bands, the IsoFLOP minima, the 20 "
     "tokens/param reference and the target compute."),
    ("residuals", "Predicted vs observed loss", "residuals", "Each finished run's loss "
     "against the fitted law's prediction, and the relative residuals by compute."),
    ("forms", "Rival forms", "rival_forms", "Each law form fitted below rolling compute "
     "cut-offs and scored on the larger runs held out: the extrapolation a scaling law is "
     "for. The fit averages the forms with these weights (held-out log predictive density)."),
    ("budget", "Budget burn-down", "budget_burn_down", "Training compute spent, committed "
     "to running runs and remaining, over the study's time."),
    ("runs", "Runs", "", "Every run of the study as the store has it; a running run's final "
     "loss is predicted from its curve so far by the annealing law fitted to the finished "
     "runs' curves."),
)  # fmt: skip

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px;
       color: #222; background: #fff; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
.meta, .explain { color: #555; }
.headline { background: #f3f6fb; border-left: 4px solid #3b6fb6; padding: 0.6em 1em; }
.note { background: #fff8e1; border-left: 4px solid #e0a800; padding: 0.5em 1em; }
figure { margin: 0.5em 0; }
figure svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 0.8em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.4em; text-align: right; }
th { background: #f0f0f0; }
td.l, th.l { text-align: left; font-family: ui-monospace, monospace; }
td { white-space: nowrap; }
.wide { overflow-x: auto; }
nav a { margin-right: 1em; }
"""


def render_html(data: ReportData, plots: list[Plot] | None = None) -> str:
    """The whole page as text."""
    by_name = {f.__name__: p for f, p in zip(PLOTS, plots or [f(data) for f in PLOTS], strict=True)}
    status = data.status
    counts = {}
    for r in status.runs:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Scaling-law report: {escape(data.experiment)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Scaling-law report: {escape(data.experiment)}</h1>",
        f'<p class="meta">{len(status.runs)} runs ('
        + escape(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")
        + f"); generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>",
        _headline(status.fit, status.fit_note),
        "<nav>" + "".join(f'<a href="#{k}">{escape(h)}</a>' for k, h, _, _ in SECTIONS) + "</nav>",
    ]
    for key, heading, plot_name, explain in SECTIONS:
        parts.append(f'<section id="{key}"><h2>{escape(heading)}</h2>')
        parts.append(f'<p class="explain">{escape(explain)}</p>')
        if plot_name:
            parts.append(_figure(by_name[plot_name]))
        if key == "forms" and not data.comparison_note and data.law is not None:
            parts.append(_forms_table(data))
        if key == "runs":
            parts.append(_run_table(data))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _headline(fit: FitHeadline | None, note: str) -> str:
    if fit is None:
        return f'<p class="note">No fit yet: {escape(note)}</p>'
    text = (
        f"At the target compute C = {fit.target_flops:.3g} FLOPs, the {fit.form} fit to "
        f"{fit.n_runs} runs gives N_opt = {_interval(fit.n_opt, '.3g')} params, "
        f"D_opt = {_interval(fit.d_opt, '.3g')} tokens and "
        f"L = {_interval(fit.loss_opt, '.4f')} nats/token (95% intervals)."
    )
    if not fit.reliable:
        text += " The fit is flagged unreliable: " + "; ".join(fit.warnings)
    return f'<p class="headline">{escape(text)}</p>'


def _figure(plot: Plot) -> str:
    note = f'<p class="note">{escape(plot.note)}</p>' if plot.note else ""
    if plot.svg is None:
        return f'<figure id="{plot.key}" data-empty="true">{note}</figure>'
    label = escape(plot.title, quote=True)
    return f'<figure id="{plot.key}" role="img" aria-label="{label}">{plot.svg}</figure>{note}'


def _forms_table(data: ReportData) -> str:
    head = (
        "<tr><th class='l'>form</th><th>origins</th><th>held-out predictions</th>"
        "<th>mean |error| (%)</th><th>90% interval covers</th><th>weight</th>"
        "<th class='l'>note</th></tr>"
    )
    rows = []
    for r in data.law.backtest_:
        scored = r.origins > 0
        rows.append(
            f"<tr><td class='l'>{escape(r.form)}</td><td>{r.origins}</td><td>{r.held_out}</td>"
            f"<td>{f'{r.mean_abs_pct_error:.2f}' if scored else '-'}</td>"
            f"<td>{f'{r.coverage:.0%}' if scored else '-'}</td><td>{r.weight:.3f}</td>"
            f"<td class='l'>{escape(r.note)}</td></tr>"
        )
    return f'<table id="forms-table">{head}{"".join(rows)}</table>'


def _run_table(data: ReportData) -> str:
    head = (
        "<tr><th class='l'>run</th><th class='l'>state</th><th>N (params)</th>"
        "<th>layers x width</th><th>ranks / ZeRO</th><th>tokens done / planned</th>"
        "<th>C (FLOPs)</th><th>final loss</th><th>eval loss</th>"
        "<th>predicted final loss (90%)</th><th>GPU-hours</th>"
        "<th>attempts</th><th class='l'>detail</th></tr>"
    )
    rows = []
    for r in data.status.runs:
        s, spec = r.summary or {}, r.spec
        shape = f"{spec.shape.n_layer} x {spec.shape.d_model}" if spec else ""
        ranks = f"{spec.world_size} / {spec.zero_stage}" if spec else ""
        rows.append(
            f"<tr><td class='l'>{escape(r.run_id)}</td><td class='l'>{escape(r.state.value)}</td>"
            f"<td>{_num(r.n_params, '.3g')}</td><td>{shape}</td><td>{ranks}</td>"
            f"<td>{r.tokens_done:.3g} / {r.tokens_planned:.3g}</td>"
            f"<td>{_num(r.flops_planned or None, '.3g')}</td>"
            f"<td>{_num(s.get('final_loss', r.latest.get('loss')), '.4f')}</td>"
            f"<td>{_num(r.eval_loss, '.4f')}</td>"
            f"<td>{_interval(r.predicted_final, '.4f') if r.predicted_final else ''}</td>"
            f"<td>{r.gpu_hours:.3g}</td>"
            f"<td>{r.attempts}</td>{_detail(r.detail)}</tr>"
        )
    return f'<div class="wide"><table id="run-table">{head}{"".join(rows)}</table></div>'


def _detail(text: str, width: int = 24) -> str:
    """A table cell with the start of `text`; the whole of it shows on hover."""
    short = text if len(text) <= width else text[: width - 3] + "..."
    return f"<td class='l' title='{escape(text, quote=True)}'>{escape(short)}</td>"


def _interval(p, fmt: str) -> str:
    return f"{format(p.mean, fmt)} [{format(p.lo, fmt)}, {format(p.hi, fmt)}]"


def _num(x, fmt: str) -> str:
    return "" if x is None or x != x else format(x, fmt)
