"""Fan-out against the real FerretDB (its records of what was produced) with
an in-memory broker: one job per recipient, resumable without producing
anyone twice, whatever order the database returns the audience in."""
import dataclasses
import json
import random

import pytest
from pymongo.errors import CursorNotFound

from services.contacts.fanout import Fanout, fan_out
from services.contacts.fanout_store import FanoutStore
from shared import topics
from shared.events import new_event
from shared.jobs import job_id_for
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer

CONTACTS = [{"_id": f"c{i:04d}", "email": f"user{i}@example.com", "name": f"User {i}",
             "fields": {"city": "Pune"}} for i in range(95)]


def stream_of(contacts, fail_after_batches=None, lose_cursor_after_batches=None):
    """The audience in a different order at every query, as a database
    without a sort may return it."""
    calls = {"queries": 0, "batches": 0}

    def stream(account_id, list_ids, segment_id, batch_size=10):
        calls["queries"] += 1
        order = list(contacts)
        random.Random(calls["queries"]).shuffle(order)
        for start in range(0, len(order), batch_size):
            if fail_after_batches is not None and calls["batches"] >= fail_after_batches:
                raise ConnectionError("database went away")
            if calls["queries"] == 1 and calls["batches"] == lose_cursor_after_batches:
                raise CursorNotFound("cursor id 42 not found")
            calls["batches"] += 1
            yield order[start:start + batch_size]
    stream.calls = calls
    return stream


def launched(campaign_id="camp-1", list_ids=("l1",)):
    return new_event("campaign.launched", source="campaigns", subject=campaign_id,
                     account_id="acct-1", data={
                         "campaign_id": campaign_id,
                         "template": {"version": 1, "subject": "s", "html": "<p/>"},
                         "sender": {"from_email": "a@example.com"},
                         "audience": {"list_ids": list(list_ids), "segment_id": None},
                         "limits": {}, "tracking": True})


def jobs(broker):
    return [json.loads(r.value)["data"] for r in broker.messages(topics.SEND_JOBS)]


def ready(broker):
    return [json.loads(r.value)["data"] for r in broker.messages(topics.CONTACTS_EVENTS)]


@pytest.fixture
def broker():
    return InMemoryBroker()


def test_one_job_per_recipient_then_audience_ready(mongo_db, broker):
    producer = EventProducer(broker.sink())
    size = fan_out(launched(), stream=stream_of(CONTACTS), store=FanoutStore(mongo_db),
                   producer=producer, batch_size=10)
    assert size == 95
    produced = jobs(broker)
    assert len(produced) == 95
    first = next(j for j in produced if j["contact_id"] == "c0000")
    assert first["job_id"] == job_id_for("camp-1", "c0000")
    assert first["recipient"] == {"email": "user0@example.com", "name": "User 0",
                                  "fields": {"city": "Pune"}}
    assert first["attempt"] == 0 and first["list_id"] == "l1"
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]
    # A redelivered launch produces nobody again, it re-announces the size.
    fan_out(launched(), stream=stream_of(CONTACTS), store=FanoutStore(mongo_db),
            producer=producer, batch_size=10)
    assert len(jobs(broker)) == 95
    assert ready(broker)[-1] == {"campaign_id": "camp-1", "audience_size": 95}


def test_a_restart_produces_only_who_was_not_produced(mongo_db, broker):
    producer = EventProducer(broker.sink())
    with pytest.raises(ConnectionError):
        fan_out(launched(), stream=stream_of(CONTACTS, fail_after_batches=4),
                store=FanoutStore(mongo_db), producer=producer, batch_size=10)
    assert len(jobs(broker)) == 40
    assert ready(broker) == []
    # the restart's query returns the audience in another order
    fan_out(launched(), stream=stream_of(CONTACTS), store=FanoutStore(mongo_db),
            producer=producer, batch_size=10)
    produced = jobs(broker)
    assert len(produced) == 95
    assert {j["contact_id"] for j in produced} == {c["_id"] for c in CONTACTS}
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]
    # done: the records of what was produced are not kept
    assert FanoutStore(mongo_db).produced_ids("camp-1") == set()


