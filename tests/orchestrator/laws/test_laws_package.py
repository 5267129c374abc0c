"""The package's surface and its dependency promise (no torch, STYLE 2.1 and 2.12)."""

from __future__ import annotations

import sys

import orchestrator.laws as laws
from tests.waiting import run_child


def test_importing_laws_does_not_import_torch():
    code = "import sys, orchestrator.laws; sys.exit('torch' in sys.modules)"
    done = run_child(
        [sys.executable, "-c", code], timeout_s=120, what="importing orchestrator.laws"
    )
    assert done.returncode == 0, done.stderr[-3000:] or "orchestrator.laws imported torch"


def test_public_surface_is_small_and_importable():
    # The law forms (one class each), the fitting entry points, errors and records.
    assert len(laws.__all__) <= 15
    for name in laws.__all__:
        assert getattr(laws, name) is not None, name


def test_fit_error_belongs_to_the_project_tree_and_is_a_value_error():
    from storage.errors import OrchError

    assert issubclass(laws.FitError, OrchError) and issubclass(laws.FitError, ValueError)
