"""The tracking service's signed API (through the gateway): campaign stats.
The public endpoints (pixel, click, unsubscribe, bounces) are in public.py."""
from __future__ import annotations

from services.tracking.counting import build_stats
from services.tracking.schemas import CampaignStats
from services.tracking.store import TrackingStore
from shared.http import Blueprint, current_identity
from shared.http.errors import ApiError
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
        # Tracking learns of a campaign when it launches: a draft is no
        # campaign it knows, though the campaigns service has it.
        raise ApiError(404, "not_found", "no stats for this campaign: it has not been "
                                         "launched, or there is no such campaign")
    return stats
