"""Shared fixtures: one local Ray for the whole test session (ray.init takes seconds), and
a factory of small valid RunSpecs."""

from __future__ import annotations

import os

import pytest

# As orchestrator/scheduler/ray_actor.py does, before anything imports ray.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")


@pytest.fixture(scope="session")
def ray_local():
    """The embedded local Ray the backend starts, shared by every test that needs it."""
    import ray

    from orchestrator.scheduler.ray_actor import start_ray

    url = start_ray()
    yield url
    ray.shutdown()


@pytest.fixture
def tiny_spec():
    """tests/specs.py's `tiny_spec(**overrides)`: a small valid RunSpec, fields overridable."""
    from tests.specs import tiny_spec

    return tiny_spec
