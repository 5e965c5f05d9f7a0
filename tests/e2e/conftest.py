"""End-to-end fixtures: the real stack of THIS checkout, through the gateway.

`make test` starts the stack; these fixtures refuse to test a stack that
some other checkout started on the same ports (its stack id differs)."""
from __future__ import annotations

import pytest
import requests


class Api(requests.Session):
    """A session bound to a base URL: api.get('/api/v1/lists')."""

    def __init__(self, base_url: str, token: str | None = None):
        super().__init__()
        self.base_url = base_url.rstrip("/")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", 30)
        return super().request(method, self.base_url + url, *args, **kwargs)


@pytest.fixture(scope="session")
def gateway_url(stack_env) -> str:
    url = stack_env["SANDESH_GATEWAY_URL"]
    try:
        health = requests.get(url + "/healthz", timeout=5).json()
    except requests.RequestException as exc:
        pytest.fail(f"the gateway at {url} does not answer ({exc}): run `make run`")
    if health.get("stack_id") != stack_env["SANDESH_STACK_ID"]:
        pytest.fail(f"the gateway at {url} belongs to another stack (stack id "
                    f"{health.get('stack_id')!r}, this checkout's is "
                    f"{stack_env['SANDESH_STACK_ID']!r}): stop it or use other ports")
    return url


@pytest.fixture(scope="session")
def operator(gateway_url, stack_env) -> Api:
    return Api(gateway_url, stack_env["SANDESH_OPERATOR_TOKEN"])


@pytest.fixture
def new_account(operator, gateway_url):
    """Create a fresh account: returns a function giving (account, Api with its key)."""
    def create(name: str = "Test account", **fields):
        response = operator.post("/api/v1/accounts",
                                 json={"name": name, "postal_address": "1 Test Road, Pune", **fields})
        assert response.status_code == 201, response.text
        body = response.json()
        return body["account"], Api(gateway_url, body["api_key"]["key"])
    return create


@pytest.fixture
def api(new_account) -> Api:
    """An Api for a fresh account (isolation: nothing of other tests is visible)."""
    return new_account()[1]
