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


def test_local_plan_gives_each_level_sizes_around_its_optimum_and_a_zero2_run():
    plan = load_plan(ROOT / "plans" / "local.yaml")
    runs = expand_plan(plan).runs
    assert len(runs) == 16 and len({r.spec.run_id for r in runs}) == 16
    assert any(r.spec.world_size == 2 and r.spec.zero_stage >= 2 for r in runs)
    # Measured on this corpus (the README's `make run`): the best size is about 10K
    # parameters at 6e10 FLOPs, 15K at 1.8e11 and 32K at 5.4e11; each level brackets it.
    for level, best in ((6e10, 10e3), (1.8e11, 15e3), (5.4e11, 32e3)):
        sizes = [r.n_params for r in runs if r.level_flops == level]
        assert len(sizes) >= 3 and min(sizes) < best < max(sizes), (level, sizes)


def test_each_run_spends_its_levels_compute_to_within_one_step(tmp_path):
    plan = load_plan(_write(tmp_path, _GOOD))
    specs = expand_plan(plan).specs
    grid = plan.grid
    assert len(specs) == len(grid.compute_flops) * len(grid.sizes)
    for i, spec in enumerate(specs):
        level = grid.compute_flops[i // len(grid.sizes)]
        one_step = spec.flops_per_token * spec.tokens_per_step
        assert abs(spec.flops_per_token * spec.tokens - level) <= one_step / 2


def test_a_size_with_levels_runs_only_at_those_levels(tmp_path):
    # The optimum moves with compute: each level gets its own band of sizes.
    text = _GOOD.replace("n_head: 2}", "n_head: 2, levels: [1e10]}").replace(
        "zero_stage: 2}", "zero_stage: 2, levels: [3e10, 1e10]}"
    )
    runs = expand_plan(load_plan(_write(tmp_path, text))).runs
    by_level = sorted((r.level_flops, r.spec.shape.d_model) for r in runs)
    assert by_level == [(1e10, 32), (1e10, 64), (3e10, 64)]


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            _GOOD.replace("n_head: 2}", "n_head: 2, levels: [1e10, 2e10]}"),
            r"bad.yaml:5 grid.sizes\[0\].levels\[1\]: expected one of compute_flops "
            r"\(1e\+10, 3e\+10\), got 2e\+10",
        ),
        (
            _GOOD.replace("n_head: 2}", "n_head: 2, levels: [1e10]}").replace(
                "zero_stage: 2}", "zero_stage: 2, levels: [1e10]}"
            ),
            r"bad.yaml:3 grid.compute_flops\[1\]: no size runs at 3e\+10 FLOPs",
        ),
        (
            _GOOD.replace("n_head: 2}", "n_head: 2, levels: []}"),
            r"bad.yaml:5 grid.sizes\[0\].levels: expected at least one",
        ),
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
