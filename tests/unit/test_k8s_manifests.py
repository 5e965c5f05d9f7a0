"""The Kubernetes manifests keep the promises of deploy/k8s: every process
has probes, resource requests and limits, and runs non-root, read-only,
with no capabilities."""
from pathlib import Path

import pytest
import yaml

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"


def documents():
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            if doc:
                yield name, doc


def workloads():
    for name, doc in documents():
        if doc["kind"] in ("Deployment", "Job"):
            yield pytest.param(doc, id=f"{name}:{doc['metadata']['name']}")


@pytest.mark.parametrize("doc", list(workloads()))
def test_every_workload_is_locked_down_and_sized(doc):
    pod = doc["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        if doc["kind"] == "Deployment":
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_every_service_has_its_deployment_service_account_and_the_commands_exist():
    docs = [doc for _, doc in documents()]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    for service in ["gateway", "contacts", "campaigns", "sender", "tracking", "privacy"]:
        assert service in deployments and service in accounts
    repo = BASE.parents[2]
    for deployment in deployments.values():
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        module = command[-1].split(":")[0] if command[0] == "gunicorn" else command[-1]
        assert (repo / (module.replace(".", "/") + ".py")).is_file(), module


@pytest.mark.parametrize("doc", list(workloads()))
def test_processes_without_gunicorn_keep_their_metrics_in_memory(doc):
    """The image sets PROMETHEUS_MULTIPROC_DIR for gunicorn (whose on_starting
    creates it). Any other process must blank it: prometheus_client opens its
    files there when a metric is made, and the sender crash-looped on import."""
    for container in doc["spec"]["template"]["spec"]["containers"]:
        if container["command"][0] == "gunicorn":
            continue
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("PROMETHEUS_MULTIPROC_DIR") == "", container["name"]


def test_every_deployment_of_several_replicas_has_a_disruption_budget():
    """Without one, a node drain may evict every replica of a service at once."""
    docs = [doc for _, doc in documents()]
    budgets = {tuple(sorted(d["spec"]["selector"]["matchLabels"].items()))
               for d in docs if d["kind"] == "PodDisruptionBudget"
               and d["spec"].get("minAvailable", 0) >= 1}
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        if deployment["spec"].get("replicas", 1) > 1:
            labels = tuple(sorted(deployment["spec"]["selector"]["matchLabels"].items()))
            assert labels in budgets, deployment["metadata"]["name"]
