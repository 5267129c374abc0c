"""STYLE 2.1: storage <- workers <- orchestrator, and the planning/law code never needs torch."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"storage": 0, "workers": 1, "orchestrator": 2}
# orchestrator may import only the pure parts of workers (specs, not the training stack);
# the Ray actor imports workers.train inside its own process, in a function body.
PURE_WORKERS = {"workers.spec", "workers.simulated"}  # neither imports torch
NO_TORCH = [
    "orchestrator/planning/flops.py",
    "orchestrator/planning/shapes.py",
    "orchestrator/planning/memory.py",
    "orchestrator/planning/plan.py",
    "orchestrator/laws",
    "storage",
    "workers/spec.py",
]


def _top_level_imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in tree.body:  # module level only: imports inside functions run elsewhere
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("package", sorted(LAYER))
def test_no_module_imports_upward(package):
    for path, module in _modules(package):
        for dep in _top_level_imports(path):
            top = dep.split(".")[0]
            if top not in LAYER:
                continue
            assert LAYER[top] <= LAYER[package], f"{module} imports {dep}"
            if package == "orchestrator" and top == "workers":
                assert dep in PURE_WORKERS, f"{module} imports training code {dep}"


def test_storage_imports_only_pyarrow_numpy_and_stdlib():
    for path, module in _modules("storage"):
        for dep in _top_level_imports(path):
            top = dep.split(".")[0]
            assert top not in {"torch", "deepspeed", "ray", "scipy", "yaml"}, f"{module}: {dep}"


def test_planning_and_laws_never_import_torch():
    for rel in NO_TORCH:
        paths = [ROOT / rel] if rel.endswith(".py") else sorted((ROOT / rel).rglob("*.py"))
        for path in paths:
            deps = {d.split(".")[0] for d in _top_level_imports(path)}
            assert not deps & {"torch", "deepspeed"}, f"{path.relative_to(ROOT)} imports torch"
