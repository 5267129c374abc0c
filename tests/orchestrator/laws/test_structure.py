"""How the laws package is put together: every import at module level (tests/test_layers.py
checks the whole import graph for circles), shared accessors and options."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import orchestrator.laws as laws
from orchestrator.laws import BootstrapFit, Chinchilla, Kaplan, fit_envelope, fit_isoflop
from orchestrator.laws.frontier import FrontierAccessors, PowerLawAccessors
from orchestrator.laws.law import HuberLaw

PACKAGE = Path(laws.__file__).parent


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported from orchestrator.laws, whether at module level) for one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("orchestrator.laws."):
                out.append((name.split(".")[2], id(node) in top))
    return out


def test_every_import_inside_the_package_is_at_module_level():
    inner = {
        path.name: [m for m, at_top in _imports(path) if not at_top]
        for path in PACKAGE.glob("*.py")
    }
    assert {name: mods for name, mods in inner.items() if mods} == {}


def _runs():
    n = np.repeat(np.geomspace(1e7, 1e9, 6), 5)
    d = np.tile(np.geomspace(1e9, 1e11, 5), 6)
    rng = np.random.default_rng(1)
    loss = (1.8 + 400 * n**-0.34 + 400 * d**-0.28) * np.exp(0.005 * rng.standard_normal(n.size))
    return n, d, loss


@pytest.fixture(scope="module")
def ensembles():
    """Each Approach 3 law fitted to the same runs, and a small bootstrap of it."""
    out = []
    for cls in (Chinchilla, Kaplan):
        law = cls().fit(*_runs())
        out += [law, law.bootstrap(20, seed=0)]
    return out


@pytest.mark.parametrize("cls", [Chinchilla, Kaplan, BootstrapFit])
def test_frontier_accessors_are_defined_once(cls):
    assert issubclass(cls, FrontierAccessors)
    for name in ("n_opt", "d_opt", "loss_opt"):
        assert getattr(cls, name) is getattr(FrontierAccessors, name), name


def test_frontier_accessors_pick_the_fields_of_frontier(ensembles):
    flops = [1e19, 1e22]
    for fit in ensembles:
        frontier = fit.frontier(flops, level=0.8)
        for name in ("n_opt", "d_opt", "loss_opt"):
            got = getattr(fit, name)(flops, level=0.8)
            want = getattr(frontier, name)
            for field in ("mean", "lo", "hi"):
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
            assert got.level == 0.8


def test_power_law_fits_share_their_accessors():
    n = np.concatenate([np.geomspace(1e7, 1e9, 7) * (c / 1e19) ** 0.5 for c in (1e19, 1e20, 1e21)])
    c = np.repeat([1e19, 1e20, 1e21], 7)
    d = c / (6 * n)
    iso = fit_isoflop(n, d, 1.8 + 400 * n**-0.34 + 400 * d**-0.28)
    ids = np.repeat(["r0", "r1", "r2"], 20)
    sizes = np.repeat([1e7, 1e8, 1e9], 20)
    tokens = np.tile(np.geomspace(1e8, 1e11, 20), 3)
    env = fit_envelope(ids, sizes, tokens, 1.8 + 400 * sizes**-0.34 + 400 * tokens**-0.28)
    for fit in (iso, env):
        assert isinstance(fit, PowerLawAccessors)
        assert fit.n_exponent == fit.n_law.exponent and fit.d_exponent == fit.d_law.exponent
        assert fit.n_opt(1e21, level=0.9) == fit.n_law.predict(1e21, level=0.9)
        assert fit.d_opt(1e21, level=0.9) == fit.d_law.predict(1e21, level=0.9)


def test_forms_share_one_constructor_with_the_same_options():
    for cls in (Chinchilla, Kaplan):
        assert cls.__init__ is HuberLaw.__init__
        assert inspect.signature(cls) == inspect.signature(HuberLaw)
        assert cls().get_params() == {
            "huber_delta": 1e-3,
            "flops_per_token": None,
            "start_grid": None,
            "n_refine": 32,
            "polish": True,
        }
