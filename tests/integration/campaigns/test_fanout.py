"""Fan-out against the real FerretDB (its records of what was produced, its
lease, its marks) with an in-memory broker: one job per recipient,
resumable without producing anyone twice, whatever order the database
returns the audience in, and stopped by a cancel, a pause or the process
stopping."""
import dataclasses
import json
import random
import threading
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from pymongo.errors import CursorNotFound

from services.contacts.fanout import FanoutRequests, FanoutRunner, NeverStop
from services.contacts.fanout_store import FanoutStore, LeaseLost, utcnow
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


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def runner(store, stream, producer, batch_size=10, should_stop=NeverStop, owner="thread-a",
           **options):
    """A fan-out thread's work; after an error, claimable again at once."""
    return FanoutRunner(store, stream, producer, owner, batch_size, should_stop,
                        retry_seconds=options.pop("retry_seconds", 0), **options)


def fan_out(event, *, stream, store, producer, batch_size=10, should_stop=NeverStop) -> bool:
    """What the worker does with a launch: its main loop records it, then a
    fan-out thread claims and runs it (False: there was nothing to claim)."""
    FanoutRequests(store).launched(event)
    return runner(store, stream, producer, batch_size, should_stop).run_pending()


def test_a_segments_jobs_name_the_lists_it_reaches_its_contacts_through(mongo_db, broker):
    """A campaign to "member of News" mailed a reader who left News before
    their message went, because Offers kept them subscribed: the job
    named every list they were subscribed to, and the sender skips a job
    only once its contact has left all of them."""
    from services.contacts import domain
    from services.contacts.fanout import contacts_stream
    from services.contacts.store import ContactsStore, contact_document

    contacts = ContactsStore(mongo_db)
    news, offers = (contacts.insert_list({"_id": domain.new_id(), "account_id": "acct-1",
                                          "name": name, "created_at": domain.now()})["_id"]
                    for name in ("News", "Offers"))
    doc = contact_document("acct-1", domain.address("one@example.com", "salt"), name="One",
                           fields={}, at=domain.now(), origin={"via": "api"})
    contacts.insert_contact(doc)
    for list_id in (news, offers):
        contacts.update_contact("acct-1", doc["_id"], domain.membership_update(
            list_id, domain.membership("subscribed", "api", domain.now())))
    segment = contacts.insert_segment({"_id": domain.new_id(), "account_id": "acct-1",
                                       "name": "News", "definition": {
                                           "field": "list", "op": "member", "value": news}})
    event = launched(list_ids=())
    event.data["audience"]["segment_id"] = segment["_id"]
    store = FanoutStore(mongo_db)
    FanoutRequests(store).launched(event)
    assert runner(store, contacts_stream(contacts), EventProducer(broker.sink()),
                  segment_lists=contacts.segment_lists).run_pending()
    assert [job["via_list_ids"] for job in jobs(broker)] == [[news]]


def test_audience_ready_names_the_lists_and_segment_the_account_lacks(mongo_db, broker):
    from services.contacts import domain
    from services.contacts.fanout import audience_check, contacts_stream
    from services.contacts.store import ContactsStore, contact_document

    contacts = ContactsStore(mongo_db)
    real = contacts.insert_list({"_id": domain.new_id(), "account_id": "acct-1", "name": "Real",
                                 "created_at": domain.now()})["_id"]
    elsewhere = contacts.insert_list({"_id": domain.new_id(), "account_id": "acct-2",
                                      "name": "Theirs", "created_at": domain.now()})["_id"]
    doc = contact_document("acct-1", domain.address("one@example.com", "salt"), name="One",
                           fields={}, at=domain.now(), origin={"via": "api"})
    contacts.insert_contact(doc)
    contacts.update_contact("acct-1", doc["_id"], domain.membership_update(
        real, domain.membership("subscribed", "api", domain.now())))
    event = launched(list_ids=(real, "nosuchlist", elsewhere))
    event.data["audience"]["segment_id"] = "nosuchsegment"
    store = FanoutStore(mongo_db)
    FanoutRequests(store).launched(event)
    assert runner(store, contacts_stream(contacts), EventProducer(broker.sink()),
                  missing=audience_check(contacts)).run_pending()
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 1, "missing": {
        "list_ids": sorted(["nosuchlist", elsewhere]), "segment_id": "nosuchsegment"}}]


