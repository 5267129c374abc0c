"""A plan's `adaptive.target.runs`: runs to predict, beside or instead of C*."""

import pytest

from orchestrator.planning import PlanError, load_plan

_PLAN = """\
name: t
budget:
  flops: 1e13
  adaptive_share: 0.5
seed_grid: {{min_flops: 3e10, max_flops: 1.2e11, levels: 3, sizes_per_level: 3, shape_rule: tiny}}
adaptive:
  strategy: active
  target:
{target}
  stop: {{rel_width: 0.2, rounds: 4}}
"""


def _load(tmp_path, target: str):
    path = tmp_path / "bad.yaml"
    path.write_text(_PLAN.format(target=target))
    return load_plan(path)


def test_target_runs_are_read_beside_the_flops(tmp_path):
    ad = _load(
        tmp_path,
        "    flops: 1e14\n    runs:\n      - {N: 7e10, D: 1.4e12}\n      - {N: 1e9, D: 2.0e10}",
    ).adaptive
    assert ad.target_flops == 1e14 and ad.quantity == "both"
    assert ad.target_runs == ((7e10, 1.4e12), (1e9, 2e10))


def test_target_may_be_runs_alone(tmp_path):
    ad = _load(tmp_path, "    runs: [{N: 7e10, D: 1.4e12}]\n    level: 0.8").adaptive
    assert ad.target_flops is None and ad.target_runs == ((7e10, 1.4e12),) and ad.level == 0.8


def test_a_plan_without_runs_has_none(tmp_path):
    ad = _load(tmp_path, "    flops: 1e14").adaptive
    assert ad.target_runs == () and ad.target_flops == 1e14


@pytest.mark.parametrize(
    "target,expected",
    [
        (
            '    runs: [{N: 7e10, D: "lots"}]',
            r'bad.yaml:9 adaptive.target.runs\[0\].D: expected a number like 1e12, got "lots"',
        ),
        (
            "    runs:\n      - {N: 7e10, D: 1e12}\n      - {N: 7e10}",
            r"bad.yaml:11 adaptive.target.runs\[1\].D: missing required key",
        ),
        (
            "    runs:\n      - {N: 7e10, D: 1e12}\n      - {N: -1, D: 1e12}",
            r"bad.yaml:11 adaptive.target.runs\[1\].N: expected a positive number, got -1",
        ),
        (
            "    runs: [{N: 7e10, D: 1e12, C: 4e23}]",
            r"bad.yaml:9 adaptive.target.runs\[0\].C: unknown key \(expected one of: D, N\)",
        ),
        (
            "    runs: [7e10]",
            r"bad.yaml:9 adaptive.target.runs\[0\]: expected a mapping, got",
        ),
        (
            "    runs: {N: 7e10, D: 1e12}",
            r"bad.yaml:9 adaptive.target.runs: expected a list, got a mapping",
        ),
        ("    runs: []", r"bad.yaml:9 adaptive.target.runs: expected at least one run"),
        (
            "    runs: [{N: 7e10, D: 1e30}]",
            r"bad.yaml:9 adaptive.target.runs\[0\].D: expected at most 1e\+18, got 1e\+30",
        ),
        (
            "    level: 0.9",
            r"bad.yaml:8 adaptive.target: expected `flops` \(C\*, for L_opt / N_opt there\), "
            r"`runs`",
        ),
        (
            "    runs: [{N: 7e10, D: 1e12}]\n    quantity: n_opt",
            r"bad.yaml:10 adaptive.target.quantity: a quantity \(L_opt / N_opt\) is read at "
            r"C\*: give `target.flops` too",
        ),
    ],
)
def test_bad_target_runs_fail_with_one_line_naming_file_line_and_key(tmp_path, target, expected):
    with pytest.raises(PlanError, match=expected) as err:
        _load(tmp_path, target)
    assert "\n" not in str(err.value)