def test_a_lost_cursor_queries_again_without_loss_or_repeat(mongo_db, broker):
    stream = stream_of(CONTACTS, lose_cursor_after_batches=3)
    size = fan_out(launched(), stream=stream, store=FanoutStore(mongo_db),
                   producer=EventProducer(broker.sink()), batch_size=10)
    produced = jobs(broker)
    assert stream.calls["queries"] == 2
    assert size == 95 and len(produced) == 95
    assert {j["contact_id"] for j in produced} == {c["_id"] for c in CONTACTS}


def test_a_batch_that_was_not_flushed_is_not_recorded(mongo_db, broker):
    sink = broker.sink()
    producer = EventProducer(sink)
    calls = {"n": 0}
    real_flush = sink.flush

    def flaky_flush(timeout=None):
        calls["n"] += 1
        if calls["n"] == 3:
            sink.fail_next_flush = TimeoutError("broker unavailable")
        real_flush(timeout)
    sink.flush = flaky_flush
    with pytest.raises(TimeoutError):
        fan_out(launched(), stream=stream_of(CONTACTS), store=FanoutStore(mongo_db),
                producer=producer, batch_size=10)
    assert len(FanoutStore(mongo_db).produced_ids("camp-1")) == 20  # two batches flushed
    fan_out(launched(), stream=stream_of(CONTACTS), store=FanoutStore(mongo_db),
            producer=producer, batch_size=10)
    produced = jobs(broker)
    assert len(produced) == 95 and len({j["job_id"] for j in produced}) == 95


def test_several_lists_leave_list_id_empty_and_an_empty_audience_is_announced(mongo_db,
                                                                            broker):
    producer = EventProducer(broker.sink())
    fan_out(launched("camp-2", ("l1", "l2")), stream=stream_of(CONTACTS[:3]),
            store=FanoutStore(mongo_db), producer=producer)
    assert all(j["list_id"] is None for j in jobs(broker))
    fan_out(launched("camp-3"), stream=stream_of([]), store=FanoutStore(mongo_db),
            producer=producer)
    assert {"campaign_id": "camp-3", "audience_size": 0} in ready(broker)


def test_contacts_in_the_database_are_fanned_out_once_across_a_crash(mongo_db, broker):
    """The real audience query (unsorted) and the real records: a crash after a
    batch went out but before it was recorded sends that batch again, with
    the same job ids, and nobody else twice."""
    from services.contacts import domain
    from services.contacts.fanout import contacts_stream
    from services.contacts.store import ContactsStore, contact_document

    store = ContactsStore(mongo_db)
    audience = set()
    for i in range(45):
        address = domain.address(f"reader{i}@example.com", "salt")
        doc = contact_document("acct-1", address, name=f"Reader {i}", fields={},
                               at=domain.now(), origin={"via": "api"}, suppressed=(i % 9 == 0))
        store.insert_contact(doc)
        store.update_contact("acct-1", doc["_id"], domain.membership_update(
            "l1", domain.membership("subscribed", "api", domain.now())))
        if i % 9:
            audience.add(doc["_id"])

    class DiesOnThirdRecord(FanoutStore):
        calls = 0

        def record_batch(self, *args):
            DiesOnThirdRecord.calls += 1
            if DiesOnThirdRecord.calls == 3:
                raise ConnectionError("the database went away after the flush")
            super().record_batch(*args)

    producer = EventProducer(broker.sink())
    with pytest.raises(ConnectionError):
        fan_out(launched(), stream=contacts_stream(store), store=DiesOnThirdRecord(mongo_db),
                producer=producer, batch_size=10)
    assert len(jobs(broker)) == 30
    size = fan_out(launched(), stream=contacts_stream(store), store=FanoutStore(mongo_db),
                   producer=producer, batch_size=10)
    produced = jobs(broker)
    assert size == len(audience) == 40
    assert {j["contact_id"] for j in produced} == audience
    assert len(produced) == 50  # the unrecorded batch of 10, again
    for job in produced:
        assert job["job_id"] == job_id_for("camp-1", job["contact_id"])


