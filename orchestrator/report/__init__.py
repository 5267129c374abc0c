"""`orch report`: one self-contained HTML page of a study, from its store.

`data` gathers (curves, fits, budget history; a failed analysis becomes a note),
`plots` draws each figure as inline SVG with matplotlib, `html` lays out the page.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from orchestrator.report.data import ReportData, gather
from orchestrator.report.html import SECTIONS, render_html
from orchestrator.report.plots import PLOTS, Plot
from storage.store import Store

__all__ = ["PLOTS", "SECTIONS", "Plot", "ReportData", "gather", "render_html", "write_report"]

log = logging.getLogger(__name__)


def write_report(store: Store, out: str | Path) -> tuple[Path, list[Plot]]:
    """Writes the study's report to `out` (HTML); returns its path and the figures, so a
    caller can say which sections had too little data to draw."""
    t0 = time.monotonic()
    data = gather(store)
    plots = [draw(data) for draw in PLOTS]
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(data, plots), encoding="utf-8")
    tmp.replace(path)  # a browser refreshing the page never sees half of it
    log.info("report %s: %d bytes in %.1f s", path, path.stat().st_size, time.monotonic() - t0)
    return path, plots
