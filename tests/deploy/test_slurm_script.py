"""deploy/slurm/orch.sbatch, run for real on this machine.

`srun` and `scontrol` are replaced by local stand-ins (a step runs its command here;
`scontrol show hostnames` lists the fake nodes; `scontrol requeue` is logged), so the
script starts a real Ray head and a real Ray worker on 127.0.0.1 with `ray start`,
waits for both, runs a driver command in place of a study, and stops Ray. Each script
runs in a session of its own; whatever the outcome, the fixture stops what is left of
that session, and only that.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.waiting import run_child, wait_for_exit, wait_until

_SRUN = r"""#!/usr/bin/env bash
# Stand-in for srun: drop srun's own options, run the step's command on this machine.
while (($#)); do
    case $1 in
        --) shift; break ;;
        -w | -N | -n | -c) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
exec "$@"
"""

_SCONTROL = r"""#!/usr/bin/env bash
# Stand-in for scontrol: `show hostnames` lists $SHIM_NODES; `requeue` is logged.
case "$1 $2" in
    "show hostnames") tr ' ' '\n' <<<"$SHIM_NODES" ;;
    requeue\ *) echo "requeue $2" >>"$SHIM_LOG" ;;
    *) echo "scontrol stand-in: unsupported: $*" >&2; exit 2 ;;
esac
"""

# Runs as ORCH_COMMAND on a two-node cluster: what the driver sees of it.
_PROBE = """
import json, os, sys
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

ran_on = ray.get([
    where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
    for n in alive
])

def listening(port):  # the addresses a TCP port listens on, from /proc/net/tcp{,6}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found

with open(sys.argv[1], "w") as f:
    json.dump({"alive": alive, "ran_on": ran_on, "address": os.environ["RAY_ADDRESS"],
               "auth_mode": os.environ.get("RAY_AUTH_MODE"),
               "dashboard": listening(int(os.environ["RAY_DASHBOARD_PORT"]))}, f)
sys.exit(3)  # the script must hand this on
"""

# Runs as ORCH_COMMAND until interrupted, like `orch submit` on Ctrl-C.
# Its SIGINT handler is in place before it says it started: a SIGINT landing between
# "started" and a `try:` (a loaded machine can pause a process there) would kill it unrecorded.
_SLEEPER = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])

def interrupted(signum, frame):
    (out / "interrupted").touch()
    sys.exit(130)

signal.signal(signal.SIGINT, interrupted)
(out / "started").touch()
time.sleep(600)
"""

JOB_ID = "4242"


