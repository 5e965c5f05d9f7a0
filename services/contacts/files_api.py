"""HTTP API for files: CSV imports into a list, exports of a list or segment."""
from __future__ import annotations

from shared.http import Blueprint

blp = Blueprint("contacts-files", __name__, url_prefix="/api/v1",
                description="Contact imports and exports")
