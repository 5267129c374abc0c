"""CLI manners: help with an example for every command, one-line errors, exit codes."""

from __future__ import annotations

import pytest

from orchestrator.cli import _parser, main
from orchestrator.laws.base import FitError

COMMANDS = (
    "submit", "resume", "cancel", "plan", "status", "fit", "report", "export", "replay", "prepare",
)  # fmt: skip


def test_every_command_is_listed():
    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and f"  orch {command} " in out


def test_an_error_is_one_line_on_stderr_with_exit_1(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "missing.csv")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


def test_a_bad_plan_exits_2(tmp_path, capsys):
    plan = tmp_path / "bad.yaml"
    plan.write_text("name: x\nbudget:\n  flops: lots\n")
    assert main(["plan", str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml" in err


def test_debug_shows_the_traceback_instead(tmp_path):
    with pytest.raises(FitError):
        main(["--debug", "fit", str(tmp_path / "missing.csv")])


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["status"])
    assert exit_.value.code == 2
