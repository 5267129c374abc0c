"""deploy/kuberay/: the RayCluster and RayJob, checked offline.

RayCluster and RayJob objects against KubeRay's CRD schemas (shared/data/kuberay), plus
the strictness those schemas lack (they allow unknown fields, so a misspelt key would pass);
every pod template and any core object with kubernetes-validate in strict mode; and the
properties the deployment promises: credentials only from Secrets, token auth, a
cluster-internal dashboard, whole 8-GPU nodes, and `orch submit` on an s3:// root.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from orchestrator.planning import load_plan
from tests.plans import plan_text

# Kubernetes versions to validate against: an old one still in wide use, and the newest
# kubernetes-validate knows.
K8S_VERSIONS = ["1.29", "1.37"]
# Environment variables that carry secrets if they carry anything.
_SECRET_NAME = re.compile(r"AWS_|GOOGLE_|AZURE_|TOKEN|SECRET|PASSWORD|CREDENTIAL|_KEY", re.I)
# Kubernetes' resource quantity grammar (apimachinery's resource.Quantity); the JSON
# schemas accept any string, so "lots" would pass them.
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")


def _documents(deploy_dir: Path) -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((deploy_dir / "kuberay").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _one(deploy_dir: Path, kind: str) -> dict:
    found = [doc for _, doc in _documents(deploy_dir) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/kuberay, found {len(found)}"
    return found[0]


def _pod_templates(doc: dict) -> dict[str, dict]:
    """Every pod template in a RayCluster or RayJob, by where it sits."""
    spec = doc["spec"]
    templates = {}
    cluster = spec if doc["kind"] == "RayCluster" else spec.get("rayClusterSpec")
    if cluster:
        templates["headGroupSpec.template"] = cluster["headGroupSpec"]["template"]
        for group in cluster.get("workerGroupSpecs", []):
            templates[f"workerGroupSpecs[{group['groupName']}].template"] = group["template"]
    if "submitterPodTemplate" in spec:
        templates["submitterPodTemplate"] = spec["submitterPodTemplate"]
    return templates


def _containers(doc: dict) -> list[dict]:
    return [c for t in _pod_templates(doc).values() for c in t["spec"]["containers"]]


def _unknown_keys(value, schema: dict, path: str = "") -> list[str]:
    """Keys in `value` that `schema` does not declare. The CRD schemas leave out
    `additionalProperties: false`, so jsonschema alone accepts any misspelt field."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                found += _unknown_keys(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += _unknown_keys(item, extra, f"{path}.{key}")
            elif props is not None or extra is False:
                found.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += _unknown_keys(item, schema["items"], f"{path}[{i}]")
    return found


@pytest.fixture(scope="module")
def crd_schemas(kuberay_schemas: Path) -> dict[str, dict]:
    return {
        "RayCluster": json.loads((kuberay_schemas / "rayclusters.v1.schema.json").read_text()),
        "RayJob": json.loads((kuberay_schemas / "rayjobs.v1.schema.json").read_text()),
    }


def test_kuberay_directory_holds_a_raycluster_and_a_rayjob(deploy_dir):
    kinds = sorted(doc["kind"] for _, doc in _documents(deploy_dir))
    assert kinds == ["RayCluster", "RayJob"]
    for name, doc in _documents(deploy_dir):
        assert doc["apiVersion"] == "ray.io/v1", f"{name}: {doc['apiVersion']}"


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_manifest_matches_the_kuberay_crd_schema(deploy_dir, crd_schemas, kind):
    doc = _one(deploy_dir, kind)
    schema = crd_schemas[kind]
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
    assert _unknown_keys(doc, schema) == []


