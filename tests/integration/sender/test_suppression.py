"""Suppressions and unsubscribes reach sender processes running against the
real Kafka, FerretDB and an SMTP sink: a complaint in one account stops the
address's job already queued in another (through contacts' real complaint
handler and contacts.events), and tracking.events alone stops a contact's
next job, with no contacts.events in between."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from services.contacts import domain
from services.contacts import handlers as contacts_handlers
from services.contacts.store import ContactsStore, contact_document, ensure_contacts_indexes
from shared import topics
from shared.config import Config
from shared.events import new_event
from shared.kafka.kafka_impl import KafkaSink
from shared.kafka.producer import EventProducer
from tests.integration.sender.harness import Senders, by_recipient, hexid, recipients

pytestmark = pytest.mark.timeout(300)


class PrefixedSink:
    """Contacts' producer, writing to the test's own topics on the real Kafka."""

    def __init__(self, sink: KafkaSink, prefix: str):
        self.sink, self.prefix = sink, prefix

    def send(self, topic, key, value, headers=None):
        self.sink.send(self.prefix + topic, key, value, headers or [])

    def flush(self, timeout=None):
        self.sink.flush(timeout)

    def close(self):
        self.sink.close()


def outcomes(senders: Senders, job_ids: list[str]):
    """The delivery events of these jobs, once every one has its outcome."""
    def done():
        events = [e for e in senders.events(idle=1) if e.data.get("job_id") in job_ids
                  and e.type in ("delivery.sent", "delivery.skipped")]
        return events if {e.data["job_id"] for e in events} == set(job_ids) else None
    return senders.wait(done, 90, "an outcome for every job")


def test_a_complaint_in_one_account_skips_the_address_queued_in_another(
        senders, sink, unique, stack_env, mongo_db):
    salt = stack_env["SANDESH_PII_SALT"]  # the sender processes' salt too
    ensure_contacts_indexes(mongo_db)
    store = ContactsStore(mongo_db)
    account_a, account_b, campaign = hexid(), hexid(), hexid()

    def contact(account, email):
        doc = contact_document(account, domain.address(email, salt), name="Someone", fields={},
                               at=domain.now(), origin={"via": "api"})
        store.insert_contact(doc)
        return doc

    in_a = contact(account_a, f"Shared.{unique}@Example.com")
    in_b = contact(account_b, f"shared.{unique}@example.com")   # the same address
    other = contact(account_b, f"other.{unique}@example.com")
    assert in_a["email_hash"] == in_b["email_hash"]

    # B's campaign is paused with both jobs queued (parked) before the complaint
    senders.start()
    senders.launch(account_b, campaign)
    senders.status(account_b, campaign, "paused")
    senders.wait(lambda: senders.campaign_status(campaign) == "paused", 30, "the pause")
    job_b, job_other = senders.jobs(account_b, campaign,
                                    [(c["_id"], c["email"], c["name"]) for c in (in_b, other)])
    senders.wait(lambda: senders.parked(job_b) and senders.parked(job_other), 60,
                 "the parked jobs")

    # A's recipient complains: contacts' own handler, on the real FerretDB and Kafka
    producer = EventProducer(PrefixedSink(KafkaSink(stack_env["SANDESH_KAFKA_BOOTSTRAP"],
                                                    f"contacts-{unique}"), senders.prefix))
    runtime = SimpleNamespace(db=mongo_db, producer=lambda: producer,
                              config=Config(pii_salt=salt))
    complaint = new_event("tracking.complained", source="tracking", subject=campaign,
                          account_id=account_a,
                          data={"campaign_id": hexid(), "contact_id": in_a["_id"],
                                "job_id": hexid(), "feedback_type": "abuse"})
    contacts_handlers.build_handlers(runtime)["tracking.complained"](complaint)
    producer.flush()
    assert store.contacts.find_one({"_id": in_b["_id"]})["suppressed"] is True

    # the sender learns the address, not only A's contact, then B resumes
    senders.wait(lambda: senders.recorded("blocked_addresses", f"platform:{in_b['email_hash']}"),
                 60, "the platform-wide suppression at the sender")
    senders.status(account_b, campaign, "resumed")
    events = outcomes(senders, [job_b, job_other])
    assert {e.data["job_id"]: (e.type, e.data.get("reason")) for e in events} == {
        job_b: ("delivery.skipped", "suppressed"), job_other: ("delivery.sent", None)}
    assert list(by_recipient(sink)) == [other["email"]]

    [suppressed] = [e for e in senders.events(topics.CONTACTS_EVENTS)
                    if e.type == "contact.suppressed"]
    assert suppressed.data == {"contact_id": in_a["_id"], "scope": "platform",
                               "reason": "complaint", "email_hash": in_a["email_hash"]}
    assert "@" not in json.dumps(suppressed.data) and "shared" not in json.dumps(suppressed.data)


def test_a_tracking_unsubscribe_alone_skips_the_contacts_next_job(senders, sink, unique):
    account, campaign, list_1, list_2 = hexid(), hexid(), hexid(), hexid()
    people = recipients(4, unique)
    from_list_1, from_all, complainer, control = (c for c, _, _ in people)
    senders.start()
    senders.launch(account, campaign)

    def tracking(event_type, contact_id, **data):
        senders.publish(topics.TRACKING_EVENTS, event_type, account, campaign, {
            "campaign_id": campaign, "contact_id": contact_id, "job_id": hexid(), **data})

    tracking("tracking.unsubscribed", from_list_1, list_id=list_1, method="one-click")
    tracking("tracking.unsubscribed", from_all, list_id=None, method="page")
    tracking("tracking.complained", complainer, feedback_type="abuse")
    senders.wait(lambda: all(senders.recorded("contacts", c)
                             for c in (from_list_1, from_all, complainer)),
                 60, "the unsubscribes and the complaint at the sender")

    on_list_1 = senders.jobs(account, campaign, people, list_id=list_1)
    [on_list_2] = senders.jobs(account, campaign, people[:1], list_id=list_2)
    events = outcomes(senders, on_list_1 + [on_list_2])
    assert {e.data["job_id"]: (e.type, e.data.get("reason")) for e in events} == {
        on_list_1[0]: ("delivery.skipped", "unsubscribed"),
        on_list_1[1]: ("delivery.skipped", "unsubscribed"),
        on_list_1[2]: ("delivery.skipped", "complained"),
        on_list_1[3]: ("delivery.sent", None),
        on_list_2: ("delivery.sent", None)}                  # only list 1 was left
    received = by_recipient(sink)
    assert sorted(received) == sorted([people[0][1], people[3][1]])
    assert len(received[people[0][1]]) == 1
    assert senders.events(topics.CONTACTS_EVENTS, idle=1) == []   # nothing came from contacts