def test_one_job_per_recipient_then_audience_ready(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    recipients, runs = (metric("sandesh_fanout_recipients_total"),
                        metric("sandesh_fanout_runs_total", ended="done"))
    FanoutRequests(store).launched(launched())
    key_while_running = store.get("camp-1")["job_id_key"]
    assert fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer)
    assert metric("sandesh_fanout_recipients_total") - recipients == 95
    assert metric("sandesh_fanout_runs_total", ended="done") - runs == 1
    assert metric("sandesh_fanouts_running") == 0
    produced = jobs(broker)
    assert len(produced) == 95
    first = next(j for j in produced if j["contact_id"] == "c0000")
    assert first["job_id"] == job_id_for("camp-1", "c0000", key_while_running)
    assert first["recipient"] == {"email": "user0@example.com", "name": "User 0",
                                  "fields": {"city": "Pune"}}
    assert first["attempt"] == 0 and first["list_id"] == "l1"
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]
    done = store.get("camp-1")
    assert done["done"] and done["produced"] == 95 and done["lease_owner"] is None
    # Its job ids outlive it in records an erasure keeps: with the key gone,
    # nobody can compute them from a contact id again.
    assert done["job_id_key"] is None
    assert first["job_id"] != job_id_for("camp-1", "c0000")
    assert store.claims.count_documents({"campaign_id": "camp-1"}) == 0
    # A redelivered launch leaves nothing to claim: nobody is produced again.
    assert not fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer)
    assert len(jobs(broker)) == 95 and len(ready(broker)) == 1


def test_a_restart_produces_only_who_was_not_produced(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    with pytest.raises(ConnectionError):
        fan_out(launched(), stream=stream_of(CONTACTS, fail_after_batches=4), store=store,
                producer=producer)
    assert len(jobs(broker)) == 40
    assert ready(broker) == []
    assert store.get("camp-1")["lease_owner"] is None   # let go, for a retry
    # the retry's query returns the audience in another order
    assert runner(store, stream_of(CONTACTS), producer, owner="thread-b").run_pending()
    produced = jobs(broker)
    assert len(produced) == 95
    assert {j["contact_id"] for j in produced} == {c["_id"] for c in CONTACTS}
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]
    # done: the records of what was produced are not kept
    assert store.produced_ids("camp-1") == set()


def test_an_error_holds_the_fan_out_back_for_the_retry_delay(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    FanoutRequests(store).launched(launched())
    failing = runner(store, stream_of(CONTACTS, fail_after_batches=2), producer,
                     retry_seconds=30)
    with pytest.raises(ConnectionError):
        failing.run_pending()
    later = utcnow() + timedelta(seconds=31)
    assert not runner(store, stream_of(CONTACTS), producer).run_pending()
    assert runner(store, stream_of(CONTACTS), producer, clock=lambda: later).run_pending()
    assert len(jobs(broker)) == 95


def test_a_lost_cursor_queries_again_without_loss_or_repeat(mongo_db, broker):
    stream = stream_of(CONTACTS, lose_cursor_after_batches=3)
    fan_out(launched(), stream=stream, store=FanoutStore(mongo_db),
            producer=EventProducer(broker.sink()))
    produced = jobs(broker)
    assert stream.calls["queries"] == 2
    assert len(produced) == 95
    assert {j["contact_id"] for j in produced} == {c["_id"] for c in CONTACTS}
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]


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
    store = FanoutStore(mongo_db)
    with pytest.raises(TimeoutError):
        fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer)
    assert len(store.produced_ids("camp-1")) == 20  # two batches flushed
    runner(store, stream_of(CONTACTS), producer).run_pending()
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
                producer=producer)
    assert len(jobs(broker)) == 30
    runner(FanoutStore(mongo_db), contacts_stream(store), producer).run_pending()
    produced = jobs(broker)
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": len(audience)}]
    assert len(audience) == 40
    assert {j["contact_id"] for j in produced} == audience
    assert len(produced) == 50  # the unrecorded batch of 10, again
    ids = {}
    for job in produced:  # the same contact, the same job: the senders claim it once
        assert ids.setdefault(job["contact_id"], job["job_id"]) == job["job_id"]
    assert len(set(ids.values())) == 40


