"""Paths in a plan, and the copy of the plan an experiment keeps.

A relative path in a plan (a tokens root, a sink's folder or SQLite file, a prior fit) is
the plan file's folder's. The experiment keeps a copy of the plan (`plan.yaml`, which
`orch resume`, `orch fit` and `orch status` read back, and which a Ray job's driver runs)
in another folder, from which the same relative path would name another file, or none.
So `Plan.text`, the text that is copied, names each such path absolutely; the rest of
the file (comments, layout, line numbers) is kept as written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from orchestrator.planning.plan import Plan


def beside(plan_path: str, value: str) -> str:
    """A path in a plan as its workers read it: relative to the plan file's folder, and
    resolved (`..`, links), since a tokens root is part of a run's identity: one folder,
    however it is spelled, is one root."""
    joined = Path(plan_path).resolve().parent / Path(value).expanduser()
    try:
        return str(joined.resolve())
    except (OSError, RuntimeError, ValueError):  # a NUL byte, a link loop: checked later
        return str(joined)


def stored_text(text: str, node: yaml.Node, top: dict, plan: Plan) -> str:
    """`text` with each relative path of the validated `plan` (whose YAML is `top`,
    composed as `node`) replaced by the absolute path the plan resolved it to."""
    spans = {}  # by start: a scalar that an alias repeats is one span
    for key, value in _resolved(top, plan).items():
        scalar = _scalar(node, key)
        if scalar is not None:  # a JSON string is a YAML double-quoted scalar
            spans[scalar.start_mark.index] = (scalar.end_mark.index, json.dumps(value))
    for start, (end, new) in sorted(spans.items(), reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _resolved(top: dict, plan: Plan) -> dict[tuple, str]:
    """Key path -> absolute path, for every path the plan wrote relative."""
    out: dict[tuple, str] = {}
    data = top.get("data") or {}
    if plan.data.source == "tokens":  # a bytes root is kept as written (see parse_data)
        for key in ("root", "eval_root"):
            if _relative(data.get(key)):
                out[("data", key)] = getattr(plan.data, key)
    for i, item in enumerate((top.get("logging") or {}).get("sinks") or []):
        if not isinstance(item, dict):
            continue
        if _relative(item.get("dir")):
            out[("logging", "sinks", i, "dir")] = plan.sinks[i].dir
        uri = item.get("tracking_uri")
        if isinstance(uri, str) and uri.startswith("sqlite:///") and _relative(uri[10:]):
            out[("logging", "sinks", i, "tracking_uri")] = plan.sinks[i].tracking_uri
    prior = (top.get("seed_grid") or {}).get("prior_fit")
    if _relative(prior):
        out[("seed_grid", "prior_fit")] = str(Path(plan.path).resolve().parent / prior)
    return out


def _relative(value: Any) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and value != "stdlib"
        and "://" not in value
        and not Path(value).expanduser().is_absolute()
    )


def _scalar(node: yaml.Node, key: tuple) -> yaml.ScalarNode | None:
    """The scalar node at `key` (mapping keys and sequence indices), if there is one."""
    for part in key:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            return None
        if node is None:
            return None
    return node if isinstance(node, yaml.ScalarNode) else None
