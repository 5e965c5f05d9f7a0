"""Campaign statistics, counted incrementally from the event streams.

Every event becomes one or more markers (see store.py); the same event
delivered twice, or a bounce seen both as delivery.bounced and
tracking.bounced, finds its markers already there and counts once.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from services.tracking import domain
from services.tracking.store import TrackingStore
from shared.events import Event


@dataclass(frozen=True)
class CountingRules:
    machine_hit_seconds: float = 10.0
    machine_burst_seconds: float = 1.0
    hourly_days: int = 3


class StatsCounter:
    def __init__(self, store: TrackingStore, rules: CountingRules, shard: str | None = None):
        self.store = store
        self.rules = rules
        # One counter document per process and campaign (see store.py).
        self.shard = shard or uuid.uuid4().hex[:12]
        self._first_at: dict = {}

    # ----------------------------------------------------------- events
    def campaign_launched(self, event: Event) -> None:
        data = event.data
        links = list((data.get("template") or {}).get("links") or [])
        self.store.save_campaign(data["campaign_id"], event.account_id, links,
                                 domain.parse_time(event.time))

    def delivery_sent(self, event: Event) -> None:
        data = event.data
        if data.get("test"):
            return
        self.store.save_delivery(data["job_id"], event.account_id, data["campaign_id"],
                                 data["contact_id"], domain.parse_time(event.time))
        self._count(event, f"sent|{data['job_id']}", ["sent"])

    def delivery_failed(self, event: Event) -> None:
        if not event.data.get("test"):
            self._count(event, f"failed|{event.data['job_id']}", ["failed"])

    def bounced(self, event: Event) -> None:
        """delivery.bounced and tracking.bounced: one bounce per message."""
        data = event.data
        if data.get("test") or data.get("bounce_type") not in ("hard", "soft"):
            return
        self._count(event, f"bounce|{data['job_id']}", [f"bounced_{data['bounce_type']}"])

    def unsubscribed(self, event: Event) -> None:
        self._count(event, f"unsubscribe|{event.data['contact_id']}", ["unsubscribes"])

    def complained(self, event: Event) -> None:
        self._count(event, f"complaint|{event.data['contact_id']}", ["complaints"])

    def opened(self, event: Event) -> None:
        data = event.data
        machine = self._classify(event, link_index=None)
        cls = self._count(event, f"open|{event.id}", [f"opens_total_{_cls(machine)}"],
                          extra={"machine": machine})
        self._count(event, f"open_unique|{cls}|{data['contact_id']}", [f"opens_unique_{cls}"])

    def clicked(self, event: Event) -> None:
        data = event.data
        index = int(data.get("link_index", 0))
        machine = self._classify(event, link_index=index)
        fields = [f"clicks_total_{_cls(machine)}", f"link_{index}_total_{_cls(machine)}"]
        # On redelivery the first verdict stands (it is kept in the marker).
        cls = self._count(event, f"click|{event.id}", fields, extra={"machine": machine})
        self._count(event, f"click_unique|{cls}|{data['contact_id']}", [f"clicks_unique_{cls}"])
        self._count(event, f"link_unique|{index}|{cls}|{data['contact_id']}",
                    [f"link_{index}_unique_{cls}"])

    # ------------------------------------------------------------ rules
    def _classify(self, event: Event, link_index: int | None) -> bool:
        """Rules 5 and 6 on top of what the web process saw (rules 1-4)."""
        data = event.data
        verdict = domain.Verdict(bool(data.get("machine")), data.get("machine_reason", ""))
        at = domain.parse_time(event.time)
        delivery = self.store.delivery(data["job_id"])
        if delivery and delivery.get("sent_at"):
            since = (at - delivery["sent_at"]).total_seconds()
            verdict = domain.classify_timing(verdict, since, self.rules.machine_hit_seconds)
        if link_index is not None and not verdict.machine:
            previous = self.store.swap_last_click(data["job_id"], link_index, at.timestamp())
            previous_click = (previous["i"], previous["t"]) if previous else None
            verdict = domain.classify_burst(verdict, link_index, previous_click, at.timestamp(),
                                            self.rules.machine_burst_seconds)
        return verdict.machine

    # --------------------------------------------------------- counting
    def _count(self, event: Event, fact: str, fields: list[str],
               extra: dict | None = None) -> str:
        """Count `fields` once for this fact; returns the class ("human" or
        "machine") the fact was first counted with."""
        campaign_id = event.data["campaign_id"]
        at = domain.parse_time(event.time)
        first_at = self._first_at.get(campaign_id)
        if first_at is None or at < first_at:
            first_at = self.store.note_campaign_activity(campaign_id, event.account_id, at)
            if len(self._first_at) > 10_000:
                self._first_at.clear()
            self._first_at[campaign_id] = first_at
        in_series = at < first_at + timedelta(days=self.rules.hourly_days)
        hour = domain.hour_of(event.time) if in_series else None
        marker_id = f"{campaign_id}|{fact}"
        existing = self.store.insert_marker(marker_id, campaign_id, fields, hour, extra)
        if existing is not None:
            if not existing.get("done"):
                # A crash between marker and increment: rebuild from markers.
                self.store.recount(campaign_id, event.account_id)
            return _cls(existing.get("machine", bool(extra and extra.get("machine"))))
        self.store.increment(campaign_id, event.account_id, fields, hour, self.shard)
        self.store.mark_done(marker_id)
        return _cls(bool(extra and extra.get("machine")))


def _cls(machine: bool) -> str:
    return "machine" if machine else "human"


def build_stats(store: TrackingStore, campaign_id: str) -> dict | None:
    campaign = store.campaign(campaign_id) or {}
    counts = store.counters(campaign_id)
    if counts is None and not campaign:
        return None
    counts = counts or {}
    body = {"campaign_id": campaign_id, **domain.summarise(counts)}
    links = campaign.get("links") or []
    indexes = sorted(set(range(len(links))) | {
        int(name.split("_")[1]) for name in counts if name.startswith("link_")})
    body["links"] = [{
        "index": i, "url": links[i] if i < len(links) else None,
        "unique_human": counts.get(f"link_{i}_unique_human", 0),
        "total_human": counts.get(f"link_{i}_total_human", 0),
        "unique_machine": counts.get(f"link_{i}_unique_machine", 0),
        "total_machine": counts.get(f"link_{i}_total_machine", 0),
    } for i in indexes]
    body["hourly"] = [{
        "hour": row["hour"],
        **{name: int(row.get(name, 0)) for name in domain.COUNTERS},
    } for row in store.hourly(campaign_id)]
    body["account_id"] = (counts.get("account_id") or campaign.get("account_id"))
    return body