# -- the lease -------------------------------------------------------------------
def test_a_dead_thread_s_fan_out_is_taken_over_when_its_lease_expires(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    FanoutRequests(store).launched(launched())
    held = store.claim("dead-thread", 60, utcnow())   # it claimed, then its pod died
    assert held["lease_owner"] == "dead-thread" and held["attempts"] == 1
    assert not runner(store, stream_of(CONTACTS), producer).run_pending()
    expired = utcnow() + timedelta(seconds=61)
    assert runner(store, stream_of(CONTACTS), producer, clock=lambda: expired).run_pending()
    assert len(jobs(broker)) == 95
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]


def test_one_thread_of_many_wins_a_claim(mongo_db):
    store = FanoutStore(mongo_db)
    FanoutRequests(store).launched(launched())
    start, won = threading.Barrier(6), []

    def claim(owner):
        start.wait()
        if store.claim(owner, 60, utcnow()) is not None:
            won.append(owner)
    threads = [threading.Thread(target=claim, args=(f"thread-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1
    assert store.get("camp-1")["lease_owner"] == won[0]


def test_a_holder_that_overran_its_lease_stops_at_its_next_renewal(mongo_db):
    store = FanoutStore(mongo_db)
    FanoutRequests(store).launched(launched())
    now = utcnow()
    store.claim("slow-thread", 60, now)
    later = now + timedelta(seconds=61)
    assert store.claim("next-thread", 60, later)["lease_owner"] == "next-thread"
    with pytest.raises(LeaseLost):
        store.renew("camp-1", "slow-thread", later + timedelta(seconds=60))
    store.renew("camp-1", "next-thread", later + timedelta(seconds=60))


def test_a_resume_renews_its_lease_also_on_the_batches_it_skips(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    renewals = []

    class Counting(FanoutStore):
        def renew(self, *args):
            renewals.append(args[2])
            super().renew(*args)
    with pytest.raises(ConnectionError):
        fan_out(launched(), stream=stream_of(CONTACTS, fail_after_batches=8), store=store,
                producer=producer)
    runner(Counting(mongo_db), stream_of(CONTACTS), producer).run_pending()
    assert len(jobs(broker)) == 95
    assert len(renewals) == 10   # 8 skipped, 2 produced


def test_a_claim_whose_thread_died_before_taking_the_lease_is_claimed_again(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    FanoutRequests(store).launched(launched())
    now = utcnow()
    store.claims.insert_one({"_id": "camp-1:0", "owner": "died", "campaign_id": "camp-1",
                             "account_id": "acct-1", "at": now})
    assert store.claim("thread-a", 60, now + timedelta(seconds=30)) is None
    assert runner(store, stream_of(CONTACTS), producer,
                  clock=lambda: now + timedelta(seconds=61)).run_pending()
    assert len(jobs(broker)) == 95


def test_an_account_erased_mid_fan_out_stops_it_and_leaves_nothing(mongo_db, broker):
    """The erasure (services/contacts/privacy.py) runs in the consumer loop
    while a thread fans out, here while the fourth batch is flushed: the
    thread records that batch, stops at its next renewal, and deletes that
    record."""
    store, sink = FanoutStore(mongo_db), broker.sink()
    flushes, real_flush = {"n": 0}, sink.flush

    def erasing_flush(timeout=None):
        real_flush(timeout)
        flushes["n"] += 1
        if flushes["n"] == 4:
            for name in ("fanouts", "fanout_batches", "fanout_marks", "fanout_claims"):
                mongo_db[name].delete_many({"account_id": "acct-1"})
    sink.flush = erasing_flush
    fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=EventProducer(sink))
    assert len(jobs(broker)) == 40 and ready(broker) == []
    for name in ("fanouts", "fanout_batches", "fanout_marks", "fanout_claims"):
        assert mongo_db[name].count_documents({}) == 0, name


# -- what stops it ---------------------------------------------------------------
def campaign_event(kind: str, second: int = 0, campaign_id="camp-1"):
    """campaign.paused / resumed / cancelled at 12:00:<second>, so that the
    order of pauses and resumes is the test's, not the clock's."""
    event = new_event(f"campaign.{kind}", source="campaigns", subject=campaign_id,
                      account_id="acct-1", data={"campaign_id": campaign_id})
    return dataclasses.replace(event, time=f"2026-12-04T12:00:{second:02d}.000+00:00")


def marking_stream(contacts, store: FanoutStore, after_batches: int, event):
    """The audience, with `event` handled by the main loop once
    `after_batches` batches were handed out."""
    inner = stream_of(contacts)

    def stream(*args, **kwargs):
        for number, batch in enumerate(inner(*args, **kwargs)):
            if number == after_batches:
                FanoutRequests(store).marked(event)
            yield batch
    return stream


def test_a_cancel_stops_the_fan_out_before_its_next_batch(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    cancelled = metric("sandesh_fanout_runs_total", ended="cancelled")
    fan_out(launched(), stream=marking_stream(CONTACTS, store, 3, campaign_event("cancelled")),
            store=store, producer=producer)
    assert len(jobs(broker)) == 30
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 30, "cut_short": True}]
    assert store.produced_ids("camp-1") == set()   # finished: its records went
    assert metric("sandesh_fanout_runs_total", ended="cancelled") - cancelled == 1
    assert store.marks_.count_documents({"campaign_id": "camp-1"}) == 0
    # A redelivered launch or cancel leaves nothing to do.
    FanoutRequests(store).marked(campaign_event("cancelled"))
    assert not fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer)
    assert len(jobs(broker)) == 30 and len(ready(broker)) == 1


def test_a_cancel_recorded_before_the_fan_out_starts_produces_nobody(mongo_db, broker):
    store, requests = FanoutStore(mongo_db), FanoutRequests(FanoutStore(mongo_db))
    requests.launched(launched())
    requests.marked(campaign_event("cancelled"))
    assert runner(store, stream_of(CONTACTS), EventProducer(broker.sink())).run_pending()
    assert jobs(broker) == []
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 0, "cut_short": True}]


