"""The fan-out's records in the contacts database (see fanout.py).

- `fanouts`: one document per launched campaign: its audience, how many
  recipients were produced, whether it is done (and cut short by a cancel),
  and `paused_after` while a pause has stopped it.
- `fanout_batches`: the contact ids of each batch produced, until done.
- `fanout_marks`: the cancels, pauses and resumes the worker's watcher (and
  the main loop) saw on campaigns.events, one document per event.

Each document has one writer: `fanouts` and `fanout_batches` are written by
the main loop only, and marks are only ever inserted, never updated.
FerretDB 1.24 applies an update as a read-modify-write of the whole
document, so two threads updating one document (the watcher marking it
while the fan-out finishes it) could lose either write; a unique `_id` is
the one arbiter it keeps.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import NamedTuple

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from pymongo.operations import IndexModel

from shared.events import Event
from shared.mongo import delete_all

INDEXES = {"fanouts": [IndexModel([("account_id", ASCENDING)])],
           "fanout_batches": [IndexModel([("campaign_id", ASCENDING)]),
                              IndexModel([("account_id", ASCENDING)])],
           "fanout_marks": [IndexModel([("campaign_id", ASCENDING)]),
                            IndexModel([("account_id", ASCENDING)])]}
MARK_KINDS = {"campaign.cancelled": "cancel", "campaign.paused": "pause",
              "campaign.resumed": "resume"}


class Marks(NamedTuple):
    cancel: bool
    pause: bool


class FanoutStore:
    def __init__(self, db: Database):
        self.fanouts = db["fanouts"]
        self.batches = db["fanout_batches"]
        self.marks_ = db["fanout_marks"]

    def start(self, campaign_id: str, account_id: str, audience: dict) -> tuple[dict, bool]:
        """(the campaign's fan-out document, whether this call started it)."""
        found = self.fanouts.find_one({"_id": campaign_id})
        if found is not None:
            if "audience" not in found:  # started before the audience was kept here
                self.fanouts.update_one({"_id": campaign_id}, {"$set": {"audience": audience}})
            return {**found, "audience": audience}, False
        doc = {"_id": campaign_id, "account_id": account_id, "audience": audience,
               "produced": 0, "done": False, "started_at": datetime.now(timezone.utc)}
        self.fanouts.insert_one(doc)
        return doc, True

    def get(self, campaign_id: str) -> dict | None:
        return self.fanouts.find_one({"_id": campaign_id})

    def unfinished(self, campaign_id: str) -> dict | None:
        """The fan-out document of a started fan-out that is not done."""
        found = self.get(campaign_id)   # by _id alone: FerretDB's one query without a scan
        return found if found is not None and not found.get("done") else None

    # -- marks --------------------------------------------------------------
    def mark(self, event: Event) -> None:
        """Record a campaign.cancelled, paused or resumed; idempotent."""
        campaign_id = event.data["campaign_id"]
        kind = MARK_KINDS[event.type]
        mark_id = f"{campaign_id}:cancel" if kind == "cancel" else f"{campaign_id}:{event.id}"
        try:
            self.marks_.insert_one({"_id": mark_id, "campaign_id": campaign_id,
                                    "account_id": event.account_id, "kind": kind,
                                    "at": datetime.fromisoformat(event.time)})
        except DuplicateKeyError:
            pass  # a redelivery, or the other loop recorded it first

    def marks(self, campaign_id: str) -> Marks:
        """Cancelled, and paused (the latest pause or resume by event time:
        the watcher and the main loop may record them in either order)."""
        found = list(self.marks_.find({"campaign_id": campaign_id}, {"kind": 1, "at": 1}))
        # A tie goes to the resume: a fan-out left running only lets the
        # senders park jobs, one stopped by mistake would wait for good.
        latest = max((m for m in found if m["kind"] != "cancel"),
                     key=lambda m: (m["at"], m["kind"] == "resume"), default=None)
        return Marks(any(m["kind"] == "cancel" for m in found),
                     latest is not None and latest["kind"] == "pause")

    # -- progress -------------------------------------------------------------
    def record_batch(self, campaign_id: str, account_id: str, contact_ids: list[str]) -> None:
        self.batches.insert_one({"campaign_id": campaign_id, "account_id": account_id,
                                 "contact_ids": contact_ids, "at": datetime.now(timezone.utc)})

    def produced_ids(self, campaign_id: str) -> set[str]:
        produced: set[str] = set()
        for doc in self.batches.find({"campaign_id": campaign_id}, {"contact_ids": 1}):
            produced.update(doc["contact_ids"])
        return produced

    def paused_after(self, campaign_id: str, produced: int | None) -> None:
        """How many were produced when a pause stopped the fan-out (None:
        running again). An operator's answer to "why no audience size yet"."""
        self.fanouts.update_one({"_id": campaign_id}, {"$set": {"paused_after": produced}})

    def finish(self, campaign_id: str, produced: int, cut_short: bool = False) -> None:
        self.fanouts.update_one({"_id": campaign_id}, {"$set": {
            "done": True, "produced": produced, "cut_short": cut_short, "paused_after": None,
            "finished_at": datetime.now(timezone.utc)}})
        delete_all(self.batches, {"campaign_id": campaign_id})
        delete_all(self.marks_, {"campaign_id": campaign_id})
