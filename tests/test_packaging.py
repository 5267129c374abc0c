"""pyproject.toml tells the truth: its floors are what is installed and tested, and every
optional extra installs beside the core without changing a core package's version."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = [Requirement(r) for r in PROJECT["dependencies"]]


def test_every_core_floor_is_met_by_what_the_tests_run_on():
    for req in CORE:
        installed = version(req.name).split("+")[0]  # torch's "+cpu" local label
        assert req.specifier.contains(installed, prereleases=True), (req, installed)


@pytest.mark.slow
def test_no_extra_changes_a_core_package():
    extras = ",".join(PROJECT["optional-dependencies"])
    torch = f"torch=={version('torch').split('+')[0]}"  # as the Makefile pins it
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-",
        "--ignore-installed", torch, f"{ROOT}[{extras}]",
    ]  # fmt: skip
    # --ignore-installed: the report lists every package pip would choose, so a version
    # that differs from the installed one is a change the extra would make.
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True).stdout
    chosen = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(out)["install"]
    }
    for req in CORE:
        name = req.name.lower()
        assert chosen.get(name, "").split("+")[0] == version(req.name).split("+")[0], name
