"""Contacts answers data-subject requests against the real FerretDB: access
returns record, memberships and consent log; erasure leaves only the salted
hash on the platform suppression list (and a tombstone); rectification and
restriction are applied and logged."""
import json
from types import SimpleNamespace

import pytest

from services.contacts import privacy, usecases
from services.contacts.store import ContactsStore, ensure_contacts_indexes
from shared.config import Config
from shared.events import decode, new_event
from shared.http.errors import ApiError
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer
from shared.pii import email_hash, normalise_email
from shared.topics import CONTACTS_EVENTS, PRIVACY_ACKS

ACCOUNT = "acct-c"
SALT = "salt-for-tests"
EMAIL = "Jane.Doe@Example.com"


@pytest.fixture
def world(mongo_db):
    ensure_contacts_indexes(mongo_db)
    broker = InMemoryBroker()
    producer = EventProducer(broker.sink())
    runtime = SimpleNamespace(db=mongo_db, producer=lambda: producer,
                              config=Config(pii_salt=SALT))
    ports = usecases.Ports(ContactsStore(mongo_db), producer, SALT)
    newsletter = usecases.create_list(ports, ACCOUNT, {"name": "Newsletter"})
    usecases.create_field(ports, ACCOUNT, {"key": "city", "type": "text"})
    jane = usecases.create_contact(ports, ACCOUNT, {
        "email": EMAIL, "name": "Jane Doe", "fields": {"city": "Lisbon"},
        "list_ids": [newsletter["_id"]], "consent": {"via": "form", "ip": "192.0.2.1"}}, "key-1")
    other = usecases.create_contact(ports, ACCOUNT, {"email": "bob@example.com", "name": "Bob",
                                                     "list_ids": [newsletter["_id"]]}, "key-1")
    broker.topics.clear()
    return SimpleNamespace(broker=broker, runtime=runtime, ports=ports, jane=jane, other=other,
                           list=newsletter, db=mongo_db)


def _request(kind, subject, **extra):
    return new_event("privacy.requested", source="sandesh.privacy", subject="r1",
                     account_id=ACCOUNT, data={"request_id": "r1", "kind": kind,
                                               "subject": {"kind": "contact", **subject}, **extra})


def _answers(broker):
    return [decode(r.value).data for r in broker.messages(PRIVACY_ACKS)]


def _hash():
    return email_hash(normalise_email(EMAIL), SALT)


def test_access_by_address_returns_record_memberships_and_consent(world):
    privacy.handle_privacy_request(world.runtime, _request("access", {"email_hash": _hash()}))
    [answer] = _answers(world.broker)
    assert answer["status"] == "done" and answer["contact_ids"] == [world.jane["_id"]]
    export = answer["export"]
    assert export["contact"]["email"] == "Jane.Doe@example.com"
    assert export["contact"]["fields"] == {"city": "Lisbon"}
    assert export["memberships"][0]["list_name"] == "Newsletter"
    assert export["memberships"][0]["status"] == "subscribed"
    assert export["consent_log"] and export["consent_log"][0]["action"] == "subscribe"



def test_access_includes_the_accounts_suppression_history_of_the_address(world):
    """Each time the account suppressed the address or lifted it, with the
    note its user wrote; another account's platform-wide entry shows only
    as an entry, never its history."""
    usecases.suppress(world.ports, ACCOUNT, _hash(), "manual", "user-1", note="asked by phone")
    usecases.lift_suppression(world.ports, ACCOUNT, _hash(), "re-consented", "user-1")
    usecases.suppress(world.ports, None, _hash(), "complaint", "tracking",
                      origin_account_id="another-account")
    privacy.handle_privacy_request(world.runtime, _request("access", {"email_hash": _hash()}))
    [answer] = _answers(world.broker)
    history = answer["export"]["suppression_history"]
    assert [(h["action"], h["reason"]) for h in history] == [("add", "manual"),
                                                             ("remove", "re-consented")]
    assert history[0]["note"] == "asked by phone" and history[0]["at"]
    # the entry another account's complaint made: that it exists, not why or since when
    assert answer["export"]["suppressions"] == [{"scope": "platform", "reason": None,
                                                 "since": None}]


