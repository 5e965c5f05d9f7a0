"""The Kubernetes manifests keep the promises of deploy/k8s: every process
has probes, resource requests and limits, and runs non-root, read-only,
with no capabilities; the network policies let in and out only what the
architecture says (README "Network policies")."""
import re
import shutil
import subprocess
from collections import defaultdict

import pytest
import yaml

from tests.k8s_policies import (BASE, LOCAL, MONGODB_PORT, PUBLIC, REPO, RENDERINGS, Rendering,
                                http_callers, in_namespace, kafka_ports, policy_types, render,
                                selects, smtp_ports, without_images)


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


# ---------------------------------------------------------------------------
# Network policies (base/network-policies.yaml, README "Network policies"),
# checked on the rendered base and on each overlay (tests/k8s_policies.py).


@pytest.mark.parametrize("name", RENDERINGS)
def test_the_renderer_agrees_with_kubectl_kustomize(name):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    directory = BASE.parent / name
    real = subprocess.run([kubectl, "kustomize", str(directory)], check=True,
                          capture_output=True, text=True, timeout=60).stdout

    def key(doc):
        return doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace")

    theirs = {key(doc): doc for doc in yaml.safe_load_all(real) if doc}
    ours = {key(doc): doc for doc in render(directory)}
    assert set(ours) == set(theirs)
    for k, doc in ours.items():
        if "spec" in doc:
            assert without_images(doc["spec"]) == without_images(theirs[k]["spec"]), k


@pytest.fixture(scope="module", params=RENDERINGS)
def rendering(request) -> Rendering:
    return Rendering(request.param)


def test_network_policies_are_well_formed_and_in_the_pods_namespace(rendering):
    assert rendering.policies, "no NetworkPolicy"
    assert {p.namespace for p in rendering.pods} == {rendering.namespace}
    for policy in rendering.policies:
        name, spec = policy["metadata"]["name"], policy["spec"]
        assert policy["apiVersion"] == "networking.k8s.io/v1", name
        assert policy["metadata"].get("namespace") == rendering.namespace, \
            f"{name} would land in kubectl's current namespace, not in {rendering.namespace}"
        assert set(spec) <= {"podSelector", "policyTypes", "ingress", "egress"}, name
        assert spec.get("policyTypes") and set(spec["policyTypes"]) <= {"Ingress", "Egress"}, name
        for direction, peers in (("ingress", "from"), ("egress", "to")):
            assert direction not in spec or direction.capitalize() in spec["policyTypes"], name
            for rule in spec.get(direction) or []:
                assert set(rule) <= {peers, "ports"}, name
                for port in rule.get("ports") or []:
                    assert port.get("protocol") in ("TCP", "UDP") and "port" in port, name
        assert rendering.selected(policy), f"{name} selects no pod"


def test_every_pod_of_the_namespace_is_denied_by_default_both_ways(rendering):
    """An empty podSelector: pods these manifests do not know (a debug pod, a
    database put here) are closed too."""
    assert any(p["spec"]["podSelector"] == {} and set(policy_types(p)) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress")
               for p in rendering.policies), "no default deny for every pod of the namespace"
    for pod in rendering.pods:
        assert rendering.selecting(pod, "Ingress"), f"{pod.workload} accepts anyone"
        assert rendering.selecting(pod, "Egress"), f"{pod.workload} may connect anywhere"


def test_no_ingress_from_anyone_from_every_namespace_or_on_every_port(rendering):
    own = {"kubernetes.io/metadata.name": rendering.namespace}
    for policy in rendering.policies:
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress") or []:
            assert rule.get("from"), f"{name}: a rule without `from` admits anyone"
            assert rule.get("ports"), f"{name}: a rule without `ports` opens every port"
            for peer in rule["from"]:
                assert "ipBlock" not in peer, name
                if "namespaceSelector" in peer:
                    selector = peer["namespaceSelector"]
                    assert selector.get("matchLabels") or selector.get("matchExpressions"), \
                        f"{name}: every namespace"
                    assert not selects(selector, own), f"{name}: {rendering.namespace} itself"


