"""The plan's `adaptive.early_stop` knob: off unless given, typed, or one-line errors."""

import pytest

from orchestrator.planning import PlanError, load_plan
from orchestrator.planning.plan import EarlyStop

_PLAN = """\
name: t
budget:
  flops: 1e13
  adaptive_share: 0.5
seed_grid: {min_flops: 3e10, max_flops: 1.2e11, levels: 3, sizes_per_level: 3, shape_rule: tiny}
adaptive:
  strategy: isoflop
  target: {flops: 1e14, quantity: n_opt}
  stop: {rel_width: 0.2, rounds: 4}
"""


def _load(tmp_path, early: str = ""):
    path = tmp_path / "p.yaml"
    path.write_text(_PLAN + early)
    return load_plan(path).adaptive.early_stop


def test_early_stopping_is_off_unless_the_plan_asks(tmp_path):
    assert _load(tmp_path) is None
    assert _load(tmp_path, "  early_stop: false\n") is None


def test_early_stopping_takes_defaults_and_the_plan_s_values(tmp_path):
    assert _load(tmp_path, "  early_stop: true\n") == EarlyStop()
    assert _load(tmp_path, "  early_stop:\n") == EarlyStop()
    rule = _load(
        tmp_path, "  early_stop: {rel_width: 0.005, off_frontier: false, min_progress: 0.3}\n"
    )
    assert rule == EarlyStop(rel_width=0.005, off_frontier=False, margin=0.02, min_progress=0.3)


@pytest.mark.parametrize(
    "early,expected",
    [
        (
            "  early_stop: {margin: 2}\n",
            ":10 adaptive.early_stop.margin: expected a fraction in [0, 1], got 2.0",
        ),
        (
            "  early_stop:\n    patience: 3\n",
            ":11 adaptive.early_stop.patience: unknown key (expected one of: margin, "
            "min_progress, off_frontier, rel_width)",
        ),
        (
            "  early_stop: {off_frontier: yes please}\n",
            ':10 adaptive.early_stop.off_frontier: expected true or false, got "yes please"',
        ),
        (
            "  early_stop: often\n",
            ':10 adaptive.early_stop: expected a mapping, got "often"',
        ),
        (
            "  early_stop: {rel_width: 0, off_frontier: false}\n",
            ":10 adaptive.early_stop: rel_width is 0 and off_frontier false: no run "
            "could ever stop early",
        ),
    ],
)
def test_a_bad_early_stop_knob_is_one_line_naming_file_line_and_key(tmp_path, early, expected):
    with pytest.raises(PlanError) as err:
        _load(tmp_path, early)
    assert str(err.value) == f"{tmp_path / 'p.yaml'}{expected}"
