"""tests/waiting.py: a wait that ends in failure says what it waited for and what it saw."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.waiting import output_tails, run_child, tail, wait_for_exit, wait_until


def test_wait_until_returns_the_first_truthy_value():
    values = iter([0, None, "", 7])
    assert wait_until(lambda: next(values), timeout_s=60, what="a value", interval_s=0) == 7


def test_a_wait_that_expires_names_what_it_waited_for_and_what_it_saw():
    with pytest.raises(pytest.fail.Exception) as failed:
        wait_until(lambda: False, timeout_s=0.1, what="the moon", seen=lambda: "no moon")
    assert str(failed.value) == "waited 0.1 s for the moon; saw: no moon"


def test_a_state_that_cannot_be_described_does_not_hide_the_failure():
    with pytest.raises(pytest.fail.Exception, match=r"the moon; saw: \(could not describe"):
        wait_until(lambda: False, timeout_s=0, what="the moon", seen=lambda: 1 / 0)


def test_a_wait_on_a_process_ends_when_it_exits_with_its_return_code():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(pytest.fail.Exception, match=r"exited first \(return code 3\)"):
        wait_until(lambda: False, timeout_s=600, what="the moon", proc=proc)


def test_run_child_returns_the_completed_process():
    done = run_child([sys.executable, "-c", "print('hi')"], timeout_s=120, what="a greeting")
    assert (done.returncode, done.stdout) == (0, "hi\n")


def test_a_child_past_its_deadline_fails_naming_it():
    with pytest.raises(pytest.fail.Exception, match=r"^a nap did not finish in 0.5 s\n--- stdout"):
        run_child(["sleep", "600"], timeout_s=0.5, what="a nap")


def test_wait_for_exit_fails_naming_the_process_and_what_it_saw():
    proc = subprocess.Popen(["sleep", "600"])
    try:
        with pytest.raises(pytest.fail.Exception) as failed:
            wait_for_exit(proc, timeout_s=0.1, what="a nap", seen=lambda: "snoring")
        assert str(failed.value) == "a nap did not finish in 0.1 s; saw: snoring"
    finally:
        proc.kill()
        wait_for_exit(proc, timeout_s=60, what="a killed nap")


def test_output_tails_decode_bytes_and_keep_the_end():
    text = output_tails(b"x" * 5000 + b"END", None)
    assert "x" * 2997 + "END\n--- stderr" in text and "x" * 2998 not in text
    assert tail(None) == "" and tail("abc", 2) == "bc"
