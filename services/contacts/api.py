"""HTTP API of the contacts service. Routes are added as its features land."""
from shared.http import Blueprint

blp = Blueprint("contacts", __name__, url_prefix="/api/v1", description="Contacts")
