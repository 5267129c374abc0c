"""docs/notebooks.md's snippets and docs/rebuild_plots.py, run on a real (simulated) study."""

from __future__ import annotations

import re
import shutil

import pytest

from orchestrator.cli import main
from storage.store import Store
from tests.orchestrator.report.conftest import REPO

DOC = REPO / "docs" / "notebooks.md"


@pytest.fixture(scope="module")
def exported(finished_study, tmp_path_factory):
    """A copy of the finished study with one run retried (attempt 1 logs its first steps
    again, as a resume from a checkpoint does), and its `orch export` tables."""
    root = tmp_path_factory.mktemp("notebook") / finished_study.name
    shutil.copytree(finished_study, root)
    store = Store(str(root))
    run_id = store.run_ids()[0]
    with store.metrics_writer(run_id, attempt=1) as writer:
        for row in store.metrics(run_id).slice(0, 3).to_pylist():
            writer.write({k: v for k, v in row.items() if k not in ("run_id", "attempt")})
    out = root.parent / "out"
    assert main(["export", str(root), "--out", str(out)]) == 0
    return root, out


@pytest.mark.parametrize("library", ["pandas", "polars", "DuckDB"])
def test_each_snippet_of_the_notebook_page_runs_as_written(exported, library):
    pytest.importorskip(library.lower())  # the notebook extra; `make install` has it
    section = DOC.read_text().split(f"## {library}\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    root, out = exported
    exec(compile(code, f"{DOC}#{library}", "exec"), {"EXP": str(root), "OUT": str(out)})


def test_rebuild_plots_draws_two_report_plots_from_the_exported_tables(exported, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "rebuild_plots", REPO / "docs" / "rebuild_plots.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(exported[1]), "--save", str(tmp_path)]) == 0
    for name in ("loss_curves.png", "isoflop_profiles.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / name).stat().st_size > 10_000  # a drawn figure, not a blank one
