"""Events in and out of contacts over the real Kafka broker and FerretDB."""
import dataclasses
import json
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from services.contacts import domain, handlers, usecases
from services.contacts.store import ContactsStore, contact_document, ensure_contacts_indexes
from shared import asyncapi
from shared.config import Config
from shared.events import new_event
from shared.events.registry import known_types, schema_for
from shared.kafka import ConsumerLoop
from shared.kafka.kafka_impl import KafkaSink
from shared.kafka.rdkafka_impl import RdKafkaSource  # what every loop reads with
from shared.kafka.producer import EventProducer
from tests.integration.contacts.conftest import SALT
from tests.kafka_reader import TopicReader

V1 = "/api/v1"


def _runtime(db, producer):
    return SimpleNamespace(db=db, producer=lambda: producer, config=Config(pii_salt=SALT))


def _contact(store, account, email, list_ids):
    doc = contact_document(account, domain.address(email, SALT), name="Someone", fields={},
                           at=domain.now(), origin={"via": "api"})
    store.insert_contact(doc)
    for list_id in list_ids:
        store.update_contact(account, doc["_id"], domain.membership_update(
            list_id, domain.membership("subscribed", "api", domain.now())))
    return doc["_id"]


def _tracking(kind, account, contact_id, **data):
    return new_event(kind, source="tracking", subject="c" * 32, account_id=account,
                     data={"campaign_id": "c" * 32, "contact_id": contact_id,
                           "job_id": domain.new_id(), **data})


def test_unsubscribes_complaints_and_hard_bounces_arrive_and_apply(mongo_db, kafka_bootstrap,
                                                                   make_topic, unique):
    ensure_contacts_indexes(mongo_db)
    store = ContactsStore(mongo_db)
    account, l1, l2 = domain.new_id(), domain.new_id(), domain.new_id()
    unsub = _contact(store, account, "unsub@example.com", [l1, l2])
    everything = _contact(store, account, "all@example.com", [l1, l2])
    complainer = _contact(store, account, "angry@example.com", [l1])
    bouncer = _contact(store, account, "gone@example.com", [l1])
    soft = _contact(store, account, "soft@example.com", [l1])
    old_link = _contact(store, account, "old-link@example.com", [l1])
    deleted_list = _contact(store, account, "deleted-list@example.com", [l1])
    gone_list = domain.new_id()   # the list its mail named was deleted since
    topic = make_topic("in")
    out = EventProducer(KafkaSink(kafka_bootstrap, "contacts-test-out"))
    first = _tracking("tracking.unsubscribed", account, unsub, list_id=l1, method="one-click",
                      ip_prefix="203.0.113.0/24")
    # The same one-click clicked again later: the same event id, a later time.
    again = dataclasses.replace(first, time=(datetime.fromisoformat(first.time) + timedelta(
        seconds=2)).isoformat(timespec="milliseconds"))
    sent = [first, first, again,                           # a redelivery changes nothing more
            _tracking("tracking.unsubscribed", account, everything, list_id=None, method="page"),
            _tracking("tracking.unsubscribed", account, old_link, list_id=l1),  # no method
            _tracking("tracking.unsubscribed", account, deleted_list, list_id=gone_list),
            _tracking("tracking.complained", account, complainer),
            new_event("delivery.bounced", source="sender", subject="j", account_id=account,
                      data={"job_id": "j" * 32, "campaign_id": "c" * 32, "contact_id": bouncer,
                            "attempt": 1, "bounce_type": "hard"}),
            _tracking("tracking.bounced", account, soft, bounce_type="soft"),
            _tracking("tracking.unsubscribed", account, domain.new_id())]   # unknown: ignored
    producer = EventProducer(KafkaSink(kafka_bootstrap, "contacts-test-in"))
    for event in sent:
        producer.publish(topic, event, key=account)
    producer.flush()

    group = f"contacts-{unique}"
    loop = ConsumerLoop(RdKafkaSource([topic], group, kafka_bootstrap, "t"),
                        handlers.build_handlers(_runtime(mongo_db, out)), service="contacts",
                        group=group, dead_letters=KafkaSink(kafka_bootstrap, "t-dlq"))
    end = time.monotonic() + 60
    handled = 0
    while handled < len(sent) and time.monotonic() < end:
        handled += loop.run_once()
    loop.shutdown()
    assert handled == len(sent)

    one = store.contacts.find_one({"_id": unsub})
    assert one["lists"][l1]["status"] == "unsubscribed" and one["lists"][l2]["status"] == "subscribed"
    assert one["subscribed_list_ids"] == [l2]
    assert [(e["action"], e["via"], e["list_id"], e["ip"]) for e in
            store.consent.find({"contact_ids": unsub})] == \
        [("unsubscribe", "one-click", l1, "203.0.113.0/24")]
    assert one["lists"][l1]["via"] == "one-click"
    assert one["lists"][l1]["at"] == datetime.fromisoformat(first.time)   # not moved by the repeat
    gone = store.contacts.find_one({"_id": everything})
    assert gone["subscribed_list_ids"] == [] and gone["suppressed"] is True
    assert {gone["lists"][l]["via"] for l in (l1, l2)} == {"form"}
    page = sorted((e["list_id"] or "", e["via"]) for e in
                  store.consent.find({"contact_ids": everything}))
    assert page == sorted([("", "form"), (l1, "form"), (l2, "form")])
    assert [e["via"] for e in store.consent.find({"contact_ids": old_link})] == ["link"]
    # a list deleted since: nothing to change, but the choice is logged (it left no trace)
    assert [(e["action"], e["list_id"]) for e in
            store.consent.find({"contact_ids": deleted_list})] == [("unsubscribe", gone_list)]
    assert store.contacts.find_one({"_id": deleted_list})["subscribed_list_ids"] == [l1]
    angry = store.contacts.find_one({"_id": complainer})
    assert angry["status"] == "complained"
    platform = store.suppressions.find_one({"email_hash": angry["email_hash"]})
    assert platform["account_id"] is None and platform["reason"] == "complaint"
    bounced = store.contacts.find_one({"_id": bouncer})
    assert bounced["status"] == "bounced" and bounced["suppressed"] is True
    assert store.contacts.find_one({"_id": soft})["status"] == "active"
    audience = [c["_id"] for batch in store.stream_audience(account, [l1, l2], None) for c in batch]
    assert sorted(audience) == sorted([unsub, soft, deleted_list])

    # Subscribed again, then the old message's one-click clicked once more:
    # unsubscribed again, and logged again.
    store.update_contact(account, unsub, domain.membership_update(
        l1, domain.membership("subscribed", "form", domain.now())))
    later = dataclasses.replace(first, time=(datetime.fromisoformat(first.time) + timedelta(
        days=7)).isoformat(timespec="milliseconds"))
    handlers.unsubscribe(usecases.Ports(store, out, SALT), later)
    assert store.contacts.find_one({"_id": unsub})["lists"][l1]["status"] == "unsubscribed"
    assert store.consent.count_documents({"contact_ids": unsub, "action": "unsubscribe"}) == 2


