"""The plan's `adaptive` section: parsed into typed fields, or one-line errors."""

from pathlib import Path

import pytest

from orchestrator.planning import PlanError, load_plan

ROOT = Path(__file__).resolve().parents[3]

_GOOD = """\
name: t
budget:
  flops: 1e13
  adaptive_share: 0.5
seed_grid: {min_flops: 3e10, max_flops: 1.2e11, levels: 3, sizes_per_level: 3, shape_rule: tiny}
adaptive:
  strategy: isoflop
  target: {flops: 1e14, quantity: n_opt}
  stop: {rel_width: 0.2, rounds: 4}
  batch: 2
"""


def _load(tmp_path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return load_plan(path)


def test_adaptive_section_is_read_with_defaults(tmp_path):
    ad = _load(tmp_path, _GOOD).adaptive
    assert (ad.strategy, ad.target_flops, ad.quantity) == ("isoflop", 1e14, "n_opt")
    assert (ad.rel_width, ad.max_rounds, ad.batch) == (0.2, 4, 2)
    assert (ad.level, ad.repeat_seeds, ad.max_run_flops, ad.seed) == (0.9, 0, None, 0)
    assert ad.target_form == "chinchilla"
    auto = _load(tmp_path, _GOOD.replace("quantity: n_opt}", "quantity: n_opt, form: auto}"))
    assert auto.adaptive.target_form == "auto"
    assert ad.form_error_floor is None and auto.adaptive.form_error_floor is None
    floored = _load(tmp_path, _GOOD.replace("n_opt}", "n_opt, form: auto, form_error_floor: 0.03}"))
    assert floored.adaptive.form_error_floor == 0.03


@pytest.mark.parametrize("name", ["adaptive.yaml", "adaptive-simulated.yaml"])
def test_shipped_adaptive_plans_load(name):
    plan = load_plan(ROOT / "plans" / name)
    assert plan.adaptive.strategy == "active" and plan.adaptive.repeat_seeds == 2


@pytest.mark.parametrize(
    "old,new,expected",
    [
        (
            "strategy: isoflop",
            "strategy: bayes",
            r"bad.yaml:7 adaptive.strategy: expected one of active, isoflop, random, grid, "
            r'got "bayes"',
        ),
        (
            "flops: 1e14,",
            'flops: "lots",',
            r'bad.yaml:8 adaptive.target.flops: expected a number like 1e12, got "lots"',
        ),
        (
            "quantity: n_opt",
            "quantity: alpha",
            r"bad.yaml:8 adaptive.target.quantity: expected one of loss_opt, n_opt, both",
        ),
        (
            "quantity: n_opt}",
            "quantity: n_opt, level: 1}",
            r"bad.yaml:8 adaptive.target.level: expected a confidence level below 1",
        ),
        (
            "quantity: n_opt}",
            "quantity: n_opt, form: kaplan}",
            r'bad.yaml:8 adaptive.target.form: expected one of chinchilla, auto, got "kaplan"',
        ),
        (
            "quantity: n_opt}",
            "quantity: n_opt, form_error_floor: 0.03}",
            r"bad.yaml:8 adaptive.target.form_error_floor: the floor widens AutoLaw's "
            r"intervals: it needs `target.form: auto`",
        ),
        (
            "quantity: n_opt}",
            "quantity: n_opt, form: auto, form_error_floor: 2}",
            r"bad.yaml:8 adaptive.target.form_error_floor: expected a fraction in \[0, 1\], got 2",
        ),
        (
            "rounds: 4",
            "rounds: 0",
            r"bad.yaml:9 adaptive.stop.rounds: expected a positive number, got 0",
        ),
        (
            "batch: 2",
            "batches: 2",
            r"bad.yaml:10 adaptive.batches: unknown key \(expected one of: batch, ",
        ),
        (
            "  adaptive_share: 0.5\n",
            "",
            r"bad.yaml:5 adaptive: adaptive rounds need budget.adaptive_share > 0",
        ),
        (
            "  target: {flops: 1e14, quantity: n_opt}\n",
            "",
            r"bad.yaml:6 adaptive.target: missing required section",
        ),
    ],
)
def test_bad_adaptive_section_fails_with_one_line(tmp_path, old, new, expected):
    assert old in _GOOD
    with pytest.raises(PlanError, match=expected) as err:
        _load(tmp_path, _GOOD.replace(old, new))
    assert "\n" not in str(err.value)
