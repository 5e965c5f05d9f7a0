"""The fan-out's records in the contacts database (see fanout.py).

`fanouts`: one document per launched campaign: its audience, how many
recipients were produced, whether it is done (and cut short by a cancel),
and the marks the worker's watcher sets from campaigns.events:
`cancel_requested`, and `pause_requested` while the campaign is paused
(with `paused_after`, the count produced when a pause stopped it).
`fanout_batches`: the contact ids of each batch produced, until done.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import NamedTuple

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from pymongo.operations import IndexModel

from shared.mongo import delete_all

INDEXES = {"fanouts": [IndexModel([("account_id", ASCENDING)])],
           "fanout_batches": [IndexModel([("campaign_id", ASCENDING)]),
                              IndexModel([("account_id", ASCENDING)])]}


class Marks(NamedTuple):
    cancel: bool
    pause: bool


class FanoutStore:
    def __init__(self, db: Database):
        self.fanouts = db["fanouts"]
        self.batches = db["fanout_batches"]

    def start(self, campaign_id: str, account_id: str, audience: dict) -> tuple[dict, bool]:
        """(the campaign's fan-out document, whether this call started it)."""
        found = self.fanouts.find_one({"_id": campaign_id})
        if found is not None and "started_at" in found:
            if "audience" not in found:  # started before the audience was kept here
                self.fanouts.update_one({"_id": campaign_id}, {"$set": {"audience": audience}})
            return {**found, "audience": audience}, False
        started = {"audience": audience, "started_at": datetime.now(timezone.utc)}
        if found is not None:  # only the watcher's mark came first: nothing produced yet
            self.fanouts.update_one({"_id": campaign_id}, {"$set": started})
            return {**found, **started}, True
        doc = {"_id": campaign_id, "account_id": account_id, "produced": 0, "done": False,
               **started}
        try:
            self.fanouts.insert_one(doc)
        except DuplicateKeyError:  # the watcher marked it meanwhile
            return self.start(campaign_id, account_id, audience)
        return doc, True

    def unfinished(self, campaign_id: str) -> dict | None:
        """The fan-out document of a started fan-out that is not done."""
        # By _id alone: the one query FerretDB answers without a scan.
        found = self.fanouts.find_one({"_id": campaign_id})
        if found is None or found.get("done") or "started_at" not in found:
            return None
        return found

    # -- marks from campaigns.events (they may come before the fan-out starts) -
    def request_cancel(self, campaign_id: str, account_id: str) -> None:
        self.fanouts.update_one({"_id": campaign_id},
                                {"$set": {"cancel_requested": True},
                                 "$setOnInsert": {"account_id": account_id, "produced": 0,
                                                  "done": False}}, upsert=True)

    def set_paused(self, campaign_id: str, account_id: str, paused: bool,
                   as_of: datetime) -> bool:
        """Record whether the campaign is paused as of `as_of` (its event's
        time), unless a later pause or resume is recorded already: the
        watcher and the main loop both write it, and either may be ahead.
        A pause may come before the fan-out starts, so it creates the
        document; a resume has nothing to undo where there is none."""
        for _ in range(5):
            found = self.fanouts.find_one({"_id": campaign_id}, {"pause_as_of": 1})
            if found is None:
                if not paused:
                    return False
                try:
                    self.fanouts.insert_one({"_id": campaign_id, "account_id": account_id,
                                             "produced": 0, "done": False,
                                             "pause_requested": paused, "pause_as_of": as_of})
                    return True
                except DuplicateKeyError:
                    continue
            recorded = found.get("pause_as_of")
            if recorded is not None and recorded >= as_of:
                return False
            if self.fanouts.update_one(  # compare-and-set on the time it read
                    {"_id": campaign_id, "pause_as_of": recorded},
                    {"$set": {"pause_requested": paused, "pause_as_of": as_of}}).matched_count:
                return True
        return False

    def marks(self, campaign_id: str) -> Marks:
        found = self.fanouts.find_one({"_id": campaign_id},
                                      {"cancel_requested": 1, "pause_requested": 1}) or {}
        return Marks(bool(found.get("cancel_requested")), bool(found.get("pause_requested")))

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
            "done": True, "produced": produced, "cut_short": cut_short,
            "finished_at": datetime.now(timezone.utc)}})
        delete_all(self.batches, {"campaign_id": campaign_id})
