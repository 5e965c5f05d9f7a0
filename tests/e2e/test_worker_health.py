"""Every Kafka worker of the local stack serves /healthz, /readyz and
/metrics on its own port, as its Kubernetes probes and scrape expect."""
import pytest
import requests

WORKERS = ["contacts", "campaigns", "tracking", "privacy"]


@pytest.mark.parametrize("service", WORKERS)
def test_each_worker_serves_health_readiness_and_metrics(stack_env, service):
    base = f"http://127.0.0.1:{stack_env[f'SANDESH_{service.upper()}_WORKER_PORT']}"
    health = requests.get(base + "/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["service"] == service
    # the liveness probe watches the worker's Kafka calls (shared/heartbeat.CallWatch)
    assert health.json()["checks"]["consumer_loop"] == "ok"
    if service == "privacy":
        assert health.json()["checks"]["helper_loops"] == "ok"
    ready = requests.get(base + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    metrics = requests.get(base + "/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "process_cpu_seconds_total" in metrics.text