def test_services_accept_pods_of_the_namespace_only_from_their_callers_in_the_code(rendering):
    """contacts, campaigns, tracking, privacy: from the gateway only (the one
    synchronous caller, SANDESH_*_URL in services/gateway/settings.py), on the
    port their Service sends to; no other pod of the namespace reaches any pod."""
    callers = http_callers(rendering)
    assert callers, "no service-to-service URL found: did config.yaml's SANDESH_*_URL go?"
    assert all(components == {"gateway"} for components in callers.values()), \
        f"HTTP callers {callers}: ARCHITECTURE.md names the gateway as the only one"
    for pod in rendering.pods:
        expected = defaultdict(set)
        for service, components in callers.items():
            if pod in rendering.service_pods(service):
                for source in rendering.pods:
                    if source.component in components:
                        expected[("pod", source.workload)].add(rendering.service_port(service, pod))
        actual = {k: v for k, v in rendering.ingress(pod).items() if k[0] in ("pod", "any")}
        assert actual == dict(expected), pod.workload


def test_callers_may_connect_to_what_they_call_and_nobody_else_to_a_pod_of_the_namespace(rendering):
    callers = http_callers(rendering)
    for service, components in callers.items():
        for source in (p for p in rendering.pods if p.component in components):
            for destination in rendering.service_pods(service):
                port = rendering.service_port(service, destination)
                assert port is not None, (service, destination.workload)
                assert rendering.egress_allows(source, destination, port), \
                    f"{source.workload} cannot reach {destination.workload}:{port}"
    if rendering.name == LOCAL:
        return  # egress open; the ingress rules above still hold
    called = {(p.workload, rendering.service_port(s, p))
              for s in callers for p in rendering.service_pods(s)}
    calling = {(p.workload, d) for s, c in callers.items()
               for p in rendering.pods if p.component in c for d in rendering.service_pods(s)}
    for source in rendering.pods:
        for destination in rendering.pods:
            for _, number, _ in destination.ports:
                if rendering.egress_allows(source, destination, number):
                    assert (source.workload, destination) in calling \
                        and (destination.workload, number) in called, \
                        f"{source.workload} may connect to {destination.workload}:{number}"


def test_only_the_public_services_accept_the_ingress_controller(rendering):
    (controller,) = rendering.named_sources("allow-ingress-controller-to-public")
    for pod in rendering.pods:
        allowed = rendering.ingress(pod).get(("namespace", controller))
        if pod.workload in PUBLIC:
            assert allowed == {rendering.service_port(pod.workload, pod)}, pod.workload
        else:
            assert allowed is None, f"{pod.workload} is reachable from the ingress controller"


def test_metrics_are_scraped_from_the_monitoring_namespace_on_the_metrics_port_only(rendering):
    (monitoring,) = rendering.named_sources("allow-monitoring-scrape")
    public = {("namespace", s) for s in rendering.named_sources("allow-ingress-controller-to-public")}
    for pod in rendering.pods:
        allowed = {k: v for k, v in rendering.ingress(pod).items() if k[0] in ("namespace", "ipBlock")}
        if "prometheus.io/port" not in pod.annotations:
            assert not allowed, pod.workload
            continue
        port = int(pod.annotations["prometheus.io/port"])
        assert pod.port(port) == port, f"{pod.workload}: nothing listens on the scraped port"
        assert allowed.pop(("namespace", monitoring)) == {port}, pod.workload
        assert set(allowed) <= public, f"{pod.workload}: {allowed}"


