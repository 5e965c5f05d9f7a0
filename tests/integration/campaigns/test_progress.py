"""Progress: delivery events counted once per job however often they come,
the campaign completes once when every job is accounted for."""
import threading

from services.campaigns import usecases
from services.campaigns.handlers import ports_for
from shared import topics
from shared.events import new_event
from shared.jobs import job_id_for

from tests.integration.campaigns.conftest import published
from tests.integration.campaigns.test_campaigns_api import ready_campaign


def delivery(account_id, campaign_id, contact, outcome, attempt=0, **extra):
    job_id = job_id_for(campaign_id, contact)
    data = {"job_id": job_id, "campaign_id": campaign_id, "contact_id": contact,
            "attempt": attempt, **extra}
    if outcome == "skipped":
        data.setdefault("reason", "suppressed")
    if outcome == "bounced":
        data.setdefault("bounce_type", "hard")
    return new_event(f"delivery.{outcome}", source="sender", subject=job_id,
                     account_id=account_id, data=data)


def audience_ready(account_id, campaign_id, size):
    return new_event("audience.ready", source="contacts", subject=campaign_id,
                     account_id=account_id, data={"campaign_id": campaign_id,
                                                  "audience_size": size})


def launched(client):
    campaign, _ = ready_campaign(client)
    client.post(f"/api/v1/campaigns/{campaign['id']}/send")
    return campaign["id"]


def view(client, campaign_id):
    return client.get(f"/api/v1/campaigns/{campaign_id}").get_json()


def completed_events(broker):
    return [e for e in published(broker, topics.CAMPAIGNS_EVENTS)
            if e["type"] == "campaign.completed"]


def test_redelivered_events_count_once_and_the_campaign_completes_once(client, broker, ports):
    campaign_id = launched(client)
    account = client.account_id
    events = [delivery(account, campaign_id, "c1", "deferred", attempt=0),
              delivery(account, campaign_id, "c1", "deferred", attempt=1),
              delivery(account, campaign_id, "c1", "sent", attempt=2, size_bytes=1000),
              delivery(account, campaign_id, "c2", "sent", size_bytes=500),
              delivery(account, campaign_id, "c3", "failed"),
              delivery(account, campaign_id, "c4", "skipped"),
              delivery(account, campaign_id, "c2", "bounced")]
    for event in events + events:                       # everything redelivered
        usecases.record_delivery(ports, event)
    progress = view(client, campaign_id)["progress"]
    assert progress["audience_size"] is None and progress["queued"] is None
    assert (progress["sent"], progress["failed"], progress["skipped"]) == (2, 1, 1)
    assert (progress["deferred"], progress["bounced"]) == (2, 1)
    assert view(client, campaign_id)["status"] == "sending"
    usecases.record_audience(ports, audience_ready(account, campaign_id, 5))
    assert view(client, campaign_id)["progress"]["queued"] == 1
    assert view(client, campaign_id)["status"] == "sending"
    usecases._last_check.clear()
    usecases.record_delivery(ports, delivery(account, campaign_id, "c5", "sent", size_bytes=10))
    done = view(client, campaign_id)
    assert done["status"] == "sent" and done["completed_at"]
    assert done["progress"]["percent"] == 100.0 and done["progress"]["queued"] == 0
    [completed] = completed_events(broker)
    assert completed["data"]["counts"]["sent"] == 3
    assert completed["data"]["counts"]["audience_size"] == 5
    # A bounce after completion changes the bounce count, not the status.
    usecases.record_delivery(ports, delivery(account, campaign_id, "c1", "bounced"))
    assert view(client, campaign_id)["progress"]["bounced"] == 2
    usage = client.get("/api/v1/usage").get_json()
    assert usage["mailings_sent"] == 3 and usage["mailings_bytes"] == 1510
    assert usage["campaigns"] == 1 and usage["templates"] == 1


def test_an_empty_audience_completes_as_sent(client, broker, ports):
    campaign_id = launched(client)
    usecases.record_audience(ports, audience_ready(client.account_id, campaign_id, 0))
    assert view(client, campaign_id)["status"] == "sent"
    assert len(completed_events(broker)) == 1


def test_an_audience_naming_what_the_account_lacks_says_so_on_the_campaign(client, ports):
    """A list id that does not exist made a campaign "sent" to nobody, with
    nothing to say why."""
    campaign_id = launched(client)
    assert view(client, campaign_id)["audience_missing"] is None
    event = audience_ready(client.account_id, campaign_id, 0)
    event.data["missing"] = {"list_ids": ["0123456789abcdef0123456789abcdef"]}
    usecases.record_audience(ports, event)
    done = view(client, campaign_id)
    assert done["status"] == "sent"
    assert done["audience_missing"] == {"list_ids": ["0123456789abcdef0123456789abcdef"]}


def test_test_sends_count_nowhere(client, ports):
    campaign_id = launched(client)
    usecases.record_delivery(ports, delivery(client.account_id, campaign_id, "t", "sent",
                                             test=True))
    assert view(client, campaign_id)["progress"]["sent"] == 0


