"""Kubernetes manifests as tests/unit/test_k8s_manifests.py sees them.

A renderer for the kustomize features deploy/k8s uses (it refuses any other;
the tests compare it with `kubectl kustomize` where kubectl is installed), and
an evaluator of NetworkPolicies as Kubernetes applies them: a pod is isolated
in a direction by any policy that selects it for that direction, and may do
the union of their rules."""
import copy
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "deploy" / "k8s" / "base"

RENDERINGS = ["base", "overlays/local-kind", "overlays/production"]
LOCAL = "overlays/local-kind"  # egress open on purpose: overlays/local-kind/allow-all-egress.yaml
# ARCHITECTURE.md: the dashboard calls the gateway; recipients' mail clients
# (and the bounce webhook) reach tracking. Nothing else is public.
PUBLIC = {"gateway", "tracking"}
MONGODB_PORT = 27017  # the URI (in sandesh-secrets) names no port: the driver's default
SMTP_STANDARD_PORTS = {25, 465, 587}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}


def _json_patch(doc, ops):
    for op in ops:
        *parents, last = [part.replace("~1", "/").replace("~0", "~")
                          for part in op["path"].lstrip("/").split("/")]
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            last = len(node) if last == "-" else int(last)
        if op["op"] == "add" and isinstance(node, list):
            node.insert(last, op["value"])
        elif op["op"] in ("add", "replace"):
            assert op["op"] == "add" or isinstance(node, list) or last in node, op
            node[last] = op["value"]
        elif op["op"] == "remove":
            del node[last]
        else:
            pytest.fail(f"teach the tests' renderer the patch op {op['op']!r}")


def render(directory: Path) -> list[dict]:
    """What `kubectl kustomize <directory>` gives, as far as policies care
    (kinds, names, namespaces, pod labels, ports); images are left alone."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: teach the tests' renderer {sorted(unknown)}"
    docs = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        docs += render(path) if path.is_dir() else \
            [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for entry in kustomization.get("labels", []):
        # Resource metadata only: pod labels, which policies select, stay as written.
        assert not entry.get("includeSelectors") and not entry.get("includeTemplates"), entry
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        assert set(target) <= {"kind", "name"} and set(patch) == {"target", "patch"}, \
            f"teach the tests' renderer this patch: {patch}"
        for doc in docs:
            if doc["kind"] == target.get("kind", doc["kind"]) \
                    and doc["metadata"]["name"] == target.get("name", doc["metadata"]["name"]):
                _json_patch(doc, yaml.safe_load(patch["patch"]))
    return docs


def without_images(spec):
    spec = copy.deepcopy(spec)
    for container in spec.get("template", {}).get("spec", {}).get("containers", []):
        container.pop("image", None)
    return spec


@dataclass(eq=False)
class Pod:
    workload: str
    namespace: str
    labels: dict
    ports: list            # (name, containerPort, protocol) of every container
    annotations: dict
    secrets: set = field(default_factory=set)   # Secrets its containers read (envFrom)

    @property
    def component(self):
        return self.labels.get("app.kubernetes.io/component")

    def port(self, port, protocol="TCP"):
        """The container port a policy's port (number or name) means on this pod."""
        for name, number, proto in self.ports:
            if proto == protocol and port in (name, number):
                return number
        return None


def selects(selector, labels) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, values = expression["key"], expression.get("values") or []
        matched = {"In": key in labels and labels[key] in values,
                   "NotIn": key not in labels or labels[key] not in values,
                   "Exists": key in labels,
                   "DoesNotExist": key not in labels}[expression["operator"]]
        if not matched:
            return False
    return True


def policy_types(policy) -> list:
    spec = policy["spec"]
    return spec.get("policyTypes") or ["Ingress"] + (["Egress"] if "egress" in spec else [])


def in_namespace(peer) -> bool:
    """A peer that names pods of the policy's own namespace (and nothing else)."""
    return set(peer) == {"podSelector"}


def selector_key(peer) -> str:
    return yaml.safe_dump({k: peer.get(k) for k in ("namespaceSelector", "podSelector")},
                          sort_keys=True)