def test_an_account_that_erased_an_address_hears_erasure_not_another_accounts_complaint(world):
    usecases.suppress(world.ports, None, _hash(), "complaint", "tracking",
                      origin_account_id="another-account")
    privacy.handle_privacy_request(world.runtime, _request("erasure", {"email_hash": _hash()}))
    told = usecases.check_suppression(world.ports, ACCOUNT, {"email": EMAIL})
    assert (told["scope"], told["reason"]) == ("platform", "erasure")


def test_an_erasure_scrubs_the_notes_the_account_wrote_about_the_address(world):
    """A suppression's note is free text ("asked by phone, husband ..."): the
    entries stay, as the account's record that the address is suppressed,
    without it."""
    usecases.suppress(world.ports, ACCOUNT, _hash(), "manual", "user-1", note="asked by phone")
    usecases.lift_suppression(world.ports, ACCOUNT, _hash(), "her husband called", "user-1")
    usecases.suppress(world.ports, ACCOUNT, _hash(), "manual", "user-1", note="asked by phone")
    privacy.handle_privacy_request(world.runtime, _request("erasure", {"email_hash": _hash()}))
    for records in (world.db.suppressions, world.db.suppression_log):
        mine = list(records.find({"account_id": ACCOUNT, "email_hash": _hash()}))
        assert mine and all("note" not in entry for entry in mine)
    text = json.dumps({name: list(world.db[name].find())
                       for name in world.db.list_collection_names()}, default=str)
    assert "husband" not in text
    assert "asked by phone" not in json.dumps(
        {name: list(world.db[name].find()) for name in world.db.list_collection_names()},
        default=str)

def test_an_erasure_whose_last_flush_fails_is_finished_by_its_redelivery(world, monkeypatch):
    """The contact was deleted before its events and the answer were out: a
    failed flush then left a redelivery that found no contact, answered
    "not_found" without its id, and never sent contact.erased, so the
    other services never replaced the id with a pseudonym. The contact now
    goes last, so a redelivery finds it and finishes everything."""
    request = _request("erasure", {"email_hash": _hash()})
    real_flush, flushes = world.runtime.producer().flush, []

    def failing_last_flush(*args, **kwargs):
        flushes.append(1)
        if len(flushes) == 2:      # the tombstone's flush: everything else is out
            raise TimeoutError("broker went away")
        return real_flush(*args, **kwargs)

    monkeypatch.setattr(world.runtime.producer(), "flush", failing_last_flush)
    with pytest.raises(TimeoutError):
        privacy.handle_privacy_request(world.runtime, request)
    monkeypatch.setattr(world.runtime.producer(), "flush", real_flush)
    privacy.handle_privacy_request(world.runtime, request)          # the redelivery
    answers = _answers(world.broker)
    assert [a["status"] for a in answers] == ["done", "done"]
    assert all(a["contact_ids"] == [world.jane["_id"]] for a in answers)
    erased = [decode(r.value) for r in world.broker.messages(CONTACTS_EVENTS) if r.value]
    assert [e.type for e in erased].count("contact.erased") == 2
    assert world.db.contacts.find_one({"_id": world.jane["_id"]}) is None