@pytest.fixture
def contacts_events(kafka_bootstrap):
    """contacts.events from the test's start on (fixed before the test acts)."""
    with TopicReader(kafka_bootstrap, "contacts.events", since="now") as reader:
        yield reader


def test_changes_go_out_on_contacts_events_without_personal_data(settings, contacts_events,
                                                                 mongo_uri, client_factory):
    client = client_factory()
    list_id = client.post(f"{V1}/lists", {"name": "L"}).get_json()["id"]
    contact = client.post(f"{V1}/contacts", {"email": "Private.Person@Example.com",
                                             "name": "Private Person",
                                             "list_ids": [list_id]}).get_json()
    client.patch(f"{V1}/contacts/{contact['id']}", {"name": "Still Private"})
    client.put(f"{V1}/contacts/{contact['id']}/lists/{list_id}", {"status": "unsubscribed"})
    client.post(f"{V1}/suppressions", {"email": "private.person@example.com"})
    client.delete(f"{V1}/contacts/{contact['id']}")
    expected = ["contact.created", "contact.subscribed", "contact.updated",
                "contact.unsubscribed", "contact.suppressed", "contact.erased"]

    def ours(found):
        return [e for e in found if e["subject"] == contact["id"]]

    events = ours(contacts_events.read(lambda f: len(ours(f)) >= len(expected)))
    assert sorted(e["type"] for e in events) == sorted(expected)
    assert all(e["accountid"] == client.account_id for e in events)
    text = json.dumps(events).lower()
    assert "private" not in text and "@" not in text
    updated = [e for e in events if e["type"] == "contact.updated"][0]
    assert updated["data"]["fields"] == ["name"]
    # the one exception: the suppression list's keyed hash, for the sender's
    # send-time check of the address in every account the entry covers
    [suppressed] = [e for e in events if e["type"] == "contact.suppressed"]
    assert suppressed["data"] == {"contact_id": contact["id"], "scope": "account",
                                  "reason": "manual",
                                  "email_hash": domain.address("private.person@example.com",
                                                               SALT).hash}


