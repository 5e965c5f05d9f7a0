"""The tracking service's signed API (through the gateway): campaign stats.
The public endpoints (pixel, click, unsubscribe, bounces) are in public.py."""
from __future__ import annotations

from services.tracking.counting import build_stats
from services.tracking.schemas import CampaignStats
from services.tracking.store import TrackingStore
from shared.http import Blueprint, current_identity
from shared.http.errors import not_found
from shared.http.service import runtime

blp = Blueprint("tracking", __name__, url_prefix="/api/v1", description="Tracking")


@blp.route("/campaigns/<campaign_id>/stats")
@blp.response(200, CampaignStats)
def campaign_stats(campaign_id):
    """A campaign's statistics: sent, delivered, failed, bounced, opens and
    clicks (unique and total, people and machines apart), clicks per link,
    unsubscribes, complaints, rates, and an hourly series for the first days.
    Counted incrementally from delivery.events and tracking.events; an
    event delivered twice counts once."""
    stats = build_stats(TrackingStore(runtime().db), campaign_id)
    if stats is None or stats.pop("account_id") != current_identity().account_id:
        raise not_found("campaign")
    return stats