def campaign_event(kind: str, second: int = 0, campaign_id="camp-1"):
    """campaign.paused / resumed / cancelled at 12:00:<second>, so that the
    order of pauses and resumes is the test's, not the clock's."""
    event = new_event(f"campaign.{kind}", source="campaigns", subject=campaign_id,
                      account_id="acct-1", data={"campaign_id": campaign_id})
    return dataclasses.replace(event, time=f"2026-12-04T12:00:{second:02d}.000+00:00")


def marking_stream(contacts, store: FanoutStore, after_batches: int, event):
    """The audience, with `event` marked (as the watcher does) once
    `after_batches` batches were handed out."""
    inner = stream_of(contacts)

    def stream(*args, **kwargs):
        for number, batch in enumerate(inner(*args, **kwargs)):
            if number == after_batches:
                store.mark(event)
            yield batch
    return stream


def test_a_cancel_stops_the_fan_out_before_its_next_batch(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    size = fan_out(launched(), stream=marking_stream(CONTACTS, store, 3, campaign_event("cancelled")),
                   store=store, producer=producer, batch_size=10)
    assert size == 30 and len(jobs(broker)) == 30
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 30, "cut_short": True}]
    assert store.produced_ids("camp-1") == set()   # finished: its records went
    # A redelivered launch produces nobody and says the same again.
    fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer,
            batch_size=10)
    assert len(jobs(broker)) == 30
    assert ready(broker)[-1] == ready(broker)[0]


def test_a_cancel_marked_before_the_fan_out_starts_produces_nobody(mongo_db, broker):
    store = FanoutStore(mongo_db)
    store.mark(campaign_event("cancelled"))
    size = fan_out(launched(), stream=stream_of(CONTACTS), store=store,
                   producer=EventProducer(broker.sink()), batch_size=10)
    assert size == 0 and jobs(broker) == []
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 0, "cut_short": True}]


def test_a_cancel_after_the_fan_out_changes_nothing_it_announces(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer,
            batch_size=10)
    store.mark(campaign_event("cancelled"))
    fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer,
            batch_size=10)
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}] * 2


def test_a_stopping_process_leaves_the_fan_out_between_batches_to_resume(mongo_db, broker):
    from shared.kafka import Interrupted
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    batches = {"n": 0}

    def stops_after_two_batches():
        batches["n"] += 1
        return batches["n"] > 2

    with pytest.raises(Interrupted):
        fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer,
                batch_size=10, should_stop=stops_after_two_batches)
    assert len(jobs(broker)) == 20 and len(store.produced_ids("camp-1")) == 20
    assert ready(broker) == []
    fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer,
            batch_size=10)
    produced = jobs(broker)
    assert len(produced) == 95 and {j["contact_id"] for j in produced} == \
        {c["_id"] for c in CONTACTS}
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]


def pausing_stream(contacts, store: FanoutStore, after_batches: int):
    return marking_stream(contacts, store, after_batches, campaign_event("paused", 10))


def test_a_pause_stops_the_fan_out_and_the_resume_goes_on_from_there(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    fanout = Fanout(store, pausing_stream(CONTACTS, store, after_batches=3), producer,
                    batch_size=10)
    assert fanout.launched(launched()) is None
    assert len(jobs(broker)) == 30 and ready(broker) == []   # nothing for senders to park
    fanout.stream = stream_of(CONTACTS)
    assert fanout.resumed(campaign_event("resumed", 20)) == 95
    produced = jobs(broker)
    assert len(produced) == 95 and {j["contact_id"] for j in produced} == \
        {c["_id"] for c in CONTACTS}
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]
    # A resume of a campaign whose fan-out is done does nothing.
    assert fanout.resumed(campaign_event("resumed", 30)) is None
    assert len(jobs(broker)) == 95 and len(ready(broker)) == 1


