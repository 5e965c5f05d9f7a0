"""A contact's revision: every change of its address, name or fields counts
one, contact.updated says which, and the fan-out's jobs carry the one they
read. A sender that heard of a later revision holds its job back
(delivery.held), and contacts sends the job again with the contact as it
is now: never to another account, and `withdrawn` once the contact is gone.
The app in-process against the real FerretDB, its producer in memory."""
from services.contacts import handlers
from services.contacts.fanout import send_job
from services.contacts.store import ContactsStore
from shared.events import new_event
from tests.integration.contacts.conftest import published

V1 = "/api/v1"


def _updates(broker, contact_id):
    return [e["data"] for e in published(broker)
            if e["type"] == "contact.updated" and e["subject"] == contact_id]


HOLD = "0123456789abcdef" * 2


def _held(account_id, contact_id, list_id, job_id="j" * 32, attempt=2, hold=HOLD, via=None):
    data = {"job_id": job_id, "campaign_id": "c" * 32, "contact_id": contact_id,
            "list_id": list_id, "attempt": attempt, "reason": "contact_changed",
            **({"via_list_ids": via} if via else {})}
    if hold:  # a sender older than hold tokens sends none
        data["hold"] = hold
    return new_event("delivery.held", source="sender", subject=job_id, account_id=account_id,
                     data=data)


def test_each_change_counts_a_revision_that_the_fan_out_carries(client, app, broker):
    list_id = client.post(f"{V1}/lists", {"name": "L"}).get_json()["id"]
    contact = client.post(f"{V1}/contacts", {"email": "first@example.com", "name": "First",
                                             "list_ids": [list_id]}).get_json()
    store = ContactsStore(app.extensions["runtime"].db)

    def fanned_out():
        [batch] = store.stream_audience(client.account_id, [list_id], None)
        return send_job("c" * 32, batch[0], list_id, None)

    assert "contact_revision" not in fanned_out()  # never changed
    client.patch(f"{V1}/contacts/{contact['id']}", {"name": "Second"})
    # nothing changes, but the revision is said again: the same change,
    # retried after its first announcement failed, must not go unheard
    client.patch(f"{V1}/contacts/{contact['id']}", {"name": "Second"})
    client.patch(f"{V1}/contacts/{contact['id']}", {"email": "third@example.com"})
    assert _updates(broker, contact["id"]) == [
        {"contact_id": contact["id"], "fields": ["name"], "revision": 1},
        {"contact_id": contact["id"], "fields": ["name"], "revision": 1},
        {"contact_id": contact["id"], "fields": ["email"], "revision": 2}]
    job = fanned_out()
    assert job["contact_revision"] == 2
    assert job["recipient"] == {"email": "third@example.com", "name": "Second"}


def test_a_held_job_goes_out_again_as_the_contact_is_now(client, other, app, broker):
    list_id = client.post(f"{V1}/lists", {"name": "L"}).get_json()["id"]
    contact = client.post(f"{V1}/contacts", {"email": "old@example.com", "name": "Old",
                                             "list_ids": [list_id]}).get_json()
    client.patch(f"{V1}/contacts/{contact['id']}", {"email": "new@example.com", "name": "New"})
    table = handlers.build_handlers(app.extensions["runtime"])

    table["delivery.held"](_held(client.account_id, contact["id"], list_id, via=[list_id]))
    # another account naming the contact learns nothing of it
    table["delivery.held"](_held(other.account_id, contact["id"], list_id, job_id="k" * 32))
    client.delete(f"{V1}/contacts/{contact['id']}")
    table["delivery.held"](_held(client.account_id, contact["id"], list_id, job_id="m" * 32,
                                 hold=None))
    app.extensions["runtime"].producer().flush()  # the worker's loop flushes before it commits

    jobs = {e["data"]["job_id"]: e for e in published(broker, "send.jobs")}
    again = jobs["j" * 32]
    assert again["accountid"] == client.account_id
    assert again["data"] == {"job_id": "j" * 32, "campaign_id": "c" * 32,
                             "contact_id": contact["id"], "list_id": list_id, "attempt": 2,
                             "via_list_ids": [list_id],  # the lists that reached it, kept
                             "recipient": {"email": "new@example.com", "name": "New"},
                             "contact_revision": 1, "answers_held": HOLD}  # its hold's token
    assert jobs["k" * 32]["data"]["answers_held"] == HOLD
    assert jobs["m" * 32]["data"]["answers_held"] is True  # the held event named no hold
    for withdrawn in ("k" * 32, "m" * 32):
        assert jobs[withdrawn]["data"]["withdrawn"] is True
        assert "recipient" not in jobs[withdrawn]["data"]


def test_a_date_field_goes_into_the_job_as_the_api_shows_it(client, app):
    """A date field is a datetime in the store: the job failed to encode,
    and the fan-out retried it for ever."""
    from shared.events import encode
    list_id = client.post(f"{V1}/lists", {"name": "L"}).get_json()["id"]
    client.post(f"{V1}/fields", {"key": "renews", "type": "date"})
    contact = client.post(f"{V1}/contacts", {"email": "dated@example.com", "list_ids": [list_id],
                                             "fields": {"renews": "2030-01-02"}}).get_json()
    shown = client.get(f"{V1}/contacts/{contact['id']}").get_json()["fields"]["renews"]
    store = ContactsStore(app.extensions["runtime"].db)
    [batch] = store.stream_audience(client.account_id, [list_id], None)
    job = send_job("c" * 32, batch[0], list_id, None)
    assert job["recipient"]["fields"] == {"renews": shown}
    encode(new_event("send.job", source="contacts", subject=job["job_id"],
                     account_id=client.account_id, data=job))


def test_a_contact_the_job_schema_refuses_is_withdrawn_not_retried_for_ever(client, app, broker):
    """A contact stored before a rule (here a numeric name) made the answer
    raise on every try, and held up the rest of the worker's partition."""
    list_id = client.post(f"{V1}/lists", {"name": "L"}).get_json()["id"]
    contact = client.post(f"{V1}/contacts", {"email": "legacy@example.com",
                                             "list_ids": [list_id]}).get_json()
    store = ContactsStore(app.extensions["runtime"].db)
    store.contacts.update_one({"_id": contact["id"]}, {"$set": {"name": 42}})
    table = handlers.build_handlers(app.extensions["runtime"])
    table["delivery.held"](_held(client.account_id, contact["id"], list_id))
    app.extensions["runtime"].producer().flush()
    [answer] = [e["data"] for e in published(broker, "send.jobs")]
    assert answer["withdrawn"] is True and "recipient" not in answer
