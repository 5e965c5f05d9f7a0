"""Fan-out against the real FerretDB (checkpoints) with an in-memory broker:
one job per recipient, resumable without producing anyone twice."""
import json

import pytest

from services.contacts.fanout import FanoutStore, fan_out
from shared import topics
from shared.events import new_event
from shared.jobs import job_id_for
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer

CONTACTS = [{"_id": f"c{i:04d}", "email": f"user{i}@example.com", "name": f"User {i}",
             "fields": {"city": "Pune"}} for i in range(95)]


def stream_of(contacts, fail_after_batches=None):
    calls = {"batches": 0}

    def stream(account_id, list_ids, segment_id, after=None, batch_size=10):
        rest = [c for c in contacts if after is None or c["_id"] > after]
        for start in range(0, len(rest), batch_size):
            if fail_after_batches is not None and calls["batches"] >= fail_after_batches:
                raise ConnectionError("database went away")
            calls["batches"] += 1
            yield rest[start:start + batch_size]
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


def test_a_restart_resumes_after_the_checkpoint(mongo_db, broker):
    producer = EventProducer(broker.sink())
    with pytest.raises(ConnectionError):
        fan_out(launched(), stream=stream_of(CONTACTS, fail_after_batches=4),
                store=FanoutStore(mongo_db), producer=producer, batch_size=10)
    assert len(jobs(broker)) == 40
    assert ready(broker) == []
    fan_out(launched(), stream=stream_of(CONTACTS), store=FanoutStore(mongo_db),
            producer=producer, batch_size=10)
    produced = jobs(broker)
    assert len(produced) == 95
    assert len({j["job_id"] for j in produced}) == 95
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]


def test_a_batch_that_was_not_flushed_is_not_checkpointed(mongo_db, broker):
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
    assert FanoutStore(mongo_db).fanouts.find_one({"_id": "camp-1"})["checkpoint"] == "c0019"
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