def test_erasure_leaves_only_the_hash_on_the_platform_suppression_list(world):
    privacy.handle_privacy_request(world.runtime, _request("erasure", {"contact_id": world.jane["_id"]}))
    [answer] = _answers(world.broker)
    assert answer["status"] == "done" and answer["contact_ids"] == [world.jane["_id"]]
    everything = json.dumps({n: list(world.db[n].find()) for n in world.db.list_collection_names()},
                            default=str)
    for trace in ("Jane", "jane", "Lisbon", world.jane["_id"], "192.0.2.1"):
        assert trace not in everything, trace
    assert "bob@example.com" in everything  # nobody else was touched
    [entry] = list(world.db.suppressions.find({"email_hash": _hash()}))
    assert entry["account_id"] is None and entry["scope"] == "platform" and entry["reason"] == "erasure"
    # contact.erased then the tombstone, both keyed by the contact id
    records = [r for r in world.broker.messages(CONTACTS_EVENTS)
               if r.key == world.jane["_id"].encode()]
    assert [decode(r.value).type for r in records if r.value] [-1] == "contact.erased"
    assert records[-1].value is None
    # a re-import (or a new contact) of the same address is suppressed
    again = usecases.create_contact(world.ports, "another-account", {"email": "jane.doe@example.com"},
                                    "key-9")
    assert again["suppressed"] is True


def test_an_erasure_of_an_address_the_account_never_held_suppresses_it_there_alone(world):
    """It was suppressed platform-wide: any account could silence another's
    contact for good by asking to erase its address."""
    other = usecases.create_contact(world.ports, "another-account",
                                    {"email": "stranger@example.com"}, "key-9")
    stranger = email_hash(normalise_email("stranger@example.com"), SALT)
    for _ in range(2):  # asked twice (or redelivered): still the account's alone
        privacy.handle_privacy_request(world.runtime, _request("erasure", {"email_hash": stranger}))
    assert [a["status"] for a in _answers(world.broker)] == ["not_found", "not_found"]
    [entry] = list(world.db.suppressions.find({"email_hash": stranger}))
    assert (entry["account_id"], entry["scope"], entry["reason"]) == (ACCOUNT, "account", "erasure")
    assert world.db.contacts.find_one({"_id": other["_id"]})["suppressed"] is False
    # the account that asked never stores it, nor lifts the entry
    with pytest.raises(ApiError) as refused:
        usecases.create_contact(world.ports, ACCOUNT, {"email": "stranger@example.com"}, "key-1")
    assert refused.value.status == 409 and refused.value.code == "erased"
    with pytest.raises(ApiError) as refused:
        usecases.remove_suppression(world.ports, ACCOUNT, entry["_id"], {"reason": "x"}, "key-1")
    assert refused.value.status == 409 and refused.value.code == "erased"
    assert world.ports.store.erased_in_account(ACCOUNT, {stranger}) == {stranger}
    assert world.ports.store.erased_in_account("another-account", {stranger}) == set()


def test_naming_a_deleted_contact_and_another_address_does_not_make_that_address_held(world):
    """A throwaway contact, deleted, then an erasure naming its id and a
    stranger's address put the stranger platform-wide."""
    _gone(world)
    stranger = email_hash(normalise_email("stranger@example.com"), SALT)
    privacy.handle_privacy_request(world.runtime, _request(
        "erasure", {"contact_id": world.jane["_id"], "email_hash": stranger}))
    assert [(e["account_id"], e["reason"]) for e in
            world.db.suppressions.find({"email_hash": stranger})] == [(ACCOUNT, "erasure")]
    assert [e["account_id"] for e in world.db.suppressions.find({"email_hash": _hash()})] == [None]


def test_an_erasure_makes_an_entry_the_account_had_already_for_the_address_unliftable(world):
    """It kept its reason (manual), so the account could lift it and store
    the address again."""
    usecases.suppress(world.ports, ACCOUNT, email_hash(normalise_email("kept@example.com"), SALT),
                      "manual", "key-1")
    kept = email_hash(normalise_email("kept@example.com"), SALT)
    privacy.handle_privacy_request(world.runtime, _request("erasure", {"email_hash": kept}))
    [entry] = list(world.db.suppressions.find({"email_hash": kept}))
    assert entry["reason"] == "manual" and entry["erased"] is True
    with pytest.raises(ApiError) as refused:
        usecases.remove_suppression(world.ports, ACCOUNT, entry["_id"], {"reason": "x"}, "key-1")
    assert refused.value.code == "erased"
    with pytest.raises(ApiError) as refused:
        usecases.create_contact(world.ports, ACCOUNT, {"email": "kept@example.com"}, "key-1")
    assert refused.value.code == "erased"


