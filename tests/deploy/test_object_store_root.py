"""The experiment root on object storage, end to end, configured as the clusters configure it.

`orch submit` runs as a separate process, as a RayJob's entrypoint or the SLURM script's
driver does, with a plan whose `store:` is a bare `s3://bucket/prefix` and everything else
from the standard AWS environment variables, as the Kubernetes Secret provides them
(`AWS_ENDPOINT_URL` points at a moto S3 server on 127.0.0.1, as it would at MinIO). The
runs must finish and leave the experiment in the bucket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from tests.ports import accepts, free_port
from tests.waiting import file_tail, run_child, wait_for_exit, wait_until

BUCKET = "orch-e2e"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """The environment a cluster pod gets from the orch-object-store Secret, pointing at
    a moto S3 server on 127.0.0.1 that holds an empty bucket."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.fail("needs moto's S3 server: pip install 'moto[server]' (a dev dependency)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    log = log_path.open("wb")  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def server_log() -> str:
        return f"its log:\n{file_tail(log_path)}"

    try:
        # moto imports for seconds, longer beside busy processes: a generous bound.
        wait_until(
            lambda: accepts(port),
            timeout_s=180,
            what=f"the moto S3 server to listen on 127.0.0.1:{port}",
            seen=server_log,
            proc=server,
        )
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_EC2_METADATA_DISABLED": "true",  # no probing for a cloud metadata service
        }
        fs = pafs.S3FileSystem(
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            endpoint_override=f"127.0.0.1:{port}",
            scheme="http",
            allow_bucket_creation=True,
        )
        fs.create_dir(BUCKET)
        yield env, fs
    finally:
        server.terminate()
        wait_for_exit(server, timeout_s=60, what="moto after SIGTERM", seen=server_log)
        log.close()


def _tiny_plan(root: Path, tmp_path: Path, store: str) -> Path:
    """plans/local.yaml cut to its smallest model at one small compute level."""
    plan = yaml.safe_load((root / "plans" / "local.yaml").read_text())
    plan["name"] = "s3-e2e"
    plan["store"] = store
    plan["grid"]["compute_flops"] = [1.5e10]
    smallest = {k: v for k, v in plan["grid"]["sizes"][0].items() if k != "levels"}
    plan["grid"]["sizes"] = [smallest]
    plan["budget"] = {"flops": 1e11}  # room for the one run
    path = tmp_path / "s3-e2e.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


@pytest.mark.slow
def test_orch_submit_runs_a_study_on_an_s3_root_from_environment_credentials(
    s3_env, root, tmp_path
):
    env_s3, fs = s3_env
    plan = _tiny_plan(root, tmp_path, f"s3://{BUCKET}/experiments")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(env_s3, RAY_USAGE_STATS_ENABLED="0")
    proc = run_child(
        [str(Path(sys.executable).with_name("orch")), "submit", str(plan)],
        cwd=tmp_path,  # nothing may land here: the experiment lives in the bucket
        env=env,
        timeout_s=600,
        what="orch submit",
    )
    output = proc.stdout + proc.stderr
    experiment = f"{BUCKET}/experiments/s3-e2e"
    files = {
        info.path.removeprefix(experiment + "/")
        for info in fs.get_file_info(pafs.FileSelector(experiment, recursive=True))
        if info.type == pafs.FileType.File
    }
    assert "plan.yaml" in files, output
    assert any(f.startswith("metrics/") and f.endswith(".parquet") for f in files), output
    summary = pq.read_table(f"{experiment}/summary.parquet", filesystem=fs).to_pylist()
    assert [row["status"] for row in summary] == ["finished"], output
    assert proc.returncode == 0, output
    assert not (tmp_path / "experiments").exists()
