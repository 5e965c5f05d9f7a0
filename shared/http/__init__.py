"""Flask pieces every service uses: the app factory, one JSON error shape,
health/readiness/metrics endpoints, gateway-signed identity, pagination."""
from shared.http.app import create_service_app, current_identity
from shared.http.blueprint import Blueprint
from shared.http.errors import ApiError

__all__ = ["create_service_app", "current_identity", "Blueprint", "ApiError"]
