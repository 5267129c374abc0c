"""Typed access to a plan's raw YAML that turns every problem into one PlanError line.

Each error names the file, the 1-based line of the offending key (or of its nearest
parent present in the file), the key path, what was expected and what was found.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from storage.errors import OrchError


class PlanError(OrchError, ValueError):
    """The plan file is invalid; the message names file, line and key path."""


def key_lines(node: yaml.Node, key: tuple = (), _seen: set | None = None) -> dict:
    """1-based line of every key path in the document."""
    found = {key: node.start_mark.line + 1}
    seen = set() if _seen is None else _seen
    # An alias is walked once: errors inside it point at its anchor's lines anyway, and
    # a self-referential (`&a [*a]`) or exponentially aliased document stays cheap.
    if id(node) in seen:
        return found
    seen.add(id(node))
    active = seen
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):  # a complex key: reported as unknown
                continue
            found.update(key_lines(v, (*key, k.value), active))
            found[(*key, k.value)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.update(key_lines(item, (*key, i), active))
    return found


_TYPE_WORDS = {
    int: "an integer",
    bool: "true or false",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}
MISSING = object()


class Reader:
    """Typed access to the raw YAML that turns every problem into one PlanError line."""

    def __init__(self, path: str, lines: dict[tuple, int]):
        self.path = path
        self.lines = lines

    def fail(self, key: tuple, message: str):
        line = next(
            (self.lines[key[:i]] for i in range(len(key), -1, -1) if key[:i] in self.lines), 1
        )
        dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in key).lstrip(".")
        # One line, even if a key or value in the file spans several.
        raise PlanError(" ".join(f"{self.path}:{line} {dotted or '(top)'}: {message}".split()))

    def mapping(self, value: Any, key: tuple) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {_show(value)}")
        return value

    def only(self, m: dict, key: tuple, allowed: set[str]) -> None:
        for k in m:
            if not isinstance(k, str) or k not in allowed:
                self.fail(
                    (*key, str(k)), f"unknown key (expected one of: {', '.join(sorted(allowed))})"
                )

    def section(
        self,
        parent: dict,
        name: str,
        allowed: set[str],
        *,
        required: bool = False,
        prefix: tuple = (),
    ) -> dict:
        key = (*prefix, name)
        if name not in parent:
            if required:
                self.fail(key, "missing required section")
            return {}
        value = {} if parent[name] is None else self.mapping(parent[name], key)
        self.only(value, key, allowed)
        return value

    def get(
        self,
        m: dict,
        key: tuple,
        typ: type,
        default: Any = MISSING,
        *,
        positive: bool = False,
        at_least: float | None = None,
        at_most: float | None = None,
    ) -> Any:
        value = m.get(key[-1], MISSING)
        if value is MISSING or (value is None and default is None):
            if default is MISSING:
                self.fail(key, f"missing required key (expected {_TYPE_WORDS[typ]})")
            return default
        # YAML's true is an int in Python; never let it pass as a number.
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            self.fail(key, f"expected {_TYPE_WORDS[typ]}, got {_show(value)}")
        if typ is int:
            self._check_range(value, key, positive, at_least, at_most)
        return value

    def number(
        self,
        value: Any,
        key: tuple,
        *,
        positive: bool = False,
        at_least: float | None = None,
        at_most: float | None = None,
    ) -> float:
        if value is None:
            self.fail(key, "missing required key (expected a number like 1e12)")
        # PyYAML reads "1e12" (no dot) as a string; accept it as the number users meant.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                self.fail(key, f"expected a number like 1e12, got {_show(value)}")
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            self.fail(key, f"expected a number like 1e12, got {_show(value)}")
        self._check_range(value, key, positive, at_least, at_most)
        return float(value)

    def fraction(self, m: dict, key: tuple, default: float, *, open_low: bool = False) -> float:
        value = self.number(m.get(key[-1], default), key)
        if not (0 < value <= 1 if open_low else 0 <= value <= 1):
            interval = "(0, 1]" if open_low else "[0, 1]"
            self.fail(key, f"expected a fraction in {interval}, got {_show(value)}")
        return value

    def _check_range(self, value, key, positive, at_least, at_most) -> None:
        if positive and value <= 0:
            self.fail(key, f"expected a positive number, got {_show(value)}")
        if at_least is not None and value < at_least:
            self.fail(key, f"expected at least {at_least:g}, got {_show(value)}")
        if at_most is not None and value > at_most:
            self.fail(key, f"expected at most {at_most:g}, got {_show(value)}")

    def choice(self, m: dict, key: tuple, options: tuple, default: Any) -> Any:
        value = m.get(key[-1], default)
        if value not in options or isinstance(value, bool) != isinstance(options[0], bool):
            self.fail(key, f"expected one of {', '.join(map(str, options))}, got {_show(value)}")
        return value


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = " ".join(value.split())  # one line, whatever the YAML held
        return f'"{text[:60]}..."' if len(text) > 60 else f'"{text}"'
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__.replace('dict', 'mapping')}"
    return repr(value)