def test_lifting_a_suppression_tells_the_sender_by_hash_and_contact(settings, contacts_events,
                                                                   mongo_uri, client_factory):
    """Both ways out of the list (the entry removed with a reason, and a
    logged re-consent) end with contact.unsuppressed, or the sender would
    go on skipping the address."""
    client = client_factory()
    list_id = client.post(f"{V1}/lists", {"name": "L"}).get_json()["id"]
    removed = client.post(f"{V1}/contacts", {"email": "Gone.Once@Example.com",
                                             "list_ids": [list_id]}).get_json()
    entry = client.post(f"{V1}/suppressions", {"email": "gone.once@example.com"}).get_json()
    assert client.delete(f"{V1}/suppressions/{entry['id']}",
                         {"reason": "added by mistake"}).status_code == 204
    returning = client.post(f"{V1}/contacts", {"email": "back.again@example.com",
                                               "list_ids": [list_id]}).get_json()
    client.post(f"{V1}/suppressions", {"email": "back.again@example.com"})
    client.put(f"{V1}/contacts/{returning['id']}/lists/{list_id}", {"status": "unsubscribed"})
    assert client.put(f"{V1}/contacts/{returning['id']}/lists/{list_id}", {
        "status": "subscribed", "reconsent": True,
        "consent": {"wording": "Yes, again"}}).status_code == 200

    def lifted(found):
        return {e["subject"]: e for e in found if e["type"] == "contact.unsuppressed"
                and e["subject"] in (removed["id"], returning["id"])}

    events = lifted(contacts_events.read(lambda f: len(lifted(f)) == 2))
    assert {subject: e["data"] for subject, e in events.items()} == {
        removed["id"]: {"contact_id": removed["id"], "scope": "account",
                        "email_hash": domain.address("gone.once@example.com", SALT).hash},
        returning["id"]: {"contact_id": returning["id"], "scope": "account",
                          "email_hash": domain.address("back.again@example.com", SALT).hash}}
    assert "mistake" not in json.dumps(events) and "@" not in json.dumps(events)


def test_the_address_hash_never_travels_on_the_analytics_streams():
    for event_type in known_types():
        schema = schema_for(event_type)
        if set(asyncapi.topics_of(event_type)) & set(asyncapi.ANALYTICS_TOPICS):
            assert "email_hash" not in schema.get("properties", {}), event_type
            assert schema.get("additionalProperties") is False, event_type
    assert "email_hash" in schema_for("contact.suppressed")["properties"]
    assert "email_hash" in schema_for("contact.unsuppressed")["properties"]


def test_a_redelivered_event_announces_again_what_its_first_handling_stored(mongo_db):
    """The first handling of a bounce or complaint can store the contact's
    new status (and the suppression) and die before its events are out.
    The redelivery found nothing to change and said nothing, so the sender,
    which hears of bounces only from contacts.events, went on mailing."""
    from shared.kafka.memory import InMemoryBroker
    from services.contacts import usecases
    ensure_contacts_indexes(mongo_db)
    store = ContactsStore(mongo_db)
    account, l1 = domain.new_id(), domain.new_id()
    bouncer = _contact(store, account, "gone@example.com", [l1])
    complainer = _contact(store, account, "angry@example.com", [l1])
    bounce = new_event("delivery.bounced", source="sender", subject="j", account_id=account,
                       data={"job_id": "j" * 32, "campaign_id": "c" * 32, "contact_id": bouncer,
                             "attempt": 1, "bounce_type": "hard"})
    complaint = _tracking("tracking.complained", account, complainer)

    def handle(broker):
        ports = usecases.Ports(store, EventProducer(broker.sink()), SALT)
        handlers.bounced(ports, bounce)
        handlers.complained(ports, complaint)
        ports.producer.flush()   # what the loop does before it commits
        return sorted((m["type"], m["subject"]) for m in
                      (json.loads(r.value) for r in broker.messages("contacts.events")))

    lost = InMemoryBroker()   # the first handling's events never left
    first = handle(lost)
    assert store.contacts.find_one({"_id": bouncer})["status"] == "bounced"
    again = handle(InMemoryBroker())
    assert again == first and ("contact.status_changed", bouncer) in again
    assert ("contact.status_changed", complainer) in again
    assert [t for t, _ in again].count("contact.suppressed") >= 2   # the bounce's and the complaint's
