"""Small valid RunSpecs for tests and the scripts they run in subprocesses.

`tiny_spec()` is "some small valid run": 2 layers of width 32 (33K params, 25K
non-embedding) on byte data, 20 optimizer steps of 16 sequences x 64 bytes on one rank,
a loss row every step, 2 evaluation micro-batches. Override the fields a test cares
about. Tests take it as the `tiny_spec` fixture (tests/conftest.py); module-level specs
and subprocess scripts import it from here.
"""

from __future__ import annotations

from workers.spec import LrSchedule, RunSpec, Shape

TINY_SHAPE = Shape(n_layer=2, d_model=32, n_head=2)


def tiny_spec(**overrides) -> RunSpec:
    """A small valid RunSpec; `overrides` replace any of its fields."""
    base = dict(
        shape=TINY_SHAPE,
        tokens=16 * 64 * 20,
        global_batch=16,
        micro_batch=16,
        log_every_steps=1,
        eval_batches=2,
    )
    return RunSpec(**{**base, **overrides})


def wsd_parent_spec() -> RunSpec:
    """A 2-rank ZeRO-2 WSD run that keeps a checkpoint every 10 of its 40 steps: the parent
    that cooldown branches (`wsd_branch`) restore from."""
    return tiny_spec(
        tokens=16 * 64 * 40,
        schedule=LrSchedule(kind="wsd"),
        world_size=2,
        micro_batch=8,
        zero_stage=2,
        checkpoint_every_steps=10,
        keep_checkpoints=True,
    )
