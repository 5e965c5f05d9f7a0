"""Calls from the gateway to the services: pooled connections, timeouts, and
the signed identity. An upstream that is down or slow becomes a JSON 502 or
504, never a hang."""
from __future__ import annotations

import requests
from flask import Response, g, request
from requests.adapters import HTTPAdapter

from shared.http.app import request_target
from shared.http.blueprint import MAX_JSON_BYTES, json_too_large
from shared.http.errors import ApiError
from shared.http.internal_auth import Identity, canonical_target, signed_headers

FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "if-none-match")
# Allow: a service's 405 says which methods it takes (it was dropped here).
FORWARDED_RESPONSE_HEADERS = ("content-type", "content-disposition", "location", "retry-after",
                              "cache-control", "etag", "x-total-count", "allow")


class _SizedStream:
    """The incoming body, streamed on without buffering. Its length lets
    requests send Content-Length itself (a generator would be sent chunked)."""

    def __init__(self, stream, length: int):
        self.stream = stream
        self.length = length

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)


def _request_body():
    """A file upload (multipart form data) streamed on, unread; any other
    body read whole (it is JSON, capped as the services cap it), so that its
    digest can be signed."""
    if request.mimetype == "multipart/form-data":
        if request.content_length:
            return _SizedStream(request.stream, request.content_length)
        if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return iter(lambda: request.stream.read(64 * 1024), b"")
        return None
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise json_too_large()
    request.max_content_length = MAX_JSON_BYTES   # a chunked body is cut there (413)
    return request.get_data()


def _signable(data) -> bytes | None:
    """The bytes a call sends, or None for a stream (signed as unsigned)."""
    if data is None:
        return b""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes):
        return data
    return None


OPENAPI_TIMEOUT = (1.0, 2.0)  # connect, read: asked by anyone, without a key


def _is_json(response: requests.Response) -> bool:
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


class Upstreams:
    def __init__(self, urls: dict[str, str], secret: str, connect_timeout: float,
                 read_timeout: float):
        self.urls = urls
        self.secret = secret
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=32, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def _call(self, service: str, method: str, target: str, identity: Identity,
              headers: dict[str, str], data=None, stream: bool = False,
              timeout=None) -> requests.Response:
        """`target`: the path escaped and the query, as request_target() gives them."""
        headers = dict(headers)
        signed = _signable(data)
        if isinstance(data, str):
            data = signed   # sent as the very bytes signed
        headers.update(signed_headers(self.secret, method, target, identity, signed))
        headers["X-Request-Id"] = getattr(g, "request_id", "")
        try:
            return self.session.request(method, self.urls[service] + canonical_target(target),
                                        data=data, headers=headers, stream=stream,
                                        timeout=timeout or self.timeout, allow_redirects=False)
        except requests.exceptions.ConnectTimeout:
            raise ApiError(502, "upstream_unavailable", f"the {service} service is unavailable")
        except requests.exceptions.ReadTimeout:
            raise ApiError(504, "upstream_timeout", f"the {service} service did not answer in time")
        except requests.exceptions.ConnectionError:
            raise ApiError(502, "upstream_unavailable", f"the {service} service is unavailable")

    def forward(self, service: str, identity: Identity) -> Response:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in FORWARDED_REQUEST_HEADERS}
        upstream = self._call(service, request.method, request_target(), identity, headers,
                              data=_request_body(), stream=True)
        if upstream.status_code >= 500 and not _is_json(upstream):
            # a proxy's HTML error page in front of the service: the API's shape instead
            upstream.close()
            raise ApiError(502, "upstream_error",
                           f"the {service} service answered {upstream.status_code}")
        response = Response(upstream.iter_content(64 * 1024), status=upstream.status_code)
        for key, value in upstream.headers.items():
            if key.lower() in FORWARDED_RESPONSE_HEADERS:
                response.headers[key] = value
        response.call_on_close(upstream.close)
        return response

    def get_json(self, service: str, path: str, identity: Identity, timeout=None):
        response = self._call(service, "GET", path, identity, {"Accept": "application/json"},
                              timeout=timeout)
        if response.status_code != 200:  # a figure that cannot be had is not a zero
            raise ApiError(502, "upstream_error",
                           f"the {service} service answered {response.status_code}")
        return response.json()

    def exists(self, service: str, path: str, identity: Identity, timeout=None) -> bool:
        """Whether a GET of `path` finds it (200) or not (404); ApiError
        for any other answer, or none."""
        response = self._call(service, "GET", path, identity, {"Accept": "application/json"},
                              timeout=timeout)
        response.close()
        if response.status_code not in (200, 404):
            raise ApiError(502, "upstream_error",
                           f"the {service} service answered {response.status_code}")
        return response.status_code == 200

    def openapi(self, service: str) -> dict | None:
        """The service's document, or None when it has none to give soon."""
        try:
            response = self.session.get(self.urls[service] + "/openapi.json",
                                        timeout=OPENAPI_TIMEOUT)
            return response.json() if response.status_code == 200 else None
        except (requests.exceptions.RequestException, ValueError):
            return None