class Rendering:
    def __init__(self, name: str):
        self.name = name
        self.docs = render(BASE.parent / name)
        self.namespace = next(d["metadata"]["name"] for d in self.docs if d["kind"] == "Namespace")
        self.policies = [d for d in self.docs if d["kind"] == "NetworkPolicy"]
        self.services = {d["metadata"]["name"]: d for d in self.docs if d["kind"] == "Service"}
        self.config = next(d["data"] for d in self.docs if d["kind"] == "ConfigMap"
                           and d["metadata"]["name"] == "sandesh-config")
        self.pods = []
        for doc in (d for d in self.docs if d["kind"] in ("Deployment", "Job")):
            name, template = doc["metadata"]["name"], doc["spec"]["template"]
            labels = dict(template.get("metadata", {}).get("labels", {}))
            if doc["kind"] == "Job":  # what the Job controller adds to its pods
                labels.update({"job-name": name, "batch.kubernetes.io/job-name": name})
            containers = template["spec"]["containers"]
            self.pods.append(Pod(
                workload=name, namespace=doc["metadata"]["namespace"], labels=labels,
                ports=[(p.get("name"), p["containerPort"], p.get("protocol", "TCP"))
                       for c in containers for p in c.get("ports", [])],
                annotations=template.get("metadata", {}).get("annotations", {}),
                secrets={e["secretRef"]["name"] for c in containers
                         for e in c.get("envFrom", []) if "secretRef" in e}))

    def selected(self, policy) -> list:
        return [p for p in self.pods if p.namespace == policy["metadata"].get("namespace")
                and selects(policy["spec"]["podSelector"], p.labels)]

    def selecting(self, pod: Pod, direction: str) -> list:
        return [p for p in self.policies
                if direction in policy_types(p) and pod in self.selected(p)]

    def ingress(self, pod: Pod) -> dict:
        """Who may connect to the pod, on which of its ports: {source: {port}},
        a source being ("pod", workload), ("namespace", selector), ("ipBlock",
        cidr) or ("any", ""); a port that the pod does not have is None."""
        allowed = defaultdict(set)
        for policy in self.selecting(pod, "Ingress"):
            for rule in policy["spec"].get("ingress") or []:
                ports = {pod.port(p["port"], p.get("protocol", "TCP")) if "port" in p else "all"
                         for p in rule.get("ports") or [{}]}
                for source in self._sources(rule.get("from"), pod.namespace):
                    allowed[source] |= ports
        return dict(allowed)

    def _sources(self, peers, namespace):
        if not peers:
            yield "any", ""
        for peer in peers or []:
            if "ipBlock" in peer:
                yield "ipBlock", peer["ipBlock"]["cidr"]
            elif not in_namespace(peer):
                yield "namespace", selector_key(peer)
            else:
                for other in self.pods:
                    if other.namespace == namespace and selects(peer["podSelector"], other.labels):
                        yield "pod", other.workload

    def egress_outside(self, pod: Pod) -> set:
        """(protocol, port) the pod may open to something that is not a pod of
        the namespace (Kafka, MongoDB, DNS, relays); ("*", "*"): anything."""
        allowed = set()
        for policy in self.selecting(pod, "Egress"):
            for rule in policy["spec"].get("egress") or []:
                if rule.get("to") and all(in_namespace(peer) for peer in rule["to"]):
                    continue
                for port in rule.get("ports") or [{"protocol": "*", "port": "*"}]:
                    allowed.add((port.get("protocol", "TCP"), port.get("port", "*")))
        return allowed

    def egress_allows(self, pod: Pod, destination: Pod, port: int) -> bool:
        """May `pod` open a TCP connection to `destination`'s container port?"""
        policies = self.selecting(pod, "Egress")
        for rule in (r for p in policies for r in p["spec"].get("egress") or []):
            peers = rule.get("to")
            reaches = not peers or any(self._names(peer, pod, destination) for peer in peers)
            opens = not rule.get("ports") or any(
                p.get("protocol", "TCP") == "TCP"
                and ("port" not in p or destination.port(p["port"]) == port)
                for p in rule["ports"])
            if reaches and opens:
                return True
        return not policies

    @staticmethod
    def _names(peer, pod: Pod, destination: Pod) -> bool:
        """Does an egress peer of `pod`'s policy take in `destination`? (An
        ipBlock is taken as outside: pod addresses are not known here.)"""
        if "ipBlock" in peer:
            return False
        if "namespaceSelector" in peer:
            namespace = {"kubernetes.io/metadata.name": destination.namespace}
            if not selects(peer["namespaceSelector"], namespace):
                return False
        elif destination.namespace != pod.namespace:
            return False
        return selects(peer.get("podSelector") or {}, destination.labels)

    def service_pods(self, service: str) -> list:
        selector = {"matchLabels": self.services[service]["spec"]["selector"]}
        return [p for p in self.pods if selects(selector, p.labels)]

    def service_port(self, service: str, pod: Pod) -> int:
        """The container port a connection to the Service arrives on."""
        (port,) = self.services[service]["spec"]["ports"]
        return pod.port(port.get("targetPort", port["port"]), port.get("protocol", "TCP"))

    def named_sources(self, policy_name: str) -> set:
        (policy,) = [p for p in self.policies if p["metadata"]["name"] == policy_name]
        return {selector_key(peer) for rule in policy["spec"]["ingress"] for peer in rule["from"]}


def http_callers(rendering: Rendering) -> dict:
    """Service -> the components whose code calls its HTTP API: a SANDESH_*_URL
    read in services/<component>/ (in shared/: by every component) whose value
    in the ConfigMap names one of our Services."""
    components = {p.component for p in rendering.pods} - {None}
    callers = defaultdict(set)
    for source in [*(REPO / "services").glob("*/**/*.py"), *(REPO / "shared").rglob("*.py")]:
        parts = source.relative_to(REPO).parts
        if "tests" in parts:
            continue
        caller = {parts[1]} if parts[0] == "services" else components
        for variable in set(re.findall(r"[\"'](SANDESH_\w+_URL)[\"']", source.read_text())):
            host = urlsplit(rendering.config.get(variable, "")).hostname
            if host in rendering.services:
                callers[host] |= caller
    return dict(callers)


def kafka_ports(rendering: Rendering) -> set:
    return {int(address.rsplit(":", 1)[1])
            for address in rendering.config["SANDESH_KAFKA_BOOTSTRAP"].split(",")}


def smtp_ports(rendering: Rendering) -> set:
    from services.sender.settings import SETTINGS
    default = next(s.default for s in SETTINGS if s.name == "SANDESH_SMTP_PORT")
    ports = SMTP_STANDARD_PORTS | {int(rendering.config.get("SANDESH_SMTP_PORT", default))}
    for relay in filter(None, rendering.config.get("SANDESH_SMTP_RELAYS", "").split(",")):
        ports.add(int(relay.strip().split(":")[1]))
    return ports
