"""Cluster submission through the Ray Jobs API: the driver runs on the cluster, so a study
survives the laptop that submitted it.

`orch submit PLAN --address http://HEAD:8265` uploads only the plan file (as the job's
working directory) and runs `orch submit plan.yaml` there; the cluster's image must have
the project installed (deploy/). Jobs carry metadata naming the experiment, which is how
`orch status` and `orch cancel` find them from outside the cluster.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from orchestrator.planning.plan import Plan
from orchestrator.scheduler.base import BackendError

log = logging.getLogger(__name__)

_AGENT_RETRIES = 30
_AGENT_RETRY_S = 2.0
# Still no agent after a minute: the head's dashboard agent is not serving. The usual
# cause on a shared machine is another Ray holding its port.
_NO_AGENT_HINT = (
    "the head's dashboard agent is not serving jobs; if another Ray runs on the head "
    "machine, it may hold the agent's port (52365): start the head with "
    "--dashboard-agent-listen-port set to a free port"
)


def is_jobs_address(address: str | None) -> bool:
    """True for a dashboard (Jobs API) address; ray:// and host:port connect a driver."""
    return bool(address) and address.startswith(("http://", "https://"))


@dataclass(frozen=True)
class RemoteJob:
    job_id: str
    status: str  # PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED
    experiment: str
    entrypoint: str


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise BackendError(f"cannot reach the Ray Jobs API at {address}: {err}") from err


def submit_job(plan: Plan, address: str) -> RemoteJob:
    """Send `orch submit` of `plan` to the cluster at `address`; returns at once."""
    if "://" not in plan.store and not os.path.isabs(plan.store):
        raise BackendError(
            f"plan store {plan.store!r} is a relative path: on the cluster it would land in "
            "the job's temporary working directory",
            hint="use an s3:// URI (or an absolute path on a shared file system)",
        )
    workdir = tempfile.mkdtemp(prefix="orch-job-")
    try:
        with open(os.path.join(workdir, "plan.yaml"), "w") as f:
            f.write(plan.text)
        digest = hashlib.sha256(plan.text.encode()).hexdigest()[:8]
        entrypoint = "orch submit plan.yaml"
        client = _client(address)
        metadata = {
            "orch_experiment": plan.experiment_uri,
            "orch_plan": plan.name,
            "orch_plan_sha256": digest,
        }
        # A freshly started head answers "no available agent ... try again later" for a
        # few seconds; that is the only error worth waiting out.
        for attempt in range(_AGENT_RETRIES + 1):
            try:
                job_id = client.submit_job(
                    entrypoint=entrypoint,
                    runtime_env={"working_dir": workdir},
                    metadata=metadata,
                    submission_id=f"orch-{plan.name}-{digest}-{os.urandom(3).hex()}",
                )
                break
            except RuntimeError as err:
                waiting = "try again later" in str(err)
                if not waiting or attempt == _AGENT_RETRIES:
                    message = " ".join(str(err).split())
                    raise BackendError(
                        f"the Jobs API at {address} refused the job: {message}",
                        hint=_NO_AGENT_HINT if waiting else "",
                    ) from err
                log.info("no job agent ready at %s yet; retrying", address)
                time.sleep(_AGENT_RETRY_S)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("submitted job %s for experiment %s", job_id, plan.experiment_uri)
    return RemoteJob(job_id, "PENDING", plan.experiment_uri, entrypoint)


def experiment_jobs(address: str, experiment: str | None = None) -> list[RemoteJob]:
    """The cluster's orch jobs (of one experiment, if given), newest last."""
    jobs = []
    for info in _client(address).list_jobs():
        meta = info.metadata or {}
        if "orch_experiment" not in meta:
            continue
        if experiment is not None and meta["orch_experiment"].rstrip("/") != experiment.rstrip("/"):
            continue
        jobs.append(
            RemoteJob(
                info.submission_id or info.job_id,
                str(info.status.value),
                meta["orch_experiment"],
                info.entrypoint,
            )
        )
    return jobs


def stop_jobs(address: str, experiment: str) -> list[str]:
    """Stop the experiment's running jobs; their ids."""
    client = _client(address)
    stopped = []
    for job in experiment_jobs(address, experiment):
        if job.status in ("PENDING", "RUNNING"):
            client.stop_job(job.job_id)
            stopped.append(job.job_id)
    return stopped


def job_logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)