def test_unknown_key_check_catches_a_misspelt_field(deploy_dir, crd_schemas):
    """The strictness check is not vacuous: a typo the CRD schema itself would accept."""
    doc = _one(deploy_dir, "RayCluster")
    doc = json.loads(json.dumps(doc))
    doc["spec"]["headGroupSpec"]["rayStartParm"] = {}
    jsonschema.Draft7Validator(crd_schemas["RayCluster"]).validate(doc)  # accepted...
    assert _unknown_keys(doc, crd_schemas["RayCluster"]) == [".spec.headGroupSpec.rayStartParm"]


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_pod_templates_are_valid_kubernetes_objects(deploy_dir, k8s_version):
    checked = 0
    for name, doc in _documents(deploy_dir):
        for where, template in _pod_templates(doc).items():
            wrapper = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": "check"},
                "template": template,
            }
            try:
                kubernetes_validate.validate(wrapper, k8s_version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{name} {where}: {'.'.join(map(str, err.path))}: {err.message}")
            checked += 1
            for container in template["spec"]["containers"]:
                for kind in ("requests", "limits"):
                    for resource, amount in container["resources"][kind].items():
                        assert _QUANTITY.match(str(amount)), f"{where} {resource}: {amount!r}"
    assert checked == 3  # head, GPU workers, RayJob submitter


def test_head_service_and_dashboard_stay_inside_the_cluster(deploy_dir):
    head = _one(deploy_dir, "RayCluster")["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert not head.get("enableIngress", False)
    assert "headService" not in head  # no hand-made Service that could be exposed
    # 0.0.0.0 inside the pod is its own addresses; only with a ClusterIP Service is it private.
    assert head["rayStartParams"]["dashboard-host"] in ("127.0.0.1", "0.0.0.0")
    for _, doc in _documents(deploy_dir):
        for container in _containers(doc):
            assert not any("hostPort" in p for p in container.get("ports", []))
        for template in _pod_templates(doc).values():
            assert not template["spec"].get("hostNetwork", False)


def test_credentials_reach_pods_only_through_secrets(deploy_dir):
    raycluster = _one(deploy_dir, "RayCluster")
    for _, doc in _documents(deploy_dir):
        for container in _containers(doc):
            for var in container.get("env", []):
                if _SECRET_NAME.search(var["name"]):
                    assert "value" not in var, f"{container['name']}: {var['name']} is inline"
                    assert "secretKeyRef" in var["valueFrom"], var
    # Both Ray containers read the object store's credentials from the Secret.
    for container in _containers(raycluster):
        refs = [s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s]
        assert refs == ["orch-object-store"], container["name"]
    text = "\n".join(p.read_text() for p in (deploy_dir / "kuberay").glob("*.yaml"))
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # an AWS access key id


def test_ray_token_auth_is_on_with_the_token_from_a_secret(deploy_dir):
    auth = _one(deploy_dir, "RayCluster")["spec"]["authOptions"]
    assert auth == {"mode": "token", "secretName": "orch-ray-token"}


def test_gpu_workers_take_whole_8_gpu_nodes_with_shared_memory(deploy_dir):
    spec = _one(deploy_dir, "RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] == 0 < group["maxReplicas"]
    pod = group["template"]["spec"]
    (worker,) = pod["containers"]
    resources = worker["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "8"
    assert resources["requests"] == resources["limits"]  # Guaranteed: no eviction mid-run
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
    for template in _pod_templates(_one(deploy_dir, "RayCluster")).values():
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        (container,) = template["spec"]["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory" and shm["sizeLimit"]
        assert container["resources"]["limits"]["memory"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def test_head_runs_no_ranks(deploy_dir):
    params = _one(deploy_dir, "RayCluster")["spec"]["headGroupSpec"]["rayStartParams"]
    assert params["num-gpus"] == "0" and params["num-cpus"] == "0"


def test_rayjob_runs_orch_submit_on_the_raycluster(deploy_dir):
    raycluster, rayjob = _one(deploy_dir, "RayCluster"), _one(deploy_dir, "RayJob")
    spec = rayjob["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": raycluster["metadata"]["name"]}
    assert "rayClusterSpec" not in spec
    assert spec["entrypoint"] == "orch submit plans/chinchilla.yaml"
    # KubeRay pastes the entrypoint into the submitter's shell command line: any shell
    # operator would run the rest in the submitter pod instead of on the cluster.
    assert not re.search(r"[;&|<>`$()\\'\"]", spec["entrypoint"])


def test_rayjob_plan_is_mounted_where_the_entrypoint_looks(deploy_dir, root):
    raycluster, rayjob = _one(deploy_dir, "RayCluster"), _one(deploy_dir, "RayJob")
    plan_arg = rayjob["spec"]["entrypoint"].split()[-1]  # plans/chinchilla.yaml
    head_pod = raycluster["spec"]["headGroupSpec"]["template"]["spec"]
    (head,) = head_pod["containers"]
    # Ray starts the job in the directory Ray was started in: the container's workingDir.
    plan_dir = str(Path(head["workingDir"]) / Path(plan_arg).parent)
    mounts = {m["mountPath"]: m["name"] for m in head["volumeMounts"]}
    assert plan_dir in mounts, f"nothing mounted at {plan_dir}"
    volume = next(v for v in head_pod["volumes"] if v["name"] == mounts[plan_dir])
    assert volume["configMap"]["name"] == "orch-plans"
    assert (root / plan_arg).is_file()  # the ConfigMap is made from the repository's plans/


def test_rayjob_experiment_root_is_on_object_storage(deploy_dir, root, tmp_path):
    rayjob = _one(deploy_dir, "RayJob")
    plan_arg = rayjob["spec"]["entrypoint"].split()[-1]  # plans/chinchilla.yaml
    (tmp_path / "plan.yaml").write_text(plan_text(Path(plan_arg).name))  # corpus stood in for
    plan = load_plan(tmp_path / "plan.yaml")
    assert plan.store.startswith("s3://")
    assert rayjob["spec"]["metadata"]["orch_experiment"] == plan.experiment_uri
    assert rayjob["spec"]["metadata"]["orch_plan"] == plan.name
    # The workers read the corpus where the plan says it is, and so does the driver on the
    # head, which hashes it when it loads the plan.
    corpus = yaml.safe_load((root / plan_arg).read_text())["data"]["root"]
    raycluster = _one(deploy_dir, "RayCluster")["spec"]
    (group,) = raycluster["workerGroupSpecs"]
    (worker,) = group["template"]["spec"]["containers"]
    (head,) = raycluster["headGroupSpec"]["template"]["spec"]["containers"]
    for container in (worker, head):
        assert corpus in [m["mountPath"] for m in container["volumeMounts"]]


def test_images_and_ray_version_match_the_project(deploy_dir, pinned, project_version):
    raycluster = _one(deploy_dir, "RayCluster")
    assert raycluster["spec"]["rayVersion"] == pinned["ray"]
    images = {c["image"] for _, doc in _documents(deploy_dir) for c in _containers(doc)}
    assert len(images) == 1, images
    (image,) = images
    assert image.endswith(f"/scaling-orch:{project_version}-gpu"), image