def test_a_paused_fan_out_that_is_cancelled_announces_what_it_produced(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    fanout = Fanout(store, pausing_stream(CONTACTS, store, after_batches=3), producer,
                    batch_size=10)
    fanout.launched(launched())
    assert fanout.cancelled(campaign_event("cancelled", 20)) == 30
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 30, "cut_short": True}]
    assert store.produced_ids("camp-1") == set()
    fanout.stream = stream_of(CONTACTS)
    assert fanout.resumed(campaign_event("resumed", 30)) is None   # over: nothing more
    assert fanout.cancelled(campaign_event("cancelled", 31)) is None
    assert len(jobs(broker)) == 30 and len(ready(broker)) == 1


def test_a_resume_that_is_older_than_the_recorded_pause_does_not_restart_the_fan_out(
        mongo_db, broker):
    """The watcher runs ahead of the main loop: by the time the main loop
    reads the first resume, the watcher may have recorded a second pause."""
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    fanout = Fanout(store, pausing_stream(CONTACTS, store, after_batches=3), producer,
                    batch_size=10)
    fanout.launched(launched())                                   # paused at 12:00:10
    store.mark(campaign_event("resumed", 20))   # the watcher saw the resume,
    store.mark(campaign_event("paused", 30))    # and a second pause
    fanout.stream = stream_of(CONTACTS)
    assert fanout.resumed(campaign_event("resumed", 20)) is None   # paused again since
    assert len(jobs(broker)) == 30
    assert fanout.resumed(campaign_event("resumed", 40)) == 95
    assert len(jobs(broker)) == 95


def test_the_pause_mark_keeps_the_latest_event_whatever_order_they_come_in(mongo_db):
    store, pause = FanoutStore(mongo_db), campaign_event("paused", 2)
    store.mark(pause)                            # before the fan-out started
    store.mark(campaign_event("resumed", 1))     # an older resume, read late
    assert store.marks("camp-1") == (False, True)
    store.mark(pause)                            # a redelivery
    store.mark(campaign_event("resumed", 3))
    assert store.marks("camp-1") == (False, False)
    store.mark(campaign_event("cancelled", 4))
    store.mark(campaign_event("cancelled", 5))   # one cancel mark per campaign
    assert store.marks("camp-1") == (True, False)
    assert store.marks_.count_documents({"campaign_id": "camp-1"}) == 4
    assert store.marks("camp-2") == (False, False)


def test_a_fan_out_started_before_the_audience_was_kept_goes_on_with_the_launch_s(
        mongo_db, broker):
    """A launch redelivered across the upgrade that began keeping the
    audience in the fan-out record: the launch's own audience is used."""
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    with pytest.raises(ConnectionError):
        fan_out(launched(), stream=stream_of(CONTACTS, fail_after_batches=2), store=store,
                producer=producer, batch_size=10)
    store.fanouts.update_one({"_id": "camp-1"}, {"$unset": {"audience": ""}})
    whole_list = stream_of(CONTACTS)

    def stream(account_id, list_ids, segment_id, batch_size):   # as contacts_stream does
        return whole_list(account_id, list_ids, segment_id, batch_size) if list_ids else iter(())
    assert fan_out(launched(), stream=stream, store=store, producer=producer,
                   batch_size=10) == 95
    assert {j["contact_id"] for j in jobs(broker)} == {c["_id"] for c in CONTACTS}
    assert store.fanouts.find_one({"_id": "camp-1"})["audience"] == \
        {"list_ids": ["l1"], "segment_id": None}
