"""Target N -> shape: valid shapes that follow the rule, the closest N it allows, monotone."""

import bisect
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.planning.flops import count_params
from orchestrator.planning.shapes import (
    DEFAULT_RULE,
    TINY_RULE,
    ShapeError,
    ShapeRule,
    shape_for_params,
)


def _allowed_params(rule: ShapeRule, max_d_model: int) -> list[int]:
    """Every N the rule allows up to a width, sorted: the rule restated from its docstring."""
    found = set()
    for d in range(rule.width_multiple, max_d_model + 1, rule.width_multiple):
        head = rule.wide_head_dim if d >= rule.wide_from else rule.head_dim
        if d % head:
            continue
        for n_layer in range(1, int(d / rule.min_aspect) + 2):
            if rule.min_aspect <= d / n_layer <= rule.max_aspect:
                found.add(n_layer * (12 * d * d + 2 * d) + d)
    return sorted(found)


# Widths far enough past the largest targets tested (1e11 default, 3e7 tiny).
ALLOWED = {
    "default": _allowed_params(DEFAULT_RULE, 12_288),
    "tiny": _allowed_params(TINY_RULE, 640),
}
RULES = {"default": DEFAULT_RULE, "tiny": TINY_RULE}
TOP = {"default": 1e11, "tiny": 3e7}


def _log_uniform(lo: float, hi: float):
    # Clamped: exp(log(lo)) may round just below lo.
    return st.floats(math.log(lo), math.log(hi)).map(lambda x: max(lo, int(math.exp(x))))


def _targets(name: str):
    return _log_uniform(RULES[name].smallest_params(), TOP[name])


rule_and_target = st.sampled_from(["default", "tiny"]).flatmap(
    lambda name: st.tuples(st.just(name), _targets(name))
)


@settings(max_examples=150, deadline=None)
@given(rule_and_target)
def test_returned_shape_is_valid_and_follows_the_rule(case):
    name, target = case
    rule = RULES[name]
    choice = shape_for_params(target, rule=rule)
    shape = choice.shape
    shape.validate()
    head_dim = shape.d_model // shape.n_head
    assert head_dim == (rule.wide_head_dim if shape.d_model >= rule.wide_from else rule.head_dim)
    assert shape.d_model % rule.width_multiple == 0
    assert rule.min_aspect <= shape.d_model / shape.n_layer <= rule.max_aspect
    assert shape.ffw_width == 4 * shape.d_model
    assert choice.reached_params == count_params(shape).non_embedding_params
    assert choice.rel_error == pytest.approx((choice.reached_params - target) / target)


@settings(max_examples=150, deadline=None)
@given(rule_and_target)
def test_reached_params_are_the_closest_the_rule_allows(case):
    name, target = case
    allowed = ALLOWED[name]
    i = bisect.bisect_left(allowed, target)
    best_miss = min(abs(n - target) for n in allowed[max(0, i - 1) : i + 1])
    assert abs(shape_for_params(target, rule=RULES[name]).reached_params - target) == best_miss


@settings(max_examples=150, deadline=None)
@given(rule_and_target, st.floats(1.0, 1.5))
def test_reached_params_never_decrease_as_target_grows(case, factor):
    name, target = case
    rule = RULES[name]
    lower = shape_for_params(target, rule=rule).reached_params
    assert shape_for_params(int(target * factor), rule=rule).reached_params >= lower


# The bounds promised in the shapes module docstring: (rule, lowest target, highest, bound).
BOUNDS = [
    ("default", 1e6, 1e7, 0.20),
    ("default", 1e7, 1e8, 0.07),
    ("default", 1e8, 1e9, 0.026),
    ("default", 1e9, 1e10, 0.016),
    ("default", 1e10, 1e11, 0.005),
    ("tiny", 3e4, 3e5, 0.20),
    ("tiny", 3e5, 3e6, 0.08),
    ("tiny", 3e6, 3e7, 0.04),
]


@pytest.mark.parametrize("name, lo, hi, bound", BOUNDS)
def test_documented_error_bound_holds_for_every_target_in_range(name, lo, hi, bound):
    # Between neighbouring allowed counts a < b the worst target is the midpoint (clipped to
    # the range), which misses by min(t - a, b - t) / t. Scan every gap, then ask the
    # function itself at the worst target found.
    allowed = ALLOWED[name]
    worst_error, worst_target = 0.0, int(lo)
    for a, b in itertools.pairwise(allowed):
        if b < lo or a > hi:
            continue
        t = min(max((a + b) / 2, lo, a), hi, b)
        error = min(t - a, b - t) / t
        if error > worst_error:
            worst_error, worst_target = error, int(t)
    assert worst_error <= bound
    assert abs(shape_for_params(worst_target, rule=RULES[name]).rel_error) <= bound


@pytest.mark.parametrize("target", [30_000, 60_000, 100_000, 200_000, 300_000])
def test_tiny_rule_gives_cpu_models_at_least_two_layers_deep(target):
    choice = shape_for_params(target, rule=TINY_RULE)
    assert choice.shape.n_layer >= 2
    assert choice.shape.d_model // choice.shape.n_head in (16, 32)
    assert abs(choice.rel_error) <= 0.20


def test_large_models_get_128_wide_heads_and_close_counts():
    for target, bound in ((1e9, 0.016), (7e9, 0.016), (7e10, 0.005)):
        shape = shape_for_params(int(target)).shape
        assert shape.d_model // shape.n_head == 128
        assert abs(count_params(shape).non_embedding_params / target - 1) <= bound


def test_shape_carries_vocab_seq_len_pos_and_tying_without_changing_n():
    plain = shape_for_params(5_000_000)
    custom = shape_for_params(5_000_000, vocab=32_000, seq_len=2048, pos="learned", tied=False)
    assert (custom.shape.vocab, custom.shape.seq_len) == (32_000, 2048)
    assert (custom.shape.pos, custom.shape.tied) == ("learned", False)
    assert custom.reached_params == plain.reached_params


def test_target_below_smallest_model_raises_with_hint():
    with pytest.raises(ShapeError, match="smallest model") as info:
        shape_for_params(30_000)  # the default rule starts at d_model 64, one layer: 49,344
    assert "TINY_RULE" in info.value.hint
    assert isinstance(info.value, ValueError)
    with pytest.raises(ShapeError):
        shape_for_params(0, rule=TINY_RULE)


def test_inconsistent_rule_is_rejected():
    with pytest.raises(ShapeError, match="aspect"):
        ShapeRule(min_aspect=128, max_aspect=64)
    with pytest.raises(ShapeError, match="even"):
        ShapeRule(head_dim=15)