def test_policy_ports_are_the_containers_ports(rendering):
    """A name or number that the pod does not have opens nothing (or, after a
    port change, something else)."""
    for policy in rendering.policies:
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress") or []:
            for port in rule["ports"]:
                for pod in rendering.selected(policy):
                    assert pod.port(port["port"], port["protocol"]) is not None, (name, pod.workload)
        for rule in policy["spec"].get("egress") or []:
            for peer in (p for p in rule.get("to") or [] if in_namespace(p)):
                destinations = [p for p in rendering.pods if p.namespace == rendering.namespace
                                and selects(peer["podSelector"], p.labels)]
                assert destinations, f"{name}: its `to` selects no pod"
                for port in rule.get("ports") or []:
                    for pod in destinations:
                        assert pod.port(port["port"], port["protocol"]) is not None, (name, pod.workload)


def test_the_gateway_never_uses_kafka():
    """Why allow-kafka-egress leaves the gateway out: it neither produces nor
    consumes, and its readiness does not ask the broker."""
    code = "".join(p.read_text() for p in (REPO / "services" / "gateway").rglob("*.py"))
    assert "readiness(kafka=False)" in code
    assert not re.search(r"shared\.kafka|\.producer\(|^import kafka|^from kafka", code, re.M)


def test_egress_outside_the_namespace_is_dns_kafka_mongodb_and_smtp_only(rendering):
    """Every pod resolves names; every process but the gateway reaches Kafka
    (config.yaml's bootstrap port), every pod given the MongoDB URI (in
    sandesh-secrets) reaches MongoDB, and only the sender reaches SMTP relays
    (its default port, config.yaml's relays, 25/465/587). Locally (kind, k3d)
    egress is open: see overlays/local-kind/allow-all-egress.yaml."""
    for pod in rendering.pods:
        outside = rendering.egress_outside(pod)
        if rendering.name == LOCAL:
            assert ("*", "*") in outside, pod.workload
            continue
        expected = {("UDP", 53), ("TCP", 53)}
        if pod.workload != "gateway":
            expected |= {("TCP", port) for port in kafka_ports(rendering)}
        if "sandesh-secrets" in pod.secrets:
            expected.add(("TCP", MONGODB_PORT))
        if pod.labels.get("app.kubernetes.io/name") == "sender":
            expected |= {("TCP", port) for port in smtp_ports(rendering)}
        assert outside == expected, pod.workload


def test_the_readme_names_each_policy_and_what_to_adjust():
    readme = (BASE.parent / "README.md").read_text()
    for rendering in map(Rendering, RENDERINGS):
        for policy in rendering.policies:
            assert policy["metadata"]["name"] in readme, policy["metadata"]["name"]
            for rule in policy["spec"].get("ingress") or []:
                for peer in rule["from"]:
                    for value in (peer.get("namespaceSelector", {}).get("matchLabels") or {}).values():
                        assert f"`{value}`" in readme, value


def test_every_job_deletes_itself_once_finished_so_the_next_release_can_apply_it():
    """A Job's pod template is immutable: one left behind makes the next
    `kubectl apply` with a new image tag fail."""
    jobs = [doc for _, doc in documents() if doc["kind"] == "Job"]
    assert jobs
    for job in jobs:
        assert 0 < job["spec"].get("ttlSecondsAfterFinished", 0) <= 3600, job["metadata"]["name"]


def test_the_sender_reads_its_dkim_keys_from_a_secret_mounted_where_it_looks_for_them():
    """The default key directory is on the read-only root filesystem: the
    sender could not make its key there, and crash-looped; and keys made by
    each pod would differ from the one published in DNS."""
    [sender] = [doc for _, doc in documents()
                if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "sender"]
    pod = sender["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    key_dir = env["SANDESH_DKIM_KEY_DIR"]
    assert mounts[key_dir].get("readOnly") is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mounts[key_dir]["name"]]
    assert volume["secret"]["secretName"] == "sandesh-dkim"
    assert volume["secret"]["defaultMode"] & 0o040   # readable by the pod's group (fsGroup)
    [config] = [doc for _, doc in documents() if doc["kind"] == "ConfigMap"]
    assert "SANDESH_DEFAULT_SENDING_DOMAIN" in config["data"]