def test_a_cancel_after_the_fan_out_records_nothing(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer)
    FanoutRequests(store).marked(campaign_event("cancelled"))
    assert store.marks_.count_documents({}) == 0
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]


def test_a_cancel_that_comes_before_its_launch_stops_the_fan_out(mongo_db, broker):
    """A launch whose first flush failed is published again by the campaigns
    sweep, after a cancel the user made meanwhile. The cancel, with no
    fan-out to mark yet, was dropped: the whole audience was fanned out."""
    store, requests = FanoutStore(mongo_db), FanoutRequests(FanoutStore(mongo_db))
    requests.marked(campaign_event("cancelled"))
    requests.launched(launched())
    assert runner(store, stream_of(CONTACTS), EventProducer(broker.sink())).run_pending()
    assert jobs(broker) == []
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 0, "cut_short": True}]


def test_the_control_version_orders_pauses_and_resumes_whatever_their_times(mongo_db):
    """A staged pause published again by the sweep carries the time it went
    out, after the user's resume: by event time, the fan-out stayed paused
    for good and the campaign never heard its audience size."""
    store = FanoutStore(mongo_db)

    def versioned(kind, second, version):
        event = campaign_event(kind, second)
        return dataclasses.replace(event, data={**event.data, "version": version})

    store.mark(versioned("paused", 1, 1))
    store.mark(versioned("resumed", 2, 2))
    store.mark(versioned("paused", 9, 1))     # the sweep's copy: later, but older
    assert store.marks("camp-1") == (False, False)
    store.mark(versioned("paused", 10, 3))
    assert store.marks("camp-1") == (False, True)
    # a rolling upgrade: an older replica's resume, without a version, after it
    store.mark(campaign_event("resumed", 30))
    assert store.marks("camp-1") == (False, False)
    store.mark(versioned("paused", 40, 5))
    store.mark(versioned("resumed", 35, 4))   # read late, overtaken
    assert store.marks("camp-1") == (False, True)


def test_a_stopping_process_lets_go_of_the_fan_out_between_batches(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    assert fan_out(launched(), stream=stream_of(CONTACTS), store=store, producer=producer,
                   should_stop=lambda: len(jobs(broker)) >= 20)   # SIGTERM after two batches
    assert len(jobs(broker)) == 20 and len(store.produced_ids("camp-1")) == 20
    assert ready(broker) == []
    assert store.get("camp-1")["lease_owner"] is None   # another worker need not wait
    assert runner(store, stream_of(CONTACTS), producer, owner="other-worker").run_pending()
    produced = jobs(broker)
    assert len(produced) == 95 and {j["contact_id"] for j in produced} == \
        {c["_id"] for c in CONTACTS}
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]