def test_concurrent_completion_checks_complete_once(client, broker, app):
    campaign_id = launched(client)
    account = client.account_id
    workers = [ports_for(app.extensions["runtime"]) for _ in range(4)]
    for index, contact in enumerate(["a", "b", "c", "d"]):
        usecases.record_delivery(workers[index], delivery(account, campaign_id, contact, "sent"))
    # The audience size lands without a check; then four replicas' sweeps
    # find the campaign complete at the same moment.
    workers[0].progress.set_audience_size(campaign_id, account, 4)
    assert view(client, campaign_id)["status"] == "sending"
    failures = []

    def sweep(worker):
        try:
            usecases.sweep(worker)
        except Exception as exc:  # a sweep that fails skips every other campaign that round
            failures.append(exc)
    threads = [threading.Thread(target=sweep, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert view(client, campaign_id)["status"] == "sent"
    assert len(completed_events(broker)) == 1


def test_a_crash_between_job_state_and_counter_is_repaired_by_the_sweep(client, broker, ports):
    campaign_id = launched(client)
    account = client.account_id
    usecases.record_audience(ports, audience_ready(account, campaign_id, 2))
    usecases.record_delivery(ports, delivery(account, campaign_id, "x", "sent"))
    # The job state was written, then the process died before its counter.
    ports.jobs.settle(job_id_for(campaign_id, "y"), campaign_id, "failed")
    assert view(client, campaign_id)["status"] == "sending"
    stalled = usecases.utcnow() + usecases.STALL * 2
    usecases.sweep(ports, now=stalled)
    done = view(client, campaign_id)
    assert done["status"] == "sent"
    assert (done["progress"]["sent"], done["progress"]["failed"]) == (1, 1)


def test_buffered_outcomes_count_once_within_and_across_flushes(client, ports):
    campaign_id = launched(client)
    account = client.account_id
    batch = [delivery(account, campaign_id, c, "sent", size_bytes=10) for c in "abc"]
    for event in batch + batch[:1]:                    # a duplicate inside one flush
        usecases.record_delivery(ports, event, flush=False)
    assert view(client, campaign_id)["progress"]["sent"] == 0   # nothing written yet
    usecases.flush_progress(ports)
    for event in batch:                                # redelivered after the commit
        usecases.record_delivery(ports, event, flush=False)
    usecases.record_delivery(ports, delivery(account, campaign_id, "a", "bounced"), flush=False)
    usecases.flush_progress(ports)
    progress = view(client, campaign_id)["progress"]
    assert (progress["sent"], progress["bounced"]) == (3, 1)
    assert client.get("/api/v1/usage").get_json()["mailings_bytes"] == 30


def test_a_bounce_reported_to_tracking_counts_in_the_campaigns_progress(client, broker, ports):
    """Bounces arrive after acceptance, as DSNs to tracking, which announces
    tracking.bounced; no sender announces one, so progress said 0 bounced."""
    from services.campaigns.handlers import TOPICS, build_handlers
    from shared.tracking_tokens import stand_in_id
    assert topics.TRACKING_EVENTS in TOPICS
    campaign_id = launched(client)
    account = client.account_id
    table = build_handlers(SimpleRuntime(ports), ports)
    job_id = job_id_for(campaign_id, "c1")
    bounce = new_event("tracking.bounced", source="tracking", subject=campaign_id,
                       account_id=account, data={"campaign_id": campaign_id, "job_id": job_id,
                                                 "contact_id": "c1", "bounce_type": "hard"})
    test_bounce = new_event("tracking.bounced", source="tracking", subject=campaign_id,
                            account_id=account, data={"campaign_id": campaign_id, "job_id": "t" * 32,
                                                      "contact_id": stand_in_id("test-1"),
                                                      "bounce_type": "hard"})
    for event in (bounce, bounce, test_bounce, delivery(account, campaign_id, "c1", "bounced")):
        table[event.type](event)   # the same job's bounce, however it came: once
    usecases.flush_progress(ports)
    assert view(client, campaign_id)["progress"]["bounced"] == 1


def test_deferrals_and_bounces_recorded_but_not_counted_come_back_with_the_exact_figures(
        client, broker, ports):
    """A crash between recording outcomes and counting them: the redelivery
    finds them recorded and counts nothing, and the repair rebuilt only
    sent, failed and skipped."""
    campaign_id = launched(client)
    docs = [ports.jobs.outcome_doc(job_id_for(campaign_id, f"c{n}"), campaign_id, outcome, 0, 0)
            for n, outcome in ((1, "deferred"), (2, "deferred"), (3, "bounced"), (4, "sent"))]
    ports.jobs.record_many(docs)   # and then the process died
    campaign = ports.campaigns.get_any(campaign_id)
    progress = usecases.reconcile(ports, campaign)
    assert (progress["counts"]["deferred"], progress["counts"]["bounced"],
            progress["counts"]["sent"]) == (2, 1, 1)
    assert (view(client, campaign_id)["progress"]["deferred"],
            view(client, campaign_id)["progress"]["bounced"]) == (2, 1)


class SimpleRuntime:
    """What build_handlers takes from the worker's runtime."""

    def __init__(self, ports):
        self.db = ports.campaigns.campaigns.database
        self.producer = lambda: ports.producer
