"""CORS for the one configured dashboard origin (SANDESH_DASHBOARD_ORIGIN);
no origin configured means no cross-origin access at all."""
from __future__ import annotations

from flask import Flask, Response, request

from shared.http.errors import error_response

ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
# If-None-Match: the gateway forwards it, and the dashboard revalidates with it.
ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-Id, If-None-Match"
# What the dashboard's script may read: an export's file name, a created
# resource's place, a revalidation's ETag, the rate limit's wait.
EXPOSED_HEADERS = "X-Request-Id, Retry-After, Content-Disposition, Location, ETag"
MAX_AGE = "600"


class Cors:
    def __init__(self, origin: str):
        self.origin = origin.rstrip("/")

    def init_app(self, app: Flask) -> None:
        app.before_request(self._preflight)
        app.after_request(self._headers)

    def _allowed(self) -> bool:
        return bool(self.origin) and request.headers.get("Origin") == self.origin

    def _preflight(self):
        if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
            if not self._allowed():
                return error_response(403, "cors_forbidden",
                                      "cross-origin requests are not allowed from this origin")
            return self._headers(Response(status=204))
        return None

    def _headers(self, response: Response) -> Response:
        if self._allowed():
            response.headers["Access-Control-Allow-Origin"] = self.origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
                response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
                response.headers["Access-Control-Max-Age"] = MAX_AGE
        return response
