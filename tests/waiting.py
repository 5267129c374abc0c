"""Waiting in tests: each wait is a condition with a deadline, and a wait whose deadline
passes fails the test saying what it waited for and what it saw, so that a failure in CI
can be diagnosed from its message alone.

A deadline is a bound for "something is broken", not a speed expectation: the suite must
pass on a loaded 2-core machine, so deadlines are generous (their cost shows only when
something is broken). Nothing here retries, and nothing asserts how long a thing took.

    wait_until(condition, timeout_s=, what=, seen=)   poll until condition() is truthy
    run_child(argv, timeout_s=, what=, ...)           subprocess.run with a deadline
    wait_for_exit(proc, timeout_s=, what=, seen=)     the same for a started Popen
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
TAIL_CHARS = 3000  # enough of a child's output to see its error, short enough to read


def tail(text: str | bytes | None, chars: int = TAIL_CHARS) -> str:
    """The last `chars` characters of a child's output (TimeoutExpired carries bytes or
    None, whatever the child's text mode)."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-chars:]


def file_tail(path: Path, chars: int = TAIL_CHARS) -> str:
    """The end of a log file, or why there is none (a wait may end before it is written)."""
    try:
        return tail(path.read_text(errors="replace"), chars)
    except OSError as err:
        return f"({path.name} unreadable: {err})"


def output_tails(stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    """The ends of a child's stdout and stderr, labelled, for a failure message."""
    return (
        f"--- stdout (last {TAIL_CHARS} characters) ---\n{tail(stdout)}\n"
        f"--- stderr (last {TAIL_CHARS} characters) ---\n{tail(stderr)}"
    )


def _describe(seen: Callable[[], str] | None) -> str:
    if seen is None:
        return "(nothing recorded)"
    try:
        return seen()
    except Exception as err:  # noqa: BLE001 - the failure message must not be lost to this
        return f"(could not describe the state: {err!r})"


def wait_until(
    condition: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    seen: Callable[[], str] | None = None,
    proc: subprocess.Popen | None = None,
    interval_s: float = 0.1,
) -> T:
    """Poll `condition()` until it is truthy; its value.

    Fails once `timeout_s` have passed, with "waited <timeout_s> s for <what>; saw:
    <seen()>" (`seen` describes the current state: the latest events, a log tail). With
    `proc`, the process the wait depends on, it fails as soon as that process has exited
    (and the condition still does not hold), with its return code: nothing will change.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = condition()  # it may have been met just before the process exited
            if value:
                return value
            pytest.fail(
                f"gave up waiting for {what}: the process exited first "
                f"(return code {proc.returncode}); saw: {_describe(seen)}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:g} s for {what}; saw: {_describe(seen)}")
        time.sleep(interval_s)


def run_child(
    argv: list[str], *, timeout_s: float, what: str, **subprocess_kwargs
) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, ...)`.

    A child still running after `timeout_s` is killed (as subprocess.run does) and the test
    fails with "<what> did not finish in <timeout_s> s" and the ends of the output it had
    produced. The return code is the caller's to check.
    """
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, **subprocess_kwargs
        )
    except subprocess.TimeoutExpired as err:
        late = err  # failed below, outside the handler: no chained traceback in the report
    pytest.fail(
        f"{what} did not finish in {timeout_s:g} s\n{output_tails(late.stdout, late.stderr)}"
    )


def wait_for_exit(
    proc: subprocess.Popen,
    *,
    timeout_s: float,
    what: str,
    seen: Callable[[], str] | None = None,
) -> subprocess.CompletedProcess:
    """Wait for a started process to exit; its return code and the rest of its piped output
    (None for a stream that is not a pipe), as a CompletedProcess.

    Fails once `timeout_s` have passed with "<what> did not finish in <timeout_s> s", the
    output read so far and `seen()` (for a process that writes to a file: its tail). The
    process is left running then: its owner (a fixture, a `finally`) stops it.
    """
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    except subprocess.TimeoutExpired as err:
        late = err  # failed below, outside the handler: no chained traceback in the report
    piped = proc.stdout is not None or proc.stderr is not None
    output = f"\n{output_tails(late.stdout, late.stderr)}" if piped else ""
    pytest.fail(f"{what} did not finish in {timeout_s:g} s; saw: {_describe(seen)}{output}")
