"""HTTP API of the privacy service. Routes are added as its features land."""
from shared.http import Blueprint

blp = Blueprint("privacy", __name__, url_prefix="/api/v1", description="Privacy")
