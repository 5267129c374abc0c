"""`orch report`: one self-contained page, every section drawn, read by a real browser."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from orchestrator.report import PLOTS, SECTIONS, gather, render_html, write_report
from orchestrator.report.browser import dump_dom, find_chromium, screenshot
from storage.store import Store

PLOT_IDS = [f"plot-{k}" for k in ("loss-curves", "isoflop", "frontier", "residuals")] + [
    "plot-forms",
    "plot-budget",
]
needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason="no chromium on PATH (make test installs it)"
)


@pytest.fixture(scope="module")
def finished_report(finished_study, tmp_path_factory) -> tuple[Path, list]:
    return write_report(Store(str(finished_study)), tmp_path_factory.mktemp("r") / "report.html")


def test_every_plot_has_title_axis_units_and_legend(finished_report):
    _, plots = finished_report
    assert [p.key for p in plots] == PLOT_IDS
    for plot in plots:
        assert plot.svg is not None, f"{plot.key}: {plot.note}"
        assert plot.title.split(":")[0] in plot.svg  # text stays text in the SVG
        assert 'id="legend_1"' in plot.svg, plot.key
        # Axis labels end in "(unit)", e.g. "(FLOPs)" or "(non-embedding params)".
        units = re.findall(r"\((?:[^()<>]*\s)?(FLOPs|nats/token|tokens|params|%|hours)\)", plot.svg)
        assert len(units) >= 2, f"{plot.key}: axes without units"


def test_report_is_self_contained(finished_report):
    path, _ = finished_report
    page = path.read_text()
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", page)  # nothing fetched
    assert page.count("<svg") == len(PLOT_IDS)


@pytest.mark.slow
@needs_chromium
def test_report_renders_in_headless_chromium(finished_report, finished_study):
    path, _ = finished_report
    png = screenshot(path, path.with_suffix(".png"), width=1200, height=1600)
    pixels = mpimg.imread(png)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    ink = (pixels < 0.9).any(axis=2)
    assert ink.mean() > 0.03, "the screenshot is (nearly) blank"
    assert np.unique(pixels.reshape(-1, 3).round(2), axis=0).shape[0] > 50  # plots, not text only
    dom = dump_dom(path)
    for key, heading, _, _ in SECTIONS:
        assert re.search(rf'<section id="{key}"><h2>{re.escape(heading)}</h2>', dom), key
    for plot_id in PLOT_IDS:
        figure = re.search(rf'<figure id="{plot_id}"[^>]*>(.*?)</figure>', dom, re.S)
        assert figure and "<svg" in figure.group(1), plot_id
    run_ids = Store(str(finished_study)).run_ids()
    table = re.search(r'<table id="run-table">(.*?)</table>', dom, re.S).group(1)
    assert all(run_id in table for run_id in run_ids)


@pytest.mark.slow
def test_report_of_running_study_draws_every_section(running_study):
    data = gather(Store(str(running_study)))
    plots = [draw(data) for draw in PLOTS]
    assert all(p.svg is not None for p in plots), [(p.key, p.note) for p in plots]
    running = {r.run_id for r in data.status.runs if r.state == "running"}
    curves = [c for c in data.curves if c.run_id in running]
    # Half a curve each, no eval yet (the simulated run evaluates at the end).
    assert len(curves) == len(running) and all(
        c.tokens.size and not c.eval_tokens.size for c in curves
    )
    assert data.history.committed_flops[-1] == pytest.approx(data.status.budget.committed_flops)
    page = render_html(data, plots)
    assert all(r.run_id in page for r in data.status.runs)
    # Each running run's row carries its predicted final loss with an interval.
    for run_id in running:
        row = re.search(rf"<tr><td class='l'>{run_id}</td>(.*?)</tr>", page).group(1)
        assert re.search(r"<td>\d\.\d{4} \[\d\.\d{4}, \d\.\d{4}\]</td>", row), row


def test_too_few_runs_give_notes_not_crashes(finished_study, tmp_path):
    """Two finished runs: curves and a budget, but no parabola and no law to draw."""
    root = tmp_path / finished_study.name
    shutil.copytree(finished_study, root)
    (root / "summary.parquet").unlink()
    keep = Store(str(root)).run_ids()[:2]
    for run_dir in (root / "runs").iterdir():
        if run_dir.name not in keep:
            shutil.rmtree(run_dir)
            shutil.rmtree(root / "metrics" / f"run_id={run_dir.name}")
    path, plots = write_report(Store(str(root)), tmp_path / "report.html")
    by_key = {p.key: p for p in plots}
    assert by_key["plot-loss-curves"].svg is not None
    assert by_key["plot-budget"].svg is not None
    for key in ("plot-frontier", "plot-residuals", "plot-forms"):
        assert by_key[key].svg is None and by_key[key].note, key
    assert "IsoFLOP fit not possible" in by_key["plot-isoflop"].note
    page = path.read_text()
    assert page.count('data-empty="true"') == 3
    for key, _, _, _ in SECTIONS:
        assert f'<section id="{key}">' in page


def test_plots_and_sections_agree():
    names = {f.__name__ for f in PLOTS}
    assert {s[2] for s in SECTIONS if s[2]} == names