def pausing_stream(contacts, store: FanoutStore, after_batches: int):
    return marking_stream(contacts, store, after_batches, campaign_event("paused", 10))


def test_a_pause_stops_the_fan_out_and_the_resume_goes_on_from_there(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    fan_out(launched(), stream=pausing_stream(CONTACTS, store, after_batches=3),
            store=store, producer=producer)
    assert len(jobs(broker)) == 30 and ready(broker) == []   # nothing for senders to park
    paused = store.get("camp-1")
    assert paused["paused_after"] == 30 and paused["lease_owner"] is None
    assert not runner(store, stream_of(CONTACTS), producer).run_pending()   # held back
    FanoutRequests(store).marked(campaign_event("resumed", 20))
    assert runner(store, stream_of(CONTACTS), producer).run_pending()
    produced = jobs(broker)
    assert len(produced) == 95 and {j["contact_id"] for j in produced} == \
        {c["_id"] for c in CONTACTS}
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]
    # A resume of a campaign whose fan-out is done does nothing.
    FanoutRequests(store).marked(campaign_event("resumed", 30))
    assert not runner(store, stream_of(CONTACTS), producer).run_pending()
    assert len(jobs(broker)) == 95 and len(ready(broker)) == 1


def test_a_pause_before_the_fan_out_started_shows_it_stopped_at_nothing(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    requests = FanoutRequests(store)
    requests.launched(launched())
    requests.marked(campaign_event("paused", 10))
    assert runner(store, stream_of(CONTACTS), producer).run_pending()
    assert store.get("camp-1")["paused_after"] == 0 and jobs(broker) == []
    assert not runner(store, stream_of(CONTACTS), producer).run_pending()   # held back
    requests.marked(campaign_event("resumed", 20))
    assert runner(store, stream_of(CONTACTS), producer).run_pending()
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]


def test_a_paused_fan_out_that_is_cancelled_announces_what_it_produced(mongo_db, broker):
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    fan_out(launched(), stream=pausing_stream(CONTACTS, store, after_batches=3),
            store=store, producer=producer)
    FanoutRequests(store).marked(campaign_event("cancelled", 20))
    assert runner(store, stream_of(CONTACTS), producer).run_pending()
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 30, "cut_short": True}]
    assert store.produced_ids("camp-1") == set()
    FanoutRequests(store).marked(campaign_event("resumed", 30))   # over: nothing more
    assert not runner(store, stream_of(CONTACTS), producer).run_pending()
    assert len(jobs(broker)) == 30 and len(ready(broker)) == 1


def test_a_resume_older_than_the_latest_pause_does_not_restart_the_fan_out(mongo_db, broker):
    """The fan-out thread reads marks the main loop recorded in any order a
    redelivery may bring them: the latest by event time decides."""
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    fan_out(launched(), stream=pausing_stream(CONTACTS, store, after_batches=3),
            store=store, producer=producer)                       # paused at 12:00:10
    store.mark(campaign_event("paused", 30))
    FanoutRequests(store).marked(campaign_event("resumed", 20))
    assert not runner(store, stream_of(CONTACTS), producer).run_pending()   # paused since
    assert len(jobs(broker)) == 30
    FanoutRequests(store).marked(campaign_event("resumed", 40))
    assert runner(store, stream_of(CONTACTS), producer).run_pending()
    assert len(jobs(broker)) == 95


def test_the_pause_mark_keeps_the_latest_event_whatever_order_they_come_in(mongo_db):
    store, pause = FanoutStore(mongo_db), campaign_event("paused", 2)
    store.mark(pause)
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


