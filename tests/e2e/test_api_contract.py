"""The public API against its own OpenAPI document (GET /api/v1/openapi.json).

Schemathesis generates the requests: for every operation, bodies, parameters
and ids that the document allows and that it does not, then sequences that
use what earlier answers returned. Every answer must be a status the
document lists, in the shape it gives (the error envelope included), with
the headers it names, and never a 5xx: "a bad request never returns 500"
(the architecture brief). A request the document calls invalid must be
refused (schemathesis.toml lists the refusals). The generation is
deterministic, so a failure here is the same failure on every run.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Api
from tests.integration.sender.harness import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "missing_required_header",
    "allow_header_conformance",
    "unsupported_method",
    "ignored_auth",
    "negative_data_rejection",
    # (not ensure_resource_availability: a campaign's stats are a 404 until
    # it is launched, by design, and the run creates campaigns it never sends)
    "use_after_free",
])
# A key that revokes itself, or an account that deletes itself, leaves the
# rest of the run to 401s; creating accounts takes the operator token; the
# document itself takes nothing to vary.
LEFT_OUT = r"^/api/v1/(account|accounts|keys/\{key_id\}|openapi\.json)$"


@pytest.fixture
def gateway_without_rate_limit(stack_env, tmp_path):
    """A gateway of its own, as the stack runs it (gunicorn) and in front of
    the stack's services, whose per-key rate limit (1,200 a minute) a run's
    few thousand requests would otherwise spend in its first seconds."""
    port = free_port()
    env = {**os.environ, **stack_env, "SANDESH_RATE_LIMIT_PER_MINUTE": "100000000",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    process = subprocess.Popen(["bash", str(REPO / "devstack/run_web.sh"), "gateway", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url, process), 30, "the test's gateway")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str, process: subprocess.Popen) -> bool:
    assert process.poll() is None, "the test's gateway exited"
    try:
        return requests.get(url + "/healthz", timeout=2).ok
    except requests.ConnectionError:
        return False


def test_every_operation_answers_as_the_openapi_document_says(
        gateway_without_rate_limit, stack_env, tmp_path):
    url = gateway_without_rate_limit
    operator = Api(url, stack_env["SANDESH_OPERATOR_TOKEN"])
    created = operator.post("/api/v1/accounts", json={"name": "Contract test",
                                                      "postal_address": "1 Test Road, Pune"})
    assert created.status_code == 201, created.text
    key = created.json()["api_key"]["key"]
    account = Api(url, key)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
             "run", f"{url}/api/v1/openapi.json",
             "--url", url, "--header", f"Authorization: Bearer {key}",
             "--checks", CHECKS, "--exclude-path-regex", LEFT_OUT,
             "--phases", "coverage,fuzzing,stateful", "--max-examples", "30",
             "--generation-deterministic", "--workers", "2", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
        let_in = _successes(url)
    finally:
        account.delete("/api/v1/account")
    report = run.stdout[-20_000:] + run.stderr[-5_000:]
    assert run.returncode == 0, report
    assert f"Tested: {_operations_to_test(url)}\n" in run.stdout, report
    assert let_in > 0, "no request of the run was let in: " + report


def _successes(url: str) -> float:
    """2xx answers the gateway gave under /api/v1, the document aside (its
    own metrics). Not what the account holds after: the run may delete all
    it made."""
    metrics = requests.get(url + "/metrics", timeout=30).text
    return sum(sample.value for family in text_string_to_metric_families(metrics)
               for sample in family.samples
               if sample.name == "sandesh_http_requests_total"
               and sample.labels["status"].startswith("2")
               and sample.labels["route"].startswith("/api/v1/")
               and sample.labels["route"] != "/api/v1/openapi.json")


def _operations_to_test(url: str) -> int:
    paths = requests.get(f"{url}/api/v1/openapi.json", timeout=30).json()["paths"]
    return sum(1 for path, operations in paths.items() if not re.match(LEFT_OUT, path)
               for method in operations if method != "parameters")
