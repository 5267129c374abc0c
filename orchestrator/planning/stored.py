"""The plan an experiment was submitted with, read back from its store (`orch resume`,
`orch status`), with its root set to where the experiment is now."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from orchestrator.planning.parse import parse_plan
from orchestrator.planning.plan import Plan
from storage.errors import StoreError
from storage.fsio import join_uri, read_bytes, redact
from storage.store import Store


def load_experiment_plan(experiment_uri: str) -> Plan:
    """The plan stored in an experiment, with its root set to where the experiment is."""
    store = Store(experiment_uri)
    text = read_bytes(store.fs, f"{store.root}/plan.yaml")
    if text is None:
        raise StoreError(
            f"{experiment_uri} is not an experiment (no plan.yaml)",
            hint="give the directory `orch submit` printed, e.g. experiments/local",
        )
    root, name = _split_experiment_uri(experiment_uri)
    plan = parse_plan(text.decode(), path=redact(join_uri(experiment_uri, "plan.yaml")), store=root)
    if plan.name != name:
        raise StoreError(
            f"{experiment_uri}/plan.yaml names experiment {plan.name!r}, "
            f"but it is stored under {name!r}"
        )
    return plan


def _split_experiment_uri(uri: str) -> tuple[str, str]:
    """(store URI, experiment name) of an experiment URI; an S3 URI keeps its query
    options (`s3://b/exps/x?endpoint_override=h:9000` -> `s3://b/exps?endpoint...`, `x`)."""
    if "://" not in uri:
        root, _, name = uri.rstrip("/").rpartition("/")
        return root or ".", name
    parts = urlsplit(uri)
    head, _, name = parts.path.rstrip("/").rpartition("/")
    return urlunsplit(parts._replace(path=head)), name