# -- records an older version left ----------------------------------------------------
def test_a_fan_out_the_main_loop_ran_before_the_upgrade_is_taken_over(mongo_db, broker):
    """A fan-out that an older version ran inside the main loop, cut off by
    the deploy: its record keeps no lease (and, older still, no audience).
    The launch, redelivered because it was never committed, makes it
    claimable with the launch's own audience."""
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    with pytest.raises(ConnectionError):
        fan_out(launched(), stream=stream_of(CONTACTS, fail_after_batches=2), store=store,
                producer=producer)
    store.fanouts.update_one({"_id": "camp-1"}, {"$unset": {
        "audience": "", "lease_owner": "", "lease_until": "", "attempts": ""}})
    store.claims.delete_many({})   # an older version claimed nothing
    assert not runner(store, stream_of(CONTACTS), producer).run_pending()
    whole_list = stream_of(CONTACTS)

    def stream(account_id, list_ids, segment_id, batch_size):   # as contacts_stream does
        return whole_list(account_id, list_ids, segment_id, batch_size) if list_ids else iter(())
    assert fan_out(launched(), stream=stream, store=store, producer=producer)
    assert {j["contact_id"] for j in jobs(broker)} == {c["_id"] for c in CONTACTS}
    assert len(jobs(broker)) == 95
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]
    assert store.get("camp-1")["audience"] == {"list_ids": ["l1"], "segment_id": None}


def test_a_fan_out_paused_before_the_upgrade_is_taken_over_at_the_resume(mongo_db, broker):
    """An older version committed the launch of a fan-out a pause stopped:
    no launch comes again, the resume makes it claimable."""
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    fan_out(launched(), stream=pausing_stream(CONTACTS, store, after_batches=3),
            store=store, producer=producer)
    store.fanouts.update_one({"_id": "camp-1"}, {"$unset": {
        "lease_owner": "", "lease_until": "", "attempts": ""}})
    store.claims.delete_many({})
    FanoutRequests(store).marked(campaign_event("resumed", 20))
    assert runner(store, stream_of(CONTACTS), producer).run_pending()
    assert len(jobs(broker)) == 95
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]


def test_a_fan_out_started_before_job_id_keys_goes_on_with_the_plain_ids(mongo_db, broker):
    """Its first jobs went out with the plain hash; a key now would give the
    contacts of a batch produced twice two job ids, and the senders would
    send them twice."""
    store, producer = FanoutStore(mongo_db), EventProducer(broker.sink())
    FanoutRequests(store).launched(launched())
    store.fanouts.update_one({"_id": "camp-1"}, {"$unset": {"job_id_key": ""}})  # the older record
    with pytest.raises(ConnectionError):
        fan_out(launched(), stream=stream_of(CONTACTS, fail_after_batches=2), store=store,
                producer=producer)
    store.batches.delete_many({})    # as if its last batch was never recorded
    produced_before = {j["contact_id"]: j["job_id"] for j in jobs(broker)}
    assert runner(store, stream_of(CONTACTS), producer).run_pending()
    for job in jobs(broker):
        assert job["job_id"] == produced_before.get(job["contact_id"], job["job_id"])
        assert job["job_id"] == job_id_for("camp-1", job["contact_id"])


def test_an_address_gets_one_job_though_its_contact_came_back_under_another_id(mongo_db, broker):
    """Deleted and imported again between two runs of the fan-out (a pause,
    a handover), the address's new contact id was not among those produced:
    it got a second message, and the audience counted one address twice."""
    people = [{**c, "email_hash": f"h{i:04d}"} for i, c in enumerate(CONTACTS)]
    store = FanoutStore(mongo_db)
    producer = EventProducer(broker.sink())
    with pytest.raises(ConnectionError):
        fan_out(launched(), stream=stream_of(people, fail_after_batches=4), store=store,
                producer=producer)
    first = {j["contact_id"] for j in jobs(broker)}
    back = next(c for c in people if c["_id"] in first)
    again = [c for c in people if c is not back] + [{**back, "_id": "c-new"}]
    runner(store, stream_of(again), producer).run_pending()
    produced = jobs(broker)
    assert "c-new" not in {j["contact_id"] for j in produced}
    assert len(produced) == len(people) == ready(broker)[0]["audience_size"]
    twice = [{**people[0], "_id": "twin"}, *people[:5]]   # one read, one address twice
    fan_out(launched("camp-2"), stream=stream_of(twice), store=store, producer=producer)
    second = {j["contact_id"] for j in jobs(broker) if j["campaign_id"] == "camp-2"}
    assert len(second) == 5 and len(second & {"twin", people[0]["_id"]}) == 1
