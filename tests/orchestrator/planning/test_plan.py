from pathlib import Path

import pytest

from orchestrator.planning import PlanError, load_plan
from orchestrator.planning.expand import expand_plan

ROOT = Path(__file__).resolve().parents[3]


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


_GOOD = """\
name: t
grid:
  compute_flops: [1e10, 3e10]
  sizes:
    - {n_layer: 2, d_model: 32, n_head: 2}
    - {n_layer: 2, d_model: 64, n_head: 4, world_size: 2, zero_stage: 2}
train:
  global_batch: 16
"""


def test_local_plan_is_a_3x3_grid_with_a_two_rank_zero2_run():
    plan = load_plan(ROOT / "plans" / "local.yaml")
    specs = expand_plan(plan).specs
    assert len(specs) == 9
    assert len({s.run_id for s in specs}) == 9
    assert any(s.world_size == 2 and s.zero_stage >= 2 for s in specs)
    n_params = {s.shape.d_model: s for s in specs}
    assert len(n_params) == 3


def test_each_run_spends_its_levels_compute_to_within_one_step(tmp_path):
    plan = load_plan(_write(tmp_path, _GOOD))
    specs = expand_plan(plan).specs
    grid = plan.grid
    assert len(specs) == len(grid.compute_flops) * len(grid.sizes)
    for i, spec in enumerate(specs):
        level = grid.compute_flops[i // len(grid.sizes)]
        one_step = spec.flops_per_token * spec.tokens_per_step
        assert abs(spec.flops_per_token * spec.tokens - level) <= one_step / 2


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            _GOOD.replace("[1e10, 3e10]", '[1e10, "lots"]'),
            r'bad.yaml:3 grid.compute_flops\[1\]: expected a number like 1e12, got "lots"',
        ),
        (
            _GOOD.replace("n_head: 4,", "n_head: 5,"),
            r"bad.yaml:6 grid.sizes\[1\].n_head: expected a divisor of d_model 64, got 5",
        ),
        (
            _GOOD.replace("zero_stage: 2", "zero_stage: 4"),
            r"bad.yaml:6 grid.sizes\[1\].zero_stage: expected one of 0, 1, 2, 3, got 4",
        ),
        (_GOOD + "  global_bach: 32\n", r"bad.yaml:9 train.global_bach: unknown key"),
        (
            _GOOD.replace("global_batch: 16", "global_batch: -16"),
            r"bad.yaml:8 train.global_batch: expected a positive number, got -16",
        ),
        (_GOOD.replace("name: t", "name: ../escape"), r"bad.yaml:1 name: expected 1-64 letters"),
        ("name: t\ngrid: [1, 2]\n", r"bad.yaml:2 grid: expected a mapping"),
        ("name: t\n", r"bad.yaml:1 grid: expected exactly one of `grid`"),
        (
            "name: t\ngrid: {compute_flops: [1e10], sizes: [{n_layer: 2, d_model: 32}]}\n",
            r"bad.yaml:2 grid.sizes\[0\].n_head: missing required key",
        ),
        ("name: [unclosed\n", r"bad.yaml:2 not valid YAML"),
        (
            _GOOD.replace("global_batch: 16", "global_batch: 16\n  precision: true"),
            r"bad.yaml:9 train.precision: expected one of fp32, bf16, got True",
        ),
    ],
)
def test_bad_plan_is_one_error_naming_file_line_and_key(tmp_path, text, expected):
    with pytest.raises(PlanError, match=expected):
        load_plan(_write(tmp_path, text))


def test_missing_plan_file_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path / "nope.yaml")


def test_retries_stall_minutes_sets_the_stall_timeout_and_is_checked(tmp_path):
    base = (ROOT / "plans" / "simulated.yaml").read_text()
    good = tmp_path / "good.yaml"
    good.write_text(base.replace("  failure: 1", "  failure: 1\n  stall_minutes: 1.5"))
    assert load_plan(good).retries.stall_s == 90.0
    assert load_plan(ROOT / "plans" / "simulated.yaml").retries.stall_s == 3600.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(base.replace("  failure: 1", "  failure: 1\n  stall_minutes: -2"))
    with pytest.raises(PlanError, match=r"bad\.yaml:\d+ retries\.stall_minutes"):
        load_plan(bad)
