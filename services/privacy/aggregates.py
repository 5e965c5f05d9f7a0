"""The k-anonymous aggregate report: per account, day and mailbox provider
(the recipient's domain), from delivery.events.

Counting is idempotent without multi-document transactions: every event
leaves a marker with a deterministic id (one per job and outcome, naming the
contact), and counts are computed from the markers (the contacts of a group
are its markers' distinct contact ids). Days older
than a few days are rolled up into plain counts and their markers deleted,
so the per-contact ids do not outlive the window redeliveries can come in.
"""
from __future__ import annotations

from datetime import date, timedelta

from services.privacy import domain
from services.privacy.store import PrivacyStore
from shared.events import Event
from shared.mailbox_providers import provider_of

OUTCOMES = {"delivery.sent": "sent", "delivery.bounced": "bounced", "delivery.failed": "failed"}
COUNTS = ("contacts", "sent", "bounced", "failed")


def count_deliveries(store: PrivacyStore, events: list[Event]) -> None:
    """Count a batch of delivery events: their markers in one insert."""
    store.add_markers([marker for event in events for marker in markers_of(event)])


def markers_of(event: Event) -> list[dict]:
    """The event's marker: one for its outcome; none for a test send or
    another type. One insert per delivery (FerretDB's cost is per document):
    the distinct contacts are counted from these when a report is made."""
    outcome = OUTCOMES.get(event.type)
    data = event.data
    if outcome is None or data.get("test"):
        return []
    return [{"_id": f"m|{data['job_id']}|{outcome}", "account_id": event.account_id,
             "day": event.time[:10], "provider": _provider(data),
             "kind": outcome, "contact_id": data["contact_id"]}]


def _provider(data: dict) -> str:
    """The event's mailbox provider; an event from before it was on the
    stream named the recipient's domain, which is reduced the same way."""
    if data.get("mailbox_provider"):
        return data["mailbox_provider"]
    domain = data.get("recipient_domain")
    return provider_of(domain) if domain else "unknown"


def _rows_from_markers(store: PrivacyStore, query: dict) -> dict[tuple, dict]:
    rows: dict[tuple, dict] = {}
    for item in store.marker_counts(query):
        key = (item["_id"]["account_id"], item["_id"]["day"], item["_id"]["provider"])
        row = rows.setdefault(key, {"account_id": key[0], "day": key[1], "provider": key[2],
                                    **dict.fromkeys(COUNTS, 0)})
        row[item["_id"]["kind"]] = item["count"]
    return rows


def report(store: PrivacyStore, account_id: str, since: date, until: date, k: int) -> dict:
    days = {"$gte": since.isoformat(), "$lte": until.isoformat()}
    rows = _rows_from_markers(store, {"account_id": account_id, "day": days})
    for rolled in store.rollups({"account_id": account_id, "day": days}):
        rows.setdefault((rolled["account_id"], rolled["day"], rolled["provider"]),
                        {c: rolled.get(c, 0) for c in ("account_id", "day", "provider", *COUNTS)})
    ordered = sorted(rows.values(), key=lambda r: (r["day"], r["provider"]))
    kept, suppressed = domain.k_anonymous(ordered, k)
    return {"k": k, "items": kept, "suppressed_groups": suppressed}


def roll_up(store: PrivacyStore, older_than_days: int, today: date | None = None) -> int:
    """Turn markers of days before the cut-off into counts, then delete
    them. Rolled-up groups are written once (a re-run after a crash between
    the two steps finds them and keeps them)."""
    cutoff = ((today or date.today()) - timedelta(days=older_than_days)).isoformat()
    query = {"day": {"$lt": cutoff}}
    for key, row in _rows_from_markers(store, query).items():
        if not store.rollups({"_id": "|".join(key)}):
            store.save_rollup({"_id": "|".join(key), **row})
    return store.delete_markers(query)