def test_an_erasure_after_a_correction_suppresses_the_former_address_in_the_account(world):
    """Only the current address was suppressed: an old list re-imported
    brought the person back at the address they had before. One the account
    gave to another contact since is that contact's and stays mailable."""
    usecases.update_contact(world.ports, ACCOUNT, world.jane["_id"], {"email": "jane@new.example"})
    usecases.update_contact(world.ports, ACCOUNT, world.jane["_id"], {"email": "jane@third.example"})
    heir = usecases.create_contact(world.ports, ACCOUNT, {"email": "jane@new.example"}, "key-1")
    privacy.handle_privacy_request(world.runtime, _request("erasure", {"contact_id": world.jane["_id"]}))
    assert _answers(world.broker)[0]["status"] == "done"
    def entries(address):
        found = world.db.suppressions.find({"email_hash": email_hash(normalise_email(address), SALT)})
        return sorted((e["account_id"] or "platform", e["reason"]) for e in found)
    assert entries("jane@third.example") == [("platform", "erasure")]
    assert entries(EMAIL) == [(ACCOUNT, "erasure")]
    assert entries("jane@new.example") == []
    assert world.db.contacts.find_one({"_id": heir["_id"]})["suppressed"] is False
    with pytest.raises(ApiError) as refused:  # the old list, re-imported or re-created
        usecases.create_contact(world.ports, ACCOUNT, {"email": EMAIL}, "key-1")
    assert refused.value.code == "erased"


def test_a_redelivered_erasure_finds_it_done(world):
    request = _request("erasure", {"email_hash": _hash()})
    privacy.handle_privacy_request(world.runtime, request)
    privacy.handle_privacy_request(world.runtime, request)
    assert [a["status"] for a in _answers(world.broker)] == ["done", "not_found"]
    assert world.db.suppressions.count_documents({"email_hash": _hash()}) == 1


def test_rectification_is_applied_and_logged(world):
    privacy.handle_privacy_request(world.runtime, _request(
        "rectification", {"contact_id": world.jane["_id"]},
        changes={"name": "Jane Smith", "fields": {"city": "Porto"}}))
    [answer] = _answers(world.broker)
    assert answer["status"] == "done", answer
    contact = world.db.contacts.find_one({"_id": world.jane["_id"]})
    assert contact["name"] == "Jane Smith" and contact["fields"]["city"] == "Porto"
    log = list(world.db.consent.find({"contact_ids": world.jane["_id"], "action": "rectified"}))
    assert log and log[0]["fields"] == ["fields", "name"] and log[0]["request_id"] == "r1"


def test_an_invalid_rectification_fails_with_the_reason(world):
    privacy.handle_privacy_request(world.runtime, _request(
        "rectification", {"contact_id": world.jane["_id"]}, changes={"shoe_size": 40}))
    [answer] = _answers(world.broker)
    assert answer["status"] == "failed" and "shoe_size" in answer["detail"]


@pytest.mark.parametrize("name", [42, "x" * 201, "Jane\r\nBcc: x@example.com"])
def test_a_rectification_the_contacts_api_would_refuse_changes_nothing(world, name):
    """The privacy API takes any JSON value; stored, a numeric or overlong
    name failed the schema of every send job of the contact."""
    privacy.handle_privacy_request(world.runtime, _request(
        "rectification", {"contact_id": world.jane["_id"]}, changes={"name": name}))
    [answer] = _answers(world.broker)
    assert answer["status"] == "failed" and "name" in answer["detail"]
    assert world.db.contacts.find_one({"_id": world.jane["_id"]})["name"] == world.jane["name"]


