"""A data-subject request against the real Kafka and FerretDB: emitted on a
topic (unique per test), answered on another, completed only when every
service answered, whatever order, delay or redelivery."""
import functools
import json
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest

from services.privacy import usecases
from services.privacy.handlers import build_handlers
from services.privacy.store import PrivacyStore
from shared.config import Config
from shared.events import new_event
from shared.http.internal_auth import Identity
from shared.kafka.factory import consumer_loop, event_producer
from shared.pii import email_hash, normalise_email
from tests.kafka_reader import TopicReader
from tests.loops import run_until

SALT = "salt-for-tests"
RESPONDERS = ["campaigns", "contacts", "sender", "tracking"]


@pytest.fixture
def config(kafka_bootstrap):
    return Config(kafka_bootstrap=kafka_bootstrap, pii_salt=SALT, privacy_responders=RESPONDERS,
                  privacy_silent_after_hours=24)


@pytest.fixture
def producer(config):
    p = event_producer(config, "privacy-test")
    yield p
    p.sink.close()


def _loop(config, mongo_db, acks_topic, group, producer=None, requests_topic="unused"):
    # Subscribing before the new topic's metadata has reached the client
    # can leave the group with no partitions for minutes: the caller
    # publishes first, so the metadata is there.
    runtime = SimpleNamespace(db=mongo_db, producer=lambda: producer)
    return consumer_loop(config, "privacy", group, [acks_topic],
                         build_handlers(runtime, requests_topic=requests_topic))


_run_until = functools.partial(run_until, deadline_s=60.0)


def _answer(producer, topic, request, service, status="done", export=None, contact_ids=None):
    data = {"request_id": request["_id"], "service": service, "status": status}
    if contact_ids:
        data["contact_ids"] = contact_ids
    if export is not None:
        data["export"] = export
    producer.publish(topic, new_event("privacy.answered", source=f"sandesh.{service}",
                                      subject=request["_id"], account_id=request["account_id"],
                                      data=data), key=request["_id"])
    producer.flush()


def _read_all(bootstrap, topic, expect):
    """The raw values on the topic, once there are at least `expect`."""
    with TopicReader(bootstrap, topic, decode=lambda value: value) as reader:
        return reader.read(lambda values: len(values) >= expect, timeout=30)


def test_an_erasure_by_address_travels_as_a_hash_and_completes_when_all_answered(
        config, producer, mongo_db, make_topic, unique):
    requests_topic, acks_topic = make_topic("requests"), make_topic("acks")
    store = PrivacyStore(mongo_db)
    identity = Identity("acct-" + unique, "key-1")
    request = usecases.create_request(store, producer, config, identity,
                                      {"kind": "erasure", "subject": {"email": " Jane.Doe@Example.COM "},
                                       "reason": "asked by email"}, topic=requests_topic)
    assert request["status"] == "pending" and request["responders"] == RESPONDERS

    [raw] = _read_all(config.kafka_bootstrap, requests_topic, 1)
    assert b"Jane.Doe" not in raw and b"example.com" not in raw.lower()
    event = json.loads(raw)
    assert event["type"] == "privacy.requested" and event["accountid"] == identity.account_id
    assert event["data"]["subject"]["email_hash"] == email_hash(
        normalise_email("Jane.Doe@example.com"), SALT)

    # contacts turns the hash into an id; the others wait for the resolved ask
    _answer(producer, acks_topic, request, "contacts", contact_ids=["c-jane"])
    loop = _loop(config, mongo_db, acks_topic, "g-" + unique, producer, requests_topic)
    try:
        assert _run_until(loop, lambda: store.get_request(None, request["_id"]).get("resolved"))
        [_, raw_again] = _read_all(config.kafka_bootstrap, requests_topic, 2)
        again = json.loads(raw_again)["data"]
        assert again["resolved"] is True and again["subject"]["contact_id"] == "c-jane"
        for service in ["campaigns", "sender", "tracking"]:
            _answer(producer, acks_topic, request, service,
                    status="not_found" if service == "campaigns" else "done")
        assert _run_until(loop, lambda: store.get_request(None, request["_id"])["status"] == "complete")
    finally:
        loop.shutdown()
    done = store.get_request(identity.account_id, request["_id"])
    assert set(done["answers"]) == set(RESPONDERS)
    assert done["answers"]["campaigns"]["status"] == "not_found"
    assert done["completed_at"] is not None
    assert "Jane" not in json.dumps(done, default=str)


def test_a_service_that_was_down_answers_later_and_the_request_completes(
        config, producer, mongo_db, make_topic, unique):
    requests_topic, acks_topic = make_topic("requests"), make_topic("acks")
    store = PrivacyStore(mongo_db)
    identity = Identity("acct-" + unique, "key-1")
    request = usecases.create_request(store, producer, config, identity,
                                      {"kind": "erasure", "subject": {"contact_id": "c-42"}},
                                      topic=requests_topic)
    group = "g-" + unique
    for service in ["campaigns", "contacts", "tracking"]:  # the sender is down
        _answer(producer, acks_topic, request, service)
    loop = _loop(config, mongo_db, acks_topic, group)
    try:
        assert _run_until(loop, lambda: len(store.get_request(None, request["_id"])["answers"]) == 3)
    finally:
        loop.shutdown()
    assert store.get_request(None, request["_id"])["status"] == "pending"
    from datetime import timedelta
    silent = usecases.overdue_requests(store, identity.account_id, timedelta(0))
    assert [r["_id"] for r in silent] == [request["_id"]]

    # the sender comes back and answers; the privacy worker restarts too
    _answer(producer, acks_topic, request, "sender")
    loop = _loop(config, mongo_db, acks_topic, group)
    try:
        assert _run_until(loop, lambda: store.get_request(None, request["_id"])["status"] == "complete")
    finally:
        loop.shutdown()
    assert usecases.overdue_requests(store, identity.account_id, timedelta(0)) == []


