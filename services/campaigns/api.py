"""HTTP API of the campaigns service. Routes are added as its features land."""
from shared.http import Blueprint

blp = Blueprint("campaigns", __name__, url_prefix="/api/v1", description="Campaigns")
