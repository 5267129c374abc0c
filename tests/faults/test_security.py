"""Security checks: what we listen on, what we parse, what we run, where we write, and
that credentials never reach the store or the logs.

Source checks read the code's syntax tree (not a grep, so comments and strings don't
count); behavioural checks run the real thing.
"""

from __future__ import annotations

import ast
import os
import sys
import uuid
from pathlib import Path

import psutil
import pytest
from _faults import BUCKET, ROOT, child_env, orch, simulated_plan

from orchestrator.planning import PlanError, load_plan, parse_plan
from storage.errors import StoreError
from storage.fsio import list_files
from storage.store import Store, experiment_uri
from tests.waiting import run_child

SOURCES = sorted(
    p for pkg in ("orchestrator", "workers", "storage", "bench") for p in (ROOT / pkg).rglob("*.py")
)


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_the_source_scan_sees_the_whole_project():
    # Guards the scans below: they must not pass by reading nothing.
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"orchestrator/planning/plan.py", "storage/store.py", "workers/train.py"} <= names


def test_no_yaml_load_other_than_safe():
    bad = []
    for path in SOURCES:
        for node, func in _calls(path):
            if func in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
                bad.append(f"{path.name}:{node.lineno} {func}")
            loaders = [k for k in node.keywords if k.arg == "Loader"]
            if loaders and ast.unparse(loaders[0].value) not in ("yaml.SafeLoader",):
                bad.append(f"{path.name}:{node.lineno} Loader={ast.unparse(loaders[0].value)}")
    assert bad == []


def test_no_pickle_loads_no_shell_no_eval():
    # torch.load is pickle too: our code never calls it. DeepSpeed's own load_checkpoint
    # unpickles checkpoint files (weights_only=False); docs/reliability.md says so.
    banned = {
        "pickle.load",
        "pickle.loads",
        "cloudpickle.load",
        "cloudpickle.loads",
        "torch.load",
        "os.system",
        "os.popen",
        "eval",
        "exec",
        "marshal.loads",
    }
    bad = []
    for path in SOURCES:
        for node, func in _calls(path):
            if func in banned:
                bad.append(f"{path.name}:{node.lineno} {func}")
            for kw in node.keywords:
                if kw.arg == "shell" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    bad.append(f"{path.name}:{node.lineno} shell={ast.unparse(kw.value)}")
    assert bad == []


def test_a_plan_with_a_python_object_tag_is_a_plan_error_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    text = (
        (ROOT / "plans" / "local.yaml")
        .read_text()
        .replace("name: local", f"name: !!python/object/apply:os.system ['touch {marker}']")
    )
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    with pytest.raises(PlanError, match=r"evil\.yaml:\d+ "):
        load_plan(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "..",
        "/etc",
        "/tmp/x",
        "a/b",
        "a/../../b",
        "x\\..\\y",
        ".hidden",
        "",
        "~root",
        "a\nb",
        "x" * 200,
        "s3://bucket/x",
        "C:\\x",
        "%2e%2e",
    ],
)
def test_experiment_names_cannot_escape_the_store_root(tmp_path, name):
    with pytest.raises(StoreError):
        experiment_uri(str(tmp_path), name)
    text = (ROOT / "plans" / "local.yaml").read_text().replace("name: local", f"name: {name!r}")
    with pytest.raises(PlanError):
        parse_plan(text, path="x.yaml", store=str(tmp_path / "root"))
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("run_id", ["../x", "/abs", "a/b", "..", "run_id=x/../../y"])
def test_run_ids_cannot_escape_the_experiment(tmp_path, run_id):
    store = Store(str(tmp_path / "exp"))
    for touch in (
        lambda: store.write_spec(run_id, "{}"),
        lambda: store.append_event(run_id, attempt=0, state="running"),
        lambda: store.write_run_summary({"run_id": run_id}),
        lambda: store.metrics_writer(run_id, attempt=0),
        lambda: store.metrics([run_id]),
        lambda: store.checkpoint_dir(run_id),
    ):
        with pytest.raises(StoreError):
            touch()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_ray_auth_mode_is_set_explicitly_before_ray_is_imported():
    env = {k: v for k, v in child_env().items() if k != "RAY_AUTH_MODE"}
    code = (
        "import os, sys; import orchestrator.scheduler.ray_backend; "
        "assert 'ray' in sys.modules; print(os.environ.get('RAY_AUTH_MODE'))"
    )
    done = run_child(
        [sys.executable, "-c", code], env=env, timeout_s=120, what="importing the Ray backend"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "token"


@pytest.mark.slow
def test_embedded_ray_dashboard_listens_on_loopback_only_and_ray_runs_with_token_auth(
    ray_local,
):
    assert ray_local is not None and ray_local.startswith("http://127.0.0.1:")
    port = int(ray_local.rsplit(":", 1)[1])
    ours = {p.pid: p for p in psutil.Process().children(recursive=True)}
    listening = [
        c
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening
    # Ray's own gRPC ports listen on every interface (Ray has no switch for that); what
    # guards them is token auth, which every Ray process we started must run with.
    gcs = [p for p in ours.values() if p.name().startswith("gcs_server")]
    assert gcs, "no gcs_server among this session's processes"
    assert all(p.environ().get("RAY_AUTH_MODE") == "token" for p in gcs)


def test_s3_credentials_in_a_store_uri_are_refused(tmp_path):
    uri = f"s3://{BUCKET}/x?endpoint_override=127.0.0.1:1&scheme=http&secret_key=abc"
    with pytest.raises(StoreError, match="credentials") as err:
        Store(uri)
    assert "abc" not in str(err.value)


@pytest.mark.slow  # a study and the CLI, in child processes
def test_planted_secrets_never_reach_the_store_or_the_logs(tmp_path, moto_server):
    secret = f"SECRET-{uuid.uuid4().hex}"
    token = f"TOKEN-{uuid.uuid4().hex}"
    endpoint = f"{moto_server[0]}:{moto_server[1]}"
    store_uri = f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}?endpoint_override={endpoint}&scheme=http"
    plan_path = simulated_plan(tmp_path, store_uri)
    # moto accepts any key: the secret travels only as a SigV4 signature, never itself.
    env = child_env(AWS_SECRET_ACCESS_KEY=secret, AWS_SESSION_TOKEN=token)
    experiment = load_plan(plan_path).experiment_uri
    outputs = []
    # `orch fit` reads local experiments only (a known gap), so: submit, resume, status.
    for args in (("submit", str(plan_path)), ("resume", experiment), ("status", experiment)):
        done = run_child(orch("--verbose", *args), env=env, timeout_s=600, what=f"orch {args[0]}")
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout + done.stderr)
    store = Store(experiment)
    objects = list_files(store.fs, store.root, recursive=True)
    assert len(objects) > 20
    for info in objects:
        data = store.fs.open_input_stream(info.path).read()
        assert secret.encode() not in data and token.encode() not in data, info.path
    for text in outputs:
        assert secret not in text and token not in text
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") != secret  # planted in the child only
