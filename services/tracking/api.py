"""HTTP API of the tracking service. Routes are added as its features land."""
from shared.http import Blueprint

blp = Blueprint("tracking", __name__, url_prefix="/api/v1", description="Tracking")