def test_a_rectification_to_another_contacts_address_fails_and_does_not_block_the_topic(world):
    """FerretDB refuses that update with code 1, not 11000: it came out of
    the handler as an error, and the consumer retried it for ever, holding
    the privacy.requests partition and every request behind it."""
    privacy.handle_privacy_request(world.runtime, _request(
        "rectification", {"contact_id": world.jane["_id"]}, changes={"email": "bob@example.com"}))
    [answer] = _answers(world.broker)
    assert answer["status"] == "failed" and "email" in answer["detail"], answer
    assert world.db.contacts.find_one({"_id": world.jane["_id"]})["email"] == "Jane.Doe@example.com"


def test_restriction_takes_the_contact_out_of_every_audience(world):
    privacy.handle_privacy_request(world.runtime, _request("restriction", {"contact_id": world.jane["_id"]}))
    assert _answers(world.broker)[0]["status"] == "done"
    audience = [c["_id"] for batch in world.ports.store.stream_audience(ACCOUNT, [world.list["_id"]], None)
                for c in batch]
    assert audience == [world.other["_id"]]
    assert world.db.consent.count_documents({"contact_ids": world.jane["_id"], "action": "restricted"}) == 1
    assert world.db.contacts.find_one({"_id": world.jane["_id"]})["email"]  # not erased


def test_an_account_erasure_tombstones_and_deletes_every_contact_of_the_account(world):
    # more than one batch of the erasure's id cursor
    many = [{"_id": f"c-{i:05d}", "account_id": ACCOUNT, "email": f"r{i}@example.com"}
            for i in range(2100)]
    world.db.contacts.insert_many(many)
    usecases.create_contact(world.ports, "another-account", {"email": "keep@example.com"}, "key-2")
    account_ids = {c["_id"] for c in world.db.contacts.find({"account_id": ACCOUNT}, {"_id": 1})}
    world.broker.topics.clear()
    request = new_event("privacy.requested", source="sandesh.privacy", subject="r2",
                        account_id=ACCOUNT, data={"request_id": "r2", "kind": "erasure",
                                                  "subject": {"kind": "account"}})

    privacy.handle_privacy_request(world.runtime, request)

    tombstones = {r.key.decode() for r in world.broker.messages(CONTACTS_EVENTS) if r.value is None}
    assert tombstones == account_ids and len(account_ids) == 2102
    assert world.db.contacts.count_documents({"account_id": ACCOUNT}) == 0
    assert world.db.lists.count_documents({"account_id": ACCOUNT}) == 0
    assert world.db.contacts.count_documents({"account_id": "another-account"}) == 1
    assert [a["status"] for a in _answers(world.broker)] == ["done"]


def _gone(world):
    """Jane, deleted through the API (not erased)."""
    usecases.delete_contact(world.ports, world.jane)
    world.broker.topics.clear()


def _tracking(event_type, contact_id, **data):
    return new_event(event_type, source="sandesh.tracking", subject="k" * 32, account_id=ACCOUNT,
                     data={"campaign_id": "k" * 32, "job_id": "j" * 32, "contact_id": contact_id,
                           **data})


def test_a_complaint_or_unsubscribe_about_a_deleted_contact_still_suppresses_its_address(world):
    """They were dropped (no contact): the address, added again, was mailed
    without anyone's re-consent."""
    from services.contacts import handlers
    _gone(world)
    table = handlers.build_handlers(world.runtime)
    table["tracking.unsubscribed"](_tracking("tracking.unsubscribed", world.jane["_id"],
                                             list_id=None, method="one-click"))
    table["tracking.complained"](_tracking("tracking.complained", world.jane["_id"],
                                           feedback_type="abuse"))
    told = usecases.check_suppression(world.ports, ACCOUNT, {"email": EMAIL})
    assert told["suppressed"] is True
    scopes = {e["account_id"] for e in world.db["suppressions"].find({"email_hash": _hash()})}
    assert scopes == {ACCOUNT, None}
    logged = list(world.db["consent"].find({"contact_ids": world.jane["_id"],
                                            "action": "unsubscribe"}))
    assert logged and logged[0]["via"] == "one-click"


