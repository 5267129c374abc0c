"""STYLE 2.1: storage <- workers <- orchestrator, no import circles, and the planning, law
and study code never needs torch.

Imports inside function bodies count: they are how circles hide (an import that works
only because the other module finished loading first).
"""

import ast
import sys
from pathlib import Path

import pytest

from tests.waiting import run_child

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"storage": 0, "workers": 1, "orchestrator": 2}
# orchestrator may import only the pure parts of workers (specs, not the training stack;
# none imports torch, which NO_TORCH checks)...
PURE_WORKERS = {"workers.spec", "workers.simulated", "workers.schedule", "workers.sink_setup"}
# `orch prepare`'s modules: tokenizers, numpy and pyarrow, no torch.
PURE_WORKERS |= {
    "workers.prepare",
    "workers.prepared_dir",
    "workers.shards",
    "workers.corpus",
    "workers.tokenizer",
    "workers.manifest",
    "workers.data_hash",
}
# ...except the Ray rank actor, which imports the training stack inside its own process,
# in a function body.
TRAINS = {"orchestrator.scheduler.ray_actor"}
NO_TORCH = [
    "orchestrator/planning",
    "orchestrator/laws",
    "orchestrator/adaptive",
    "storage",
    "workers/spec.py",
    "workers/simulated.py",
    "workers/schedule.py",
    "workers/sink_setup.py",
    "workers/prepare.py",
    "workers/prepared_dir.py",
    "workers/shards.py",
    "workers/corpus.py",
    "workers/tokenizer.py",
    "workers/manifest.py",
    "workers/data_hash.py",
]
HEAVY = {"torch", "deepspeed"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(imported module, whether at module level) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                head = package[: len(package) - node.level + 1]
                base = ".".join(head + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import module` imports pkg.module
                yield f"{base}.{alias.name}", id(node) in top


def _modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, _module_name(path)


ALL = {name: path for pkg in LAYER for path, name in _modules(pkg)}


def _resolve(dep: str) -> str | None:
    """The project module `dep` names (a name imported from a module maps to it)."""
    while dep and dep not in ALL:
        dep = dep.rpartition(".")[0]
    return dep or None


@pytest.mark.parametrize("package", sorted(LAYER))
def test_no_module_imports_upward(package):
    for path, module in _modules(package):
        for dep, at_top in _imports(path):
            target = _resolve(dep)
            if target is None:
                continue
            top = target.split(".")[0]
            assert LAYER[top] <= LAYER[package], f"{module} imports {target}"
            if package == "orchestrator" and top == "workers" and target not in PURE_WORKERS:
                assert module in TRAINS and not at_top, f"{module} imports training code {dep}"


def test_storage_imports_only_pyarrow_numpy_and_stdlib():
    for path, module in _modules("storage"):
        for dep, _ in _imports(path):
            top = dep.split(".")[0]
            assert top not in {"torch", "deepspeed", "ray", "scipy", "yaml"}, f"{module}: {dep}"


def test_planning_laws_and_studies_never_import_torch():
    for rel in NO_TORCH:
        paths = [ROOT / rel] if rel.endswith(".py") else sorted((ROOT / rel).rglob("*.py"))
        assert paths, rel
        for path in paths:
            for dep, _ in _imports(path):
                assert dep.split(".")[0] not in HEAVY, f"{path.relative_to(ROOT)} imports {dep}"
                target = _resolve(dep)
                assert (
                    target is None or target.split(".")[0] != "workers" or (target in PURE_WORKERS)
                ), f"{path.relative_to(ROOT)} imports training code {dep}"


def test_importing_planning_laws_and_adaptive_loads_no_torch():
    code = (
        "import sys\n"
        "import orchestrator.planning, orchestrator.laws, orchestrator.adaptive\n"
        "print(sorted(m for m in ('torch', 'deepspeed') if m in sys.modules))\n"
    )
    out = run_child(
        [sys.executable, "-c", code], cwd=ROOT, timeout_s=120, what="importing the planning layers"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_import_graph_has_no_cycle():
    graph = {name: set() for name in ALL}
    for name, path in ALL.items():
        for dep, _ in _imports(path):
            target = _resolve(dep)
            if target is not None and target != name:
                graph[name].add(target)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_hidden_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
