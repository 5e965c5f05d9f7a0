"""Campaigns: the state machine, the launch event, schedules, test sends."""
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from services.campaigns import usecases
from shared import topics

from tests.integration.campaigns.conftest import published

HTML = '<p>Hi {{ name | default("friend") }}, <a href="https://example.com/x">look</a></p>'


def ready_campaign(client, **overrides):
    template = client.post("/api/v1/templates", {"name": "T", "subject": "Hello",
                                                 "preheader": "pre", "html": HTML}).get_json()
    body = {"name": "Launch", "template_id": template["id"], "from_email": "news@example.com",
            "from_name": "Example News", "audience": {"list_ids": ["1" * 32, "2" * 32]},
            "limits": {"per_second": 50, "per_hour": 10000, "per_domain_concurrency": 4},
            "postal_address": "1 Main St, Springfield", **overrides}
    response = client.post("/api/v1/campaigns", body)
    assert response.status_code == 201, response.get_json()
    return response.get_json(), template


def at_once(workers: int, work) -> list:
    """What `work` returns in each of `workers` threads started together."""
    results = []
    threads = [threading.Thread(target=lambda: results.append(work())) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def campaign_events(broker):
    return [e for e in published(broker, topics.CAMPAIGNS_EVENTS)]


def test_send_freezes_the_template_and_emits_launched(client, broker):
    campaign, template = ready_campaign(client)
    assert campaign["status"] == "draft"
    response = client.post(f"/api/v1/campaigns/{campaign['id']}/send")
    assert response.status_code == 202, response.get_json()
    sent = response.get_json()
    assert sent["status"] == "sending"
    assert sent["frozen_template"] == {"template_id": template["id"], "version": 1}
    [launched] = campaign_events(broker)
    assert launched["type"] == "campaign.launched" and launched["subject"] == campaign["id"]
    data = launched["data"]
    assert data["template"]["version"] == 1 and data["template"]["subject"] == "Hello"
    assert data["template"]["links"] == ["https://example.com/x"]
    assert "{{ unsubscribe_url }}" in data["template"]["html"]
    assert data["sender"] == {"from_email": "news@example.com", "from_name": "Example News",
                              "sending_domain": "example.com"}
    assert data["audience"] == {"list_ids": ["1" * 32, "2" * 32], "segment_id": None}
    assert data["limits"]["per_domain_concurrency"] == 4
    assert data["postal_address"] == "1 Main St, Springfield" and data["kind"] == "marketing"
    # Editing the template afterwards does not change what this campaign sends.
    client.patch(f"/api/v1/templates/{template['id']}", {"subject": "Changed"})
    again = client.get(f"/api/v1/campaigns/{campaign['id']}").get_json()
    assert again["frozen_template"]["version"] == 1
    assert client.patch(f"/api/v1/campaigns/{campaign['id']}", {"name": "x"}).status_code == 409
    assert client.post(f"/api/v1/campaigns/{campaign['id']}/send").status_code == 409


def test_a_campaign_missing_what_it_needs_is_refused_naming_the_fields(client, broker):
    campaign = client.post("/api/v1/campaigns", {"name": "Empty"}).get_json()
    response = client.post(f"/api/v1/campaigns/{campaign['id']}/send")
    assert response.status_code == 409
    details = response.get_json()["error"]["details"]
    assert set(details) == {"template_id", "from_email", "audience", "postal_address"}
    assert campaign_events(broker) == []


def test_bad_campaign_input_is_400_naming_the_field(client):
    cases = [({"name": "x", "limits": {"per_second": 0}}, "limits"),
             ({"name": "x", "limits": {"per_domain_concurrency": -1}}, "limits"),
             ({"name": "x", "from_email": "not-an-address"}, "from_email"),
             ({"name": "x", "from_name": "a\nBcc: x@y.z"}, "from_name"),
             ({"name": "x", "from_name": "Shop\u0000Name"}, "from_name"),
             ({"name": "x", "template_id": "nope"}, "template_id"),
             ({"name": "x", "postal_address": "{{ evil }}"}, "postal_address"),
             ({"name": "x", "template_version": 10 ** 30}, "template_version"),
             ({"name": "x", "limits": {"per_hour": 5.5}}, "limits"),   # not cut to 5
             ({"name": "x", "limits": {"per_second": "5"}}, "limits"),  # not taken as 5.0
             ({"name": "x", "limits": {"per_second": True}}, "limits"),
             ({"name": "x", "tracking": "no"}, "tracking"),   # was taken as false
             ({"name": "x", "tracking": 1}, "tracking"),
             ({"name": "x", "audience": {"list_ids": ["nothex"]}}, "audience"),  # sent to nobody
             ({"name": "x", "audience": {"segment_id": "seg-1"}}, "audience"),
             ({}, "name")]
    for body, field in cases:
        response = client.post("/api/v1/campaigns", body)
        assert response.status_code == 400, (body, response.get_json())
        assert field in response.get_json()["error"]["details"], body


def test_pause_resume_cancel_move_the_state_and_announce_it(client, broker):
    campaign, _ = ready_campaign(client)
    path = f"/api/v1/campaigns/{campaign['id']}"
    assert client.post(f"{path}/pause").status_code == 409        # a draft is not sending
    client.post(f"{path}/send")
    assert client.post(f"{path}/pause").get_json()["status"] == "paused"
    assert client.post(f"{path}/pause").status_code == 409
    assert client.post(f"{path}/resume").get_json()["status"] == "sending"
    assert client.post(f"{path}/cancel").get_json()["status"] == "cancelled"
    assert client.post(f"{path}/resume").status_code == 409
    types = [e["type"] for e in campaign_events(broker)]
    assert types == ["campaign.launched", "campaign.paused", "campaign.resumed",
                     "campaign.cancelled"]
    assert all(e["data"]["campaign_id"] == campaign["id"] for e in campaign_events(broker))


def test_pauses_and_resumes_carry_the_campaigns_next_control_version(client, broker, ports):
    """So that a staged one the sweep publishes again, after the user's next
    move, is dropped by senders and the fan-out, not applied over it."""
    campaign, _ = ready_campaign(client)
    path = f"/api/v1/campaigns/{campaign['id']}"
    client.post(f"{path}/send")
    for action in ("pause", "resume", "pause", "resume"):
        assert client.post(f"{path}/{action}").status_code == 200
    versions = [(e["type"], e["data"].get("version")) for e in campaign_events(broker)
                if e["type"] in ("campaign.paused", "campaign.resumed")]
    assert versions == [("campaign.paused", 1), ("campaign.resumed", 2),
                        ("campaign.paused", 3), ("campaign.resumed", 4)]
    stored = ports.campaigns.get_any(campaign["id"])
    assert stored["control_version"] == 4 and 0 < stored["paused_seconds"] < 60   # two pauses


def test_schedule_refuses_past_times_and_needs_a_zone(client):
    campaign, _ = ready_campaign(client)
    path = f"/api/v1/campaigns/{campaign['id']}/schedule"
    past = client.post(path, {"send_at": "2001-01-01T10:00:00+00:00"})
    assert past.status_code == 400 and "send_at" in past.get_json()["error"]["details"]
    beyond = client.post(path, {"send_at": "9999-12-31T23:00:00-05:00"})  # year 10000 in UTC
    assert beyond.status_code == 400 and "send_at" in beyond.get_json()["error"]["details"]
    naive = client.post(path, {"send_at": "2099-01-01T10:00:00"})
    assert naive.status_code == 400 and "send_at" in naive.get_json()["error"]["details"]
    zone = client.post(path, {"send_at": "2099-01-01T10:00:00", "time_zone": "Mars/Olympus"})
    assert zone.status_code == 400 and "time_zone" in zone.get_json()["error"]["details"]
    ok = client.post(path, {"send_at": "2099-07-01T10:00:00", "time_zone": "Europe/Paris"})
    assert ok.status_code == 200
    assert ok.get_json()["status"] == "scheduled"
    assert ok.get_json()["send_at"].startswith("2099-07-01T08:00:00")
    unscheduled = client.post(f"/api/v1/campaigns/{campaign['id']}/unschedule")
    assert unscheduled.get_json()["status"] == "draft"


def test_a_due_schedule_fires_once_with_several_workers(client, broker, ports):
    campaign, _ = ready_campaign(client)
    # far enough ahead that a slow request still schedules it in the future
    soon = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat()
    assert client.post(f"/api/v1/campaigns/{campaign['id']}/schedule",
                       {"send_at": soon}).status_code == 200
    later = datetime.now(timezone.utc) + timedelta(seconds=60)
    fired = at_once(4, lambda: usecases.fire_due_schedules(ports, later))
    assert sum(fired) == 1
    launched = [e for e in campaign_events(broker) if e["type"] == "campaign.launched"]
    assert len(launched) == 1
    assert client.get(f"/api/v1/campaigns/{campaign['id']}").get_json()["status"] == "sending"


def test_a_campaign_paused_past_the_limit_is_cancelled_once(client, broker, ports):
    campaign, _ = ready_campaign(client)
    path = f"/api/v1/campaigns/{campaign['id']}"
    client.post(f"{path}/send")
    first = client.post(f"{path}/pause").get_json()
    assert client.post(f"{path}/resume").get_json()["paused_at"] is None
    time.sleep(0.05)
    second = client.post(f"{path}/pause").get_json()
    limit = timedelta(hours=2)
    # The limit counts from the pause now in force, not the first one.
    usecases.sweep(ports, datetime.fromisoformat(first["paused_at"]) + limit, pause_limit=limit)
    assert client.get(path).get_json()["status"] == "paused"
    due = datetime.fromisoformat(second["paused_at"]) + limit
    expired = at_once(4, lambda: usecases.sweep(ports, due, pause_limit=limit)["expired"])
    assert sum(expired) == 1
    cancelled = [e for e in campaign_events(broker) if e["type"] == "campaign.cancelled"]
    assert [e["subject"] for e in cancelled] == [campaign["id"]]
    view = client.get(path).get_json()
    assert view["status"] == "cancelled"
    assert view["cancel_reason"] == "paused past the 2-hour limit"
    assert client.post(f"{path}/resume").status_code == 409


def test_only_a_campaign_that_never_launched_can_be_deleted(client, broker):
    draft, _ = ready_campaign(client)
    path = f"/api/v1/campaigns/{draft['id']}"
    assert client.delete(path, account_id="acct-someone-else").status_code == 404
    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404
    assert client.delete(path).status_code == 404

    cancelled_draft, _ = ready_campaign(client)
    client.post(f"/api/v1/campaigns/{cancelled_draft['id']}/cancel")
    assert client.delete(f"/api/v1/campaigns/{cancelled_draft['id']}").status_code == 204

    launched, _ = ready_campaign(client)
    path = f"/api/v1/campaigns/{launched['id']}"
    client.post(f"{path}/send")
    client.post(f"{path}/cancel")
    refused = client.delete(path)
    assert refused.status_code == 409
    assert refused.get_json()["error"]["details"] == {"status": ["cancelled"]}
    assert client.get(path).get_json()["status"] == "cancelled"
    assert not [e for e in campaign_events(broker) if e["subject"] != launched["id"]]


def test_a_deleted_template_is_not_sent_by_a_campaign_that_had_not_frozen_it(
        client, broker, ports):
    """DELETE archives a template; a draft naming it still sent it."""
    draft, template = ready_campaign(client)
    pinned, _ = ready_campaign(client, template_id=template["id"], template_version=1)
    scheduled, other = ready_campaign(client)
    soon = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat()
    assert client.post(f"/api/v1/campaigns/{scheduled['id']}/schedule",
                       {"send_at": soon}).status_code == 200
    for deleted in (template, other):
        assert client.delete(f"/api/v1/templates/{deleted['id']}").status_code == 204
    for campaign in (draft, pinned):
        path = f"/api/v1/campaigns/{campaign['id']}"
        for action, body in (("send", None), ("test", {"emails": ["qa@example.com"]}),
                             ("schedule", {"send_at": soon})):
            refused = client.post(f"{path}/{action}", body)
            assert refused.status_code == 409, (action, refused.get_json())
            assert refused.get_json()["error"]["details"] == {"template_id": ["no such template"]}
        assert client.get(path).get_json()["status"] == "draft"
    later = datetime.now(timezone.utc) + timedelta(seconds=60)
    assert usecases.fire_due_schedules(ports, later) == 0
    assert client.get(f"/api/v1/campaigns/{scheduled['id']}").get_json()["status"] == "cancelled"
    assert campaign_events(broker) == [] and published(broker, topics.SEND_JOBS) == []


def test_a_launched_campaign_test_sends_its_frozen_version_even_once_its_template_is_deleted(
        client, broker):
    campaign, template = ready_campaign(client)
    path = f"/api/v1/campaigns/{campaign['id']}"
    assert client.post(f"{path}/send").status_code == 202
    client.patch(f"/api/v1/templates/{template['id']}", {"subject": "Version two"})
    assert client.delete(f"/api/v1/templates/{template['id']}").status_code == 204
    response = client.post(f"{path}/test", {"emails": ["qa@example.com"]})
    assert response.status_code == 202, response.get_json()
    [test_job] = published(broker, topics.SEND_JOBS)
    assert test_job["data"]["campaign"]["template"]["subject"] == "Hello"   # version 1


def test_test_send_publishes_test_jobs_that_carry_the_campaign(client, broker):
    campaign, _ = ready_campaign(client)
    path = f"/api/v1/campaigns/{campaign['id']}/test"
    twice = client.post(path, {"emails": ["qa@example.com", "QA@example.com"]})
    assert twice.status_code == 400 and "emails" in twice.get_json()["error"]["details"]
    too_many = client.post(path, {"emails": [f"a{i}@example.com" for i in range(6)]})
    assert too_many.status_code == 400
    response = client.post(path, {"emails": ["qa@example.com", "boss@example.com"]})
    assert response.status_code == 202
    jobs = published(broker, topics.SEND_JOBS)
    assert sorted(j["data"]["recipient"]["email"] for j in jobs) == ["boss@example.com",
                                                                   "qa@example.com"]
    assert all(j["data"]["test"] is True for j in jobs)
    assert jobs[0]["data"]["campaign"]["template"]["subject"] == "Hello"
    assert len({j["data"]["job_id"] for j in jobs}) == 2
    assert client.get(f"/api/v1/campaigns/{campaign['id']}").get_json()["status"] == "draft"


def test_an_event_a_crash_left_staged_is_published_by_the_sweep_if_it_happened(
        client, broker, ports):
    campaign, _ = ready_campaign(client)
    client.post(f"/api/v1/campaigns/{campaign['id']}/send")
    broker_before = len(campaign_events(broker))
    stored = ports.campaigns.get_any(campaign["id"])
    # Staged, the status changed, then the process died before publishing.
    happened = usecases._event(stored, "campaign.paused", {"campaign_id": campaign["id"]})
    ports.campaigns.stage_event(happened)
    ports.campaigns.transition(campaign["id"], ("sending",), "paused")
    # Staged, then the process died before the status changed.
    never = usecases._event(stored, "campaign.cancelled", {"campaign_id": campaign["id"]})
    ports.campaigns.stage_event(never)
    usecases.sweep(ports)
    assert len(campaign_events(broker)) == broker_before   # within the grace: the API's job
    ports.campaigns.outbox.update_many({}, {"$set": {
        "created_at": datetime.now(timezone.utc) - timedelta(minutes=1)}})
    usecases.sweep(ports)
    replayed = campaign_events(broker)[broker_before:]
    assert [e["id"] for e in replayed] == [happened["id"]]
    # The one whose change has not happened is kept a while: the call that
    # staged it may be slow to change the status, then fail to publish.
    assert [d["_id"] for d in ports.campaigns.outbox.find()] == [never["id"]]
    ports.campaigns.outbox.update_many({}, {"$set": {
        "created_at": datetime.now(timezone.utc) - usecases.OUTBOX_DROP_AFTER}})
    usecases.sweep(ports)
    assert ports.campaigns.outbox.count_documents({}) == 0
    assert len(campaign_events(broker)) == broker_before + 1


def test_a_cancel_that_read_scheduled_does_not_cancel_a_campaign_launched_meanwhile(
        client, broker, ports, monkeypatch):
    """The schedule fired between the cancel's read and its write: the
    campaign became "cancelled" without campaign.cancelled, and the whole
    audience was mailed under that status."""
    campaign, _ = ready_campaign(client)
    # far enough ahead that a slow request still schedules it in the future
    soon = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat()
    client.post(f"/api/v1/campaigns/{campaign['id']}/schedule", {"send_at": soon})
    read_before = usecases.get_campaign(ports, client.account_id, campaign["id"])
    assert usecases.fire_due_schedules(ports, datetime.now(timezone.utc) + timedelta(seconds=60))
    monkeypatch.setattr(usecases, "get_campaign", lambda *args: read_before)
    answer = client.post(f"/api/v1/campaigns/{campaign['id']}/cancel")
    assert answer.status_code == 409, answer.get_json()
    monkeypatch.undo()
    assert client.get(f"/api/v1/campaigns/{campaign['id']}").get_json()["status"] == "sending"
    assert client.post(f"/api/v1/campaigns/{campaign['id']}/cancel").status_code == 200
    assert [e["type"] for e in campaign_events(broker)][-2:] == ["campaign.launched",
                                                                 "campaign.cancelled"]


def test_send_launches_the_campaign_as_it_is_not_as_it_was_read(client, broker, ports,
                                                                monkeypatch):
    """An edit between send's read and its move (the audience switched to a
    test list) got 200, and the launch carried the old audience."""
    campaign, _ = ready_campaign(client)
    read_before = usecases.get_campaign(ports, client.account_id, campaign["id"])
    time.sleep(0.01)  # a later updated_at
    edited = client.patch(f"/api/v1/campaigns/{campaign['id']}",
                          {"audience": {"list_ids": ["3" * 32]}})
    assert edited.status_code == 200, edited.get_json()
    monkeypatch.setattr(usecases, "get_campaign", lambda *args: read_before)
    assert client.post(f"/api/v1/campaigns/{campaign['id']}/send").status_code == 409
    monkeypatch.undo()
    assert client.post(f"/api/v1/campaigns/{campaign['id']}/send").status_code == 202
    [launched] = [e for e in campaign_events(broker) if e["type"] == "campaign.launched"]
    assert launched["data"]["audience"]["list_ids"] == ["3" * 32]


def test_a_template_saved_too_large_before_the_limit_is_refused_at_send_not_stuck(
        client, broker, ports):
    campaign, template = ready_campaign(client)
    ports.templates.versions.update_one({"template_id": template["id"]}, {"$set": {
        "html": "<p>" + "x" * 1_100_000 + "</p>", "text": "x"}})
    answer = client.post(f"/api/v1/campaigns/{campaign['id']}/send")
    assert answer.status_code == 409 and "template_id" in answer.get_json()["error"]["details"]
    assert client.get(f"/api/v1/campaigns/{campaign['id']}").get_json()["status"] == "draft"
    assert campaign_events(broker) == []


def test_a_staged_event_that_cannot_be_published_holds_up_no_other(client, broker, ports):
    """One entry that failed every sweep stopped the rest of the outbox, and
    every campaign's completion behind it, in every account."""
    first, _ = ready_campaign(client)
    second, _ = ready_campaign(client)
    for campaign in (first, second):
        sent = client.post(f"/api/v1/campaigns/{campaign['id']}/send")
        assert sent.status_code == 202, sent.get_json()
    before = {e["id"] for e in campaign_events(broker)}  # the in-memory broker's partitions
    for campaign in (first, second):
        stored = ports.campaigns.get_any(campaign["id"])
        data = {"campaign_id": campaign["id"]} if campaign is second else {"bogus": 1}
        ports.campaigns.stage_event(usecases._event(stored, "campaign.paused", data))
        ports.campaigns.transition(campaign["id"], ("sending",), "paused")
    ports.campaigns.outbox.update_many({}, {"$set": {
        "created_at": datetime.now(timezone.utc) - timedelta(minutes=1)}})
    usecases.sweep(ports)
    assert [(e["type"], e["subject"]) for e in campaign_events(broker) if e["id"] not in before] \
        == [("campaign.paused", second["id"])]


def new_version(client, template_id: str, subject: str) -> None:
    assert client.patch(f"/api/v1/templates/{template_id}", {"subject": subject}).status_code == 200


def test_another_template_drops_the_pinned_version_of_the_old_one(client, broker):
    """A campaign pinned to version 1 of one template and moved to another
    sent the other's version 1 (or failed at send when it had none)."""
    campaign, first = ready_campaign(client)
    new_version(client, first["id"], "First, v2")
    assert client.patch(f"/api/v1/campaigns/{campaign['id']}",
                        {"template_version": 1}).status_code == 200
    second = client.post("/api/v1/templates", {"name": "Second", "subject": "Second, v1",
                                               "html": HTML}).get_json()
    new_version(client, second["id"], "Second, v2")
    new_version(client, second["id"], "Second, v3")
    moved = client.patch(f"/api/v1/campaigns/{campaign['id']}", {"template_id": second["id"]})
    assert moved.status_code == 200 and moved.get_json().get("template_version") is None
    # a version is checked against the template the campaign will have
    refused = client.patch(f"/api/v1/campaigns/{campaign['id']}", {"template_version": 9})
    assert refused.status_code == 400 and "template_version" in refused.get_json()["error"]["details"]
    sent = client.post(f"/api/v1/campaigns/{campaign['id']}/send")
    assert sent.status_code == 202, sent.get_json()
    assert sent.get_json()["frozen_template"] == {"template_id": second["id"], "version": 3}
    [launched] = campaign_events(broker)
    assert launched["data"]["template"]["subject"] == "Second, v3"


def test_a_send_that_failed_on_the_way_can_be_retried_at_once(client, broker, monkeypatch):
    """The launch lease was given back only when the move did not happen,
    not when it failed: for a minute, every retry was a 409 saying the
    campaign was now a draft."""
    from services.campaigns.store import CampaignStore
    campaign, _ = ready_campaign(client)
    stage = CampaignStore.stage_event

    def fail_once(self, event):
        monkeypatch.setattr(CampaignStore, "stage_event", stage)
        raise RuntimeError("the database went away")

    monkeypatch.setattr(CampaignStore, "stage_event", fail_once)
    assert client.post(f"/api/v1/campaigns/{campaign['id']}/send").status_code == 500
    retry = client.post(f"/api/v1/campaigns/{campaign['id']}/send")
    assert retry.status_code == 202, retry.get_json()
    assert [e["type"] for e in campaign_events(broker)] == ["campaign.launched"]


def test_an_account_erasure_leaves_none_of_its_campaigns_leases_or_staged_events(
        client, app, ports):
    """The leases (four a campaign) and the events staged for publishing
    outlived the account; the staged launch holds its whole template."""
    from services.campaigns import privacy
    campaign, _ = ready_campaign(client)
    assert client.post(f"/api/v1/campaigns/{campaign['id']}/send").status_code == 202
    db = app.extensions["runtime"].db
    assert ports.campaigns.take_lease(f"{campaign['id']}:complete", timedelta(seconds=60))
    # a lease as written before era leases, by its name alone
    db["leases"].insert_one({"_id": f"{campaign['id']}:expire", "at": datetime.now(timezone.utc)})
    db["outbox"].insert_one({"_id": "staged-1", "account_id": client.account_id, "type": "x"})
    db["outbox"].insert_one({"_id": "staged-2", "account_id": "another", "type": "x"})
    assert db["leases"].count_documents({"_id": {"$regex": f"^{campaign['id']}:"}}) == 3
    privacy.erase_account(db, client.account_id)
    assert db["leases"].count_documents({"_id": {"$regex": f"^{campaign['id']}:"}}) == 0
    assert [d["_id"] for d in db["outbox"].find()] == ["staged-2"]


def test_a_scheduled_campaign_is_cancelled_or_fired_never_both(client, ports):
    """A cancel that read "scheduled" while the schedule fired wrote
    "cancelled" over "sending" on FerretDB (a move reads, then writes): the
    audience was mailed with no campaign.cancelled. They take turns now."""
    campaign, _ = ready_campaign(client)
    later = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    assert client.post(f"/api/v1/campaigns/{campaign['id']}/schedule",
                       {"send_at": later}).status_code == 200
    assert ports.campaigns.take_lease(f"{campaign['id']}:launch", timedelta(seconds=60))  # firing
    busy = client.post(f"/api/v1/campaigns/{campaign['id']}/cancel")
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "launching"
    assert client.get(f"/api/v1/campaigns/{campaign['id']}").get_json()["status"] == "scheduled"
    ports.campaigns.release_lease(f"{campaign['id']}:launch")            # it did not fire
    cancelled = client.post(f"/api/v1/campaigns/{campaign['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    # and a fire that comes while a cancel holds the lease launches nothing
    other, _ = ready_campaign(client)
    client.post(f"/api/v1/campaigns/{other['id']}/schedule", {"send_at": later})
    assert ports.campaigns.take_lease(f"{other['id']}:launch", timedelta(seconds=60))  # cancelling
    due = datetime.now(timezone.utc) + timedelta(days=2)
    assert usecases.fire_due_schedules(ports, due) == 0


def test_a_drafts_cancel_delete_edit_and_schedule_take_turns_with_its_launch(client, ports):
    """A draft's cancel or delete that read "draft" while a send launched it
    wrote over the launch on FerretDB (a move reads, then writes): the whole
    audience was mailed under "cancelled", or a launched campaign had no
    record left to pause, cancel or complete. They take turns now."""
    campaign, _ = ready_campaign(client)
    path = f"/api/v1/campaigns/{campaign['id']}"
    later = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    lease = f"{campaign['id']}:launch"
    assert ports.campaigns.take_lease(lease, timedelta(seconds=60))       # a send launching it
    for method, action, body in (("POST", "cancel", None), ("DELETE", "", None),
                                 ("PATCH", "", {"name": "Renamed"}),
                                 ("POST", "schedule", {"send_at": later})):
        url = f"{path}/{action}" if action else path
        answer = (client.delete(url) if method == "DELETE" else
                  client.patch(url, body) if method == "PATCH" else client.post(url, body))
        assert answer.status_code == 409, (method, action, answer.get_json())
        assert answer.get_json()["error"]["code"] == "launching", (method, action)
    assert client.get(path).get_json()["status"] == "draft"
    ports.campaigns.release_lease(lease)
    # and a send that comes while one of them holds the lease launches nothing
    assert ports.campaigns.take_lease(lease, timedelta(seconds=60))       # a cancel under way
    busy = client.post(f"{path}/send")
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "busy"
    ports.campaigns.release_lease(lease)
    assert client.post(f"{path}/cancel").get_json()["status"] == "cancelled"
    # a launched one keeps its launch lease a while: an edit says why it cannot be
    sent, _ = ready_campaign(client)
    assert client.post(f"/api/v1/campaigns/{sent['id']}/send").status_code == 202
    edit = client.patch(f"/api/v1/campaigns/{sent['id']}", {"name": "Late"})
    assert edit.status_code == 409 and edit.get_json()["error"]["code"] == "conflict"
    assert "only a draft" in edit.get_json()["error"]["message"]


def _clock_ahead(monkeypatch, by: timedelta) -> None:
    """The campaigns store's clock `by` ahead of the real one (0: the real)."""
    from services.campaigns import store
    monkeypatch.setattr(store, "utcnow", lambda: datetime.now(timezone.utc) + by)


def test_a_holder_that_overran_its_lease_does_not_give_back_its_successors(ports, monkeypatch):
    """release_lease deleted by _id: a move whose flush blocked past the
    lease's 60 s, taken over meanwhile, deleted the new holder's lease on
    its way out, and a third move could overlap the second."""
    key = f"{uuid.uuid4().hex}:control"
    slow = ports.campaigns.take_lease(key, timedelta(seconds=60))
    assert slow and not ports.campaigns.take_lease(key, timedelta(seconds=60))
    _clock_ahead(monkeypatch, timedelta(seconds=61))                  # it overran
    successor = ports.campaigns.take_lease(key, timedelta(seconds=60))
    assert successor and successor != slow
    ports.campaigns.release_lease(key, slow)                           # the slow one, done at last
    assert not ports.campaigns.take_lease(key, timedelta(seconds=60))  # still the successor's
    ports.campaigns.release_lease(key, successor)
    assert ports.campaigns.take_lease(key, timedelta(seconds=60))


def test_many_takers_of_one_stale_campaign_lease_make_one_holder(ports, monkeypatch):
    """A stale lease was taken over by "delete it, then insert mine". On
    FerretDB a conditional delete reads the matching ids, then deletes by
    id: a second taker could delete the first one's new lease, and both held
    it (in most runs of 15 rounds). Only unique inserts decide now."""
    for _ in range(30):
        key = f"{uuid.uuid4().hex}:control"
        _clock_ahead(monkeypatch, timedelta(0))
        assert ports.campaigns.take_lease(key, timedelta(seconds=60))  # its holder died
        _clock_ahead(monkeypatch, timedelta(seconds=61))
        with ThreadPoolExecutor(8) as pool:
            tokens = list(pool.map(
                lambda _: ports.campaigns.take_lease(key, timedelta(seconds=60)), range(8)))
        assert len([token for token in tokens if token]) == 1, tokens


def test_a_campaigns_ended_leases_are_forgotten_but_the_newest_for_a_month(ports, monkeypatch):
    """Every take is a document of its own (an era); the newest is never
    deleted while a taker may read it (shared/era_leases.py)."""
    key = f"{uuid.uuid4().hex}:control"
    for _ in range(3):
        ports.campaigns.release_lease(key, ports.campaigns.take_lease(key, timedelta(seconds=60)))
    eras = {"lease": key}
    _clock_ahead(monkeypatch, timedelta(minutes=3))
    ports.campaigns.forget_old_leases()
    assert ports.campaigns.leases.count_documents(eras) == 1            # the newest stays
    _clock_ahead(monkeypatch, timedelta(days=31))
    ports.campaigns.forget_old_leases()
    assert ports.campaigns.leases.count_documents(eras) == 0            # a month idle: gone


def test_a_pause_and_a_cancel_at_the_same_moment_never_both_win(client, monkeypatch):
    """A move reads, then writes, on FerretDB: a cancel that came while a
    pause was being written answered 200 too, the pause wrote over it, and
    the cancelled campaign went on to end "sent". They take turns now: the
    one that comes while the other is moving gets 409 busy."""
    from services.campaigns.store import CampaignStore
    campaign, _ = ready_campaign(client)
    assert client.post(f"/api/v1/campaigns/{campaign['id']}/send").status_code == 202
    answers = []
    original = CampaignStore.transition

    def cancel_meanwhile(self, *args, **kwargs):
        monkeypatch.setattr(CampaignStore, "transition", original)
        answers.append(client.post(f"/api/v1/campaigns/{campaign['id']}/cancel"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CampaignStore, "transition", cancel_meanwhile)
    paused = client.post(f"/api/v1/campaigns/{campaign['id']}/pause")
    assert paused.status_code == 200 and paused.get_json()["status"] == "paused"
    [cancel] = answers
    assert cancel.status_code == 409 and cancel.get_json()["error"]["code"] == "busy"
    assert client.get(f"/api/v1/campaigns/{campaign['id']}").get_json()["status"] == "paused"
    cancelled = client.post(f"/api/v1/campaigns/{campaign['id']}/cancel")  # once the pause is done
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"


def test_an_account_makes_at_most_max_tests_per_hour_test_messages(client, broker, monkeypatch):
    """Five addresses a call, but any number of calls: a key could mail
    anyone, a contact who had unsubscribed included, as often as its request
    rate allowed, and nothing counted it."""
    from services.campaigns import usecases
    monkeypatch.setattr(usecases, "MAX_TESTS_PER_HOUR", 6)
    campaign, _ = ready_campaign(client)
    path = f"/api/v1/campaigns/{campaign['id']}/test"
    for n in range(3):
        assert client.post(path, {"emails": [f"qa{n}@example.com", f"qb{n}@example.com"]}
                           ).status_code == 202
    refused = client.post(path, {"emails": ["one.more@example.com"]})
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "too_many_tests"
    assert refused.headers["Retry-After"]
    assert len(published(broker, topics.SEND_JOBS)) == 6


def test_test_sends_at_the_same_moment_keep_to_the_cap(client, broker, monkeypatch):
    """Counted first and noted after: ten calls at once with 45 gone of 50
    all passed, and 95 messages went."""
    from services.campaigns import usecases
    monkeypatch.setattr(usecases, "MAX_TESTS_PER_HOUR", 12)
    campaign, _ = ready_campaign(client)
    path = f"/api/v1/campaigns/{campaign['id']}/test"
    answers = at_once(10, lambda: client.post(path, {"emails": ["qa@example.com",
                                                                "qb@example.com"]}))
    taken = [a for a in answers if a.status_code == 202]
    assert {a.status_code for a in answers} <= {202, 429} and 1 <= len(taken) <= 6
    assert len(published(broker, topics.SEND_JOBS)) == 2 * len(taken) <= 12
    refused = [a.get_json()["error"]["message"] for a in answers if a.status_code == 429]
    assert all("at most 12" in message for message in refused)