def test_an_erasure_by_address_of_a_deleted_contact_erases_its_consent_and_names_its_id(world):
    """It answered not_found: the consent entries (with the IP) stayed, and
    the sender and tracking kept the id in their records."""
    _gone(world)
    assert world.db["consent"].count_documents({"contact_ids": world.jane["_id"]}) > 0
    privacy.handle_privacy_request(world.runtime, _request("access", {"email_hash": _hash()}))
    [access] = _answers(world.broker)
    [shown] = access["export"]["deleted_contacts"]
    assert shown["id"] == world.jane["_id"] and shown["consent_log"][0]["ip"] == "192.0.2.1"
    world.broker.topics.clear()
    privacy.handle_privacy_request(world.runtime, _request("erasure", {"email_hash": _hash()}))
    [answer] = _answers(world.broker)
    assert answer["status"] == "done" and answer["contact_ids"] == [world.jane["_id"]]
    assert world.db["consent"].count_documents({"contact_ids": world.jane["_id"]}) == 0
    assert world.db["deleted_contacts"].count_documents({"_id": world.jane["_id"]}) == 0


def test_an_erasure_of_an_address_held_again_takes_its_deleted_contacts_too(world):
    """With a live contact of the address, the ones deleted through the API
    before were never looked at: their consent entries (with the IP) and
    their ids in the sender's and tracking's records outlived the erasure."""
    _gone(world)
    again = usecases.create_contact(world.ports, ACCOUNT, {
        "email": EMAIL, "consent": {"via": "form", "ip": "192.0.2.9"}}, "key-1")
    world.broker.topics.clear()
    ids = {world.jane["_id"], again["_id"]}
    privacy.handle_privacy_request(world.runtime, _request("access", {"email_hash": _hash()}))
    [access] = _answers(world.broker)
    assert set(access["contact_ids"]) == ids
    [shown] = access["export"]["deleted_contacts"]
    assert shown["id"] == world.jane["_id"] and shown["consent_log"][0]["ip"] == "192.0.2.1"
    world.broker.topics.clear()
    privacy.handle_privacy_request(world.runtime, _request("erasure", {"email_hash": _hash()}))
    [answer] = _answers(world.broker)
    assert answer["status"] == "done" and set(answer["contact_ids"]) == ids
    assert world.db["consent"].count_documents({"contact_ids": {"$in": sorted(ids)}}) == 0
    assert world.db["deleted_contacts"].count_documents({"account_id": ACCOUNT}) == 0
    assert world.db.contacts.count_documents({"_id": again["_id"]}) == 0


def test_a_complaint_about_mail_to_a_former_address_suppresses_that_address_only(world):
    """It suppressed the address the contact had moved to, platform-wide
    (no account could mail its owner again), and left the address that
    complained free to be added and mailed."""
    from services.contacts import domain, handlers
    old_hash = _hash()
    usecases.update_contact(world.ports, ACCOUNT, world.jane["_id"], {"email": "jane@new.example"})
    table = handlers.build_handlers(world.runtime)
    table["tracking.complained"](_tracking("tracking.complained", world.jane["_id"],
                                           feedback_type="abuse", contact_revision=0))
    table["tracking.bounced"](_tracking("tracking.bounced", world.jane["_id"],
                                        bounce_type="hard", contact_revision=0))
    new_hash = domain.address("jane@new.example", SALT).hash
    entries = {(e["account_id"], e["email_hash"]) for e in world.db["suppressions"].find()}
    assert (None, old_hash) in entries and (ACCOUNT, old_hash) in entries
    assert not [e for e in entries if e[1] == new_hash]
    jane = world.db["contacts"].find_one({"_id": world.jane["_id"]})
    assert jane["status"] == "active" and not jane.get("suppressed")
    # about a message sent since the change: the contact's own address
    table["tracking.complained"](_tracking("tracking.complained", world.jane["_id"],
                                           feedback_type="abuse", contact_revision=1))
    assert world.db["contacts"].find_one({"_id": world.jane["_id"]})["status"] == "complained"