def test_redelivered_answers_change_nothing(config, producer, mongo_db, make_topic, unique):
    requests_topic, acks_topic = make_topic("requests"), make_topic("acks")
    store = PrivacyStore(mongo_db)
    identity = Identity("acct-" + unique, "key-1")
    request = usecases.create_request(store, producer, config, identity,
                                      {"kind": "access", "subject": {"contact_id": "c-7"}},
                                      topic=requests_topic)
    for service in RESPONDERS:
        _answer(producer, acks_topic, request, service, export={"held": [service]})
    loop = _loop(config, mongo_db, acks_topic, "g-" + unique)
    try:
        assert _run_until(loop, lambda: store.get_request(None, request["_id"])["status"] == "complete")
        first = store.get_request(None, request["_id"])
        for service in RESPONDERS:   # every answer again
            _answer(producer, acks_topic, request, service, export={"held": [service]})
        _answer(producer, acks_topic, request, "contacts")  # and one more after completion
        assert _run_until(loop, lambda: False, deadline_s=3) is False
    finally:
        loop.shutdown()
    again = store.get_request(None, request["_id"])
    assert again["completed_at"] == first["completed_at"]
    assert again["answers"] == first["answers"]
    assert store.export_parts(request["_id"]) == {s: {"held": [s]} for s in RESPONDERS}
    completions = list(mongo_db.audit.find({"action": "access.completed"}))
    assert len(completions) == 1


def test_an_answer_for_another_accounts_request_is_ignored(config, producer, mongo_db,
                                                          make_topic, unique):
    store = PrivacyStore(mongo_db)
    request = usecases.create_request(store, producer, config, Identity("acct-a", "k"),
                                      {"kind": "erasure", "subject": {"contact_id": "c-1"}},
                                      topic=make_topic("requests"))
    forged = {**request, "account_id": "acct-b"}
    assert usecases.record_answer(store, "acct-b", {"request_id": forged["_id"],
                                                    "service": "contacts", "status": "done"}) is None
    assert store.get_request(None, request["_id"])["answers"] == {}


def test_the_privacy_worker_erases_its_own_data_of_a_deleted_account_and_an_erased_contact(
        config, producer, mongo_db, make_topic, unique):
    """The privacy service's own part of an erasure is done by its worker
    from privacy.requested: the API call that records the request stays
    quick however much the account had."""
    requests_topic = make_topic("requests")
    store = PrivacyStore(mongo_db)
    gone, kept = "acct-gone-" + unique, "acct-kept-" + unique
    for account in (gone, kept):
        store.db.agg_markers.insert_many([{"_id": f"{account}|{n}", "account_id": account,
                                           "contact_id": f"c{n}"} for n in range(3)])
        store.db.notice_acks.insert_one({"_id": f"{account}|ack", "account_id": account,
                                         "subject": "u1", "policy_id": "p1", "at": time.time()})
    deleted = usecases.create_request(store, producer, config, Identity(gone, "key-1"),
                                      {"kind": "erasure", "subject": {"account": True}},
                                      topic=requests_topic)
    erased = usecases.create_request(store, producer, config, Identity(kept, "key-1"),
                                     {"kind": "erasure", "subject": {"contact_id": "c1"}},
                                     topic=requests_topic)
    runtime = SimpleNamespace(db=mongo_db, producer=lambda: producer)
    loop = consumer_loop(config, "privacy", "g-" + unique, [requests_topic],
                         build_handlers(runtime, requests_topic=requests_topic))

    def left(account):
        return {c: store.db[c].count_documents({"account_id": account})
                for c in ("agg_markers", "notice_acks")}

    try:
        assert _run_until(loop, lambda: left(gone) == {"agg_markers": 0, "notice_acks": 0}
                          and store.db.agg_markers.count_documents({"contact_id": "c1"}) == 0)
    finally:
        loop.shutdown()
    assert left(kept) == {"agg_markers": 2, "notice_acks": 1}   # only the erased contact went
    assert {r["_id"] for r in store.db.requests.find()} >= {deleted["_id"], erased["_id"]}


class _BrokerAway:
    """A producer whose flush times out (the event may still go out later)."""

    def publish(self, topic, event, key=None):
        pass

    def flush(self, timeout=None):
        raise TimeoutError("flush timed out")


def test_a_request_the_broker_did_not_take_is_kept_and_sent_again_by_the_worker(
        config, producer, mongo_db, make_topic, unique):
    """It was deleted and answered 503 ("nothing was recorded"), though the
    producer went on delivering it: contacts erased the person and answered
    a request nobody knew, and the retry by address found no one and
    completed, leaving the id in the sender's and tracking's records."""
    requests_topic = make_topic("requests")
    store = PrivacyStore(mongo_db)
    request = usecases.create_request(store, _BrokerAway(), config, Identity("acct-" + unique, "k"),
                                      {"kind": "erasure", "subject": {"contact_id": "c-9"}},
                                      topic=requests_topic)
    kept = store.get_request(None, request["_id"])
    assert kept["status"] == "pending" and kept["unpublished"] is True
    assert usecases.publish_unpublished(store, producer, timedelta(0), topic=requests_topic) == 1
    [raw] = _read_all(config.kafka_bootstrap, requests_topic, 1)
    assert json.loads(raw)["data"]["request_id"] == request["_id"]
    assert "unpublished" not in store.get_request(None, request["_id"])
    assert usecases.publish_unpublished(store, producer, timedelta(0), topic=requests_topic) == 0