def _session_pids(sid: int) -> list[int]:
    """Processes still in session `sid` (the script and everything it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command name: state, ppid, pgrp, session
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _command_lines(pids: list[int]) -> list[str]:
    lines = []
    for pid in pids:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:200])
        except OSError:
            pass
    return lines


def _wait_session_ended(sid: int, timeout_s: float = 120) -> None:
    """Wait for every process of session `sid` (the job's) to exit; fails naming those
    still alive after `timeout_s`.

    Ray's worker processes exit by themselves once their raylet is gone, a moment after
    the raylet (on a real cluster, SLURM also ends whatever a finished step left); a
    moment that is longer beside busy processes, hence the generous bound."""
    wait_until(
        lambda: not _session_pids(sid),
        timeout_s=timeout_s,
        what="the job's Ray processes to exit after the job (they must not outlive it)",
        seen=lambda: f"still alive: {_command_lines(_session_pids(sid))}",
        interval_s=0.5,
    )


@dataclass
class Job:
    proc: subprocess.Popen
    dir: Path

    @property
    def log(self) -> str:
        return (self.dir / "script.log").read_text()

    def requeues(self) -> list[str]:
        path = self.dir / "scontrol.log"
        return path.read_text().split("\n")[:-1] if path.exists() else []

    def wait_for(self, path: Path, timeout_s: float = 300) -> None:
        wait_until(
            path.exists,
            timeout_s=timeout_s,
            what=f"{path.name} to appear",
            seen=lambda: f"the script's log:\n{self.log}",
            proc=self.proc,
            interval_s=0.5,
        )

    def exit_code(self, timeout_s: float) -> int:
        """The script's exit code, once it exited; fails with its log after `timeout_s`."""
        return wait_for_exit(
            self.proc,
            timeout_s=timeout_s,
            what="the job script",
            seen=lambda: f"the script's log:\n{self.log}",
        ).returncode


class Slurm:
    """A fake allocation on this machine: `start(nodes, command)` runs the script in it."""

    def __init__(self, dir: Path, start):
        self.dir = dir
        self.start = start


@pytest.fixture
def slurm(deploy_dir, shellcheck):
    """A Slurm whose `start(nodes, command)` runs the script as a job on `nodes`."""
    # Short: Ray's socket paths under its temp dir must fit in 107 characters.
    base = Path(tempfile.mkdtemp(prefix="orch-slurm-", dir="/tmp"))
    shims = base / "bin"
    shims.mkdir()
    for name, text in (("srun", _SRUN), ("scontrol", _SCONTROL)):
        assert shellcheck(text, name=name) == ""
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    jobs: list[Job] = []

    def start(nodes: list[str], command: str, *, head_args: str = "") -> Job:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM", "RAY_", "ORCH_"))}  # fmt: skip
        env.update(
            PATH=os.pathsep.join([str(shims), str(Path(sys.executable).parent), env["PATH"]]),
            SLURM_JOB_ID=JOB_ID,
            SLURM_JOB_NODELIST=",".join(nodes),
            SLURMD_NODENAME=nodes[0],
            SLURM_CPUS_PER_TASK="1",
            SLURM_GPUS_ON_NODE="0",
            SHIM_NODES=" ".join(nodes),
            SHIM_LOG=str(base / "scontrol.log"),
            ORCH_COMMAND=command,
            ORCH_HEAD_IP="127.0.0.1",
            ORCH_LOG_DIR=str(base / "logs"),
            ORCH_RAY_TMPDIR=str(base / "ray"),
            ORCH_START_TIMEOUT_S="300",
            ORCH_STOP_GRACE_S="30",
            # Free ports for everything Ray would otherwise bind at a fixed one, so that
            # two "nodes" on one machine, and other Rays here, do not collide.
            RAY_PORT=str(free_port()),
            RAY_DASHBOARD_PORT=str(free_port()),
            RAY_CLIENT_SERVER_PORT=str(free_port()),
            ORCH_RAY_HEAD_ARGS=f"--dashboard-agent-listen-port={free_port()} {head_args}",
            ORCH_RAY_WORKER_ARGS=f"--dashboard-agent-listen-port={free_port()}",
            RAY_AUTH_TOKEN_PATH=str(base / "shared" / "auth_token"),
            RAY_USAGE_STATS_ENABLED="0",
        )
        with open(base / "script.log", "w") as log:
            proc = subprocess.Popen(
                ["bash", str(deploy_dir / "slurm" / "orch.sbatch")],
                cwd=base,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: we stop exactly what it started
            )
        jobs.append(Job(proc, base))
        return jobs[-1]

    yield Slurm(base, start)

    for job in jobs:
        if job.proc.poll() is None:
            job.proc.send_signal(signal.SIGTERM)  # the script's own clean-up first
            try:
                job.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pass
        for pid in _session_pids(job.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if job.proc.poll() is None:
            job.exit_code(timeout_s=60)
    shutil.rmtree(base, ignore_errors=True)


def test_script_passes_shellcheck(deploy_dir, shellcheck):
    text = (deploy_dir / "slurm" / "orch.sbatch").read_text()
    assert shellcheck(text, name="orch.sbatch") == ""


def test_batch_header_asks_for_requeue_and_a_warning_before_the_time_limit(deploy_dir):
    header = [
        line.split(None, 1)[1]
        for line in (deploy_dir / "slurm" / "orch.sbatch").read_text().splitlines()
        if line.startswith("#SBATCH ")
    ]
    assert "--requeue" in header
    assert any(h.startswith("--signal=B:USR1@") for h in header)
    assert "--ntasks-per-node=1" in header  # one Ray process per node


def test_script_refuses_to_run_outside_a_slurm_job(deploy_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    proc = run_child(
        ["bash", str(deploy_dir / "slurm" / "orch.sbatch")],
        cwd=tmp_path, env=env, timeout_s=60, what="orch.sbatch outside a SLURM job",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "not inside a SLURM job" in proc.stderr


@pytest.mark.slow
def test_starts_head_and_worker_runs_the_driver_and_stops_ray(slurm):
    (slurm.dir / "probe.py").write_text(textwrap.dedent(_PROBE))
    job = slurm.start(["n1", "n2"], f'python "{slurm.dir}/probe.py" "{slurm.dir}/probe.json"')
    rc = job.exit_code(timeout_s=600)

    assert rc == 3, job.log  # the driver's exit code is the job's
    seen = json.loads((job.dir / "probe.json").read_text())
    assert len(seen["alive"]) == 2, job.log  # head and worker both joined
    assert sorted(seen["ran_on"]) == sorted(seen["alive"])  # and both ran work
    assert seen["address"].startswith("127.0.0.1:")
    assert seen["auth_mode"] == "token"
    assert seen["dashboard"] == ["0100007F"], "the dashboard must listen on 127.0.0.1 only"
    token = job.dir / "shared" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
    assert sorted(p.name for p in (job.dir / "logs").iterdir()) == [
        "ray-head-n1.log",
        "ray-worker-n2.log",
    ]
    _wait_session_ended(job.proc.pid)
    assert job.requeues() == []
    assert "stopping Ray on 2 node(s)" in job.log


@pytest.mark.slow
def test_time_limit_warning_stops_the_driver_and_ray_then_requeues(slurm):
    (slurm.dir / "sleeper.py").write_text(textwrap.dedent(_SLEEPER))
    # No dashboard: this test is about signals, and the dashboard is seconds of start-up.
    job = slurm.start(
        ["n1"],
        f'python "{slurm.dir}/sleeper.py" "{slurm.dir}"',
        head_args="--include-dashboard=false",
    )
    job.wait_for(job.dir / "started")

    job.proc.send_signal(signal.SIGUSR1)  # SLURM's --signal=B:USR1@300
    rc = job.exit_code(timeout_s=300)

    assert rc == 128 + signal.SIGUSR1, job.log
    assert (job.dir / "interrupted").exists(), "the driver did not get SIGINT"
    _wait_session_ended(job.proc.pid)
    assert job.requeues() == [f"requeue {JOB_ID}"]