def _deployment(name: str, docs=None) -> dict:
    [found] = [doc for _, doc in (docs or documents())
               if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name]
    return found


def test_contacts_web_and_worker_pods_share_the_import_files():
    """Each had its own /tmp: the worker never found an upload (every import
    failed "the uploaded file is missing"), nor the web pods its rejected rows."""
    claims = set()
    for name in ("contacts", "contacts-worker"):
        pod = _deployment(name)["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {item["name"]: item.get("value") for item in container.get("env", [])}
        [mount] = [m for m in container["volumeMounts"]
                   if m["mountPath"] == env["SANDESH_IMPORT_DIR"]]
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        claims.add(volume["persistentVolumeClaim"]["claimName"])
    [claim] = claims
    [pvc] = [doc for _, doc in documents()
             if doc["kind"] == "PersistentVolumeClaim" and doc["metadata"]["name"] == claim]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]   # pods on several nodes


def _production_settings():
    import importlib

    from shared.config import COMMON, _MISSING
    settings = list(COMMON)
    modules = [f"services.{path.parent.name}.settings"
               for path in sorted((REPO / "services").glob("*/settings.py"))]
    modules += ["services.campaigns.worker", "services.sender.retention",
                "services.tracking.retention"]   # their SETTINGS live beside their use
    for module in modules:
        settings += importlib.import_module(module).SETTINGS
    return [s for s in settings if s.default is _MISSING]


def test_every_setting_production_must_name_is_in_the_config_map_or_the_secrets():
    """A setting without a production default stops its process at start-up."""
    [config] = [doc for _, doc in documents() if doc["kind"] == "ConfigMap"]
    readme = (BASE.parent / "README.md").read_text()
    for setting in _production_settings():
        assert setting.name in config["data"] or f"--from-literal={setting.name}=" in readme, \
            setting.name


def test_the_secrets_command_holds_what_mail_in_and_out_needs():
    """Without SANDESH_BOUNCE_WEBHOOK_TOKEN (it defaults to empty) every
    bounce, complaint and mailed unsubscribe was refused; without the relays'
    AUTH, a relay that asks for it takes nothing."""
    readme = (BASE.parent / "README.md").read_text()
    for name in ("SANDESH_BOUNCE_WEBHOOK_TOKEN", "SANDESH_SMTP_USERNAME", "SANDESH_SMTP_PASSWORD"):
        assert f"--from-literal={name}=" in readme, name


def test_the_sender_is_given_relays_it_would_start_with_in_production():
    """Unset, they were the pod's own loopback: no mail ever left."""
    from services.sender.settings import SETTINGS, check_smtp_relays
    from shared.config import load_common
    [config] = [doc for _, doc in documents() if doc["kind"] == "ConfigMap"]
    env = {**config["data"], "SANDESH_TRACKING_KEYS": "k1:" + "A" * 43 + "=",
           "SANDESH_PII_SALT": "s", "SANDESH_ENV": "production"}
    check_smtp_relays(load_common(SETTINGS, env))


def test_the_sender_count_is_its_autoscalers_alone():
    """With replicas written too, every apply reset a fleet the HPA had grown."""
    assert "replicas" not in _deployment("sender")["spec"]
    [hpa] = [doc for _, doc in documents() if doc["kind"] == "HorizontalPodAutoscaler"
             and doc["spec"]["scaleTargetRef"]["name"] == "sender"]
    assert hpa["spec"]["minReplicas"] >= 2


def test_web_pods_keep_serving_until_their_endpoint_is_gone():
    for _, doc in documents():
        if doc["kind"] != "Deployment":
            continue
        [container] = doc["spec"]["template"]["spec"]["containers"]
        if container["command"][0] == "gunicorn":
            assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep", \
                doc["metadata"]["name"]
