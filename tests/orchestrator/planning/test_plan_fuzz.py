"""Broken plans of every kind get one PlanError naming file and line, and nothing else."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.planning import PlanError, load_plan
from tests.plans import plan_text

GOOD = [plan_text(name) for name in ("local.yaml", "chinchilla.yaml")]

_junk_values = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            "~",
            "[]",
            "{}",
            "[1, [2]]",
            "{a: 1}",
            "true",
            "-1",
            "0",
            "1e400",
            "nan",
            "!!python/object:os.system 'x'",
            "&a [*a]",
            "'",
            '"',
            "? [a]: 1",
            "0x10",
            "1_000",
            "1e-400",
            "2e99999",
            "- - -",
            "|",
            ">-",
        ]
    ),
)


@st.composite
def broken_plans(draw):
    text = draw(st.sampled_from(GOOD))
    lines = text.splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    kind = draw(st.sampled_from(["value", "delete", "insert", "rename", "chars", "indent"]))
    line = lines[i]
    if kind == "value" and ":" in line:
        lines[i] = line.split(":", 1)[0] + ": " + draw(_junk_values)
    elif kind == "delete":
        del lines[i]
    elif kind == "insert":
        lines.insert(
            i,
            draw(
                st.sampled_from(
                    [
                        "bogus: 1",
                        "  extra: [",
                        "grid: {}",
                        "- 1",
                        "budget: {flops: 1e3}",
                        "\t tab: 1",
                    ]
                )
            ),
        )
    elif kind == "rename" and ":" in line:
        key, rest = line.split(":", 1)
        lines[i] = key.rstrip() + draw(st.text("abcxyz_", min_size=1, max_size=3)) + ":" + rest
    elif kind == "chars":
        pos = draw(st.integers(0, len(line)))
        lines[i] = line[:pos] + draw(st.text(min_size=1, max_size=4)) + line[pos:]
    else:
        lines[i] = " " * draw(st.integers(1, 5)) + line
    return "\n".join(lines) + "\n"


def _check(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        load_plan(path)
    except PlanError as err:
        message = str(err)
        assert re.match(rf"^{re.escape(str(path))}:\d+ ", message), message
        assert "\n" not in message.strip(), message
    # Any other exception propagates and fails the test: that is the point.


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=broken_plans())
def test_broken_plan_is_one_plan_error_with_a_line_number(tmp_path, text):
    _check(tmp_path, text)


@pytest.mark.slow
@settings(
    max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=broken_plans())
def test_two_thousand_broken_plans_never_raise_anything_but_plan_error(tmp_path, text):
    _check(tmp_path, text)
