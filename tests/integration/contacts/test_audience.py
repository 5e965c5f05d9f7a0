"""stream_audience / compile_segment against the real FerretDB: the contract
the campaign fan-out is written against."""
from datetime import timedelta

import pytest

from services.contacts import domain
from services.contacts.fanout import send_job
from services.contacts.store import ContactsStore, contact_document, ensure_contacts_indexes

SALT = "test-salt"


@pytest.fixture
def store(mongo_db):
    ensure_contacts_indexes(mongo_db)
    return ContactsStore(mongo_db)


def add(store, account, email, lists=(), status="active", fields=None, suppressed=False,
        member_status="subscribed", created_at=None):
    at = created_at or domain.now()
    doc = contact_document(account, domain.address(email, SALT), name=None, fields=fields or {},
                           at=at, origin={"via": "api"}, suppressed=suppressed)
    doc["status"] = status
    store.insert_contact(doc)
    for list_id in lists:
        store.update_contact(account, doc["_id"], domain.membership_update(
            list_id, domain.membership(member_status, "api", at)))
    return doc["_id"]


def ids(batches):
    return [c["_id"] for batch in batches for c in batch]


def test_audience_is_subscribed_active_unsuppressed_once_each(store):
    a, b = domain.new_id(), domain.new_id()
    l1, l2, l3 = domain.new_id(), domain.new_id(), domain.new_id()
    wanted = {add(store, a, f"u{i}@example.com", [l1]) for i in range(7)}
    wanted.add(add(store, a, "both@example.com", [l1, l2]))        # once, though on two lists
    add(store, a, "other-list@example.com", [l3])
    add(store, a, "unsub@example.com", [l1], member_status="unsubscribed")
    add(store, a, "pending@example.com", [l1], member_status="pending")
    add(store, a, "bounced@example.com", [l1], status="bounced")
    add(store, a, "flagged@example.com", [l1], suppressed=True)
    late = add(store, a, "late@example.com", [l1])
    store.add_suppression({"_id": domain.new_id(), "account_id": None, "scope": "platform",
                           "email_hash": domain.address("late@example.com", SALT).hash,
                           "reason": "complaint"})
    add(store, b, "u1@example.com", [l1])                             # another account

    batches = list(store.stream_audience(a, [l1, l2], None, batch_size=3))
    got = ids(batches)
    assert len(got) == len(set(got))
    assert set(got) == wanted and late not in got
    assert all(len(batch) <= 3 for batch in batches)
    # what a send job is made of, and nothing the fan-out does not need
    assert {key for batch in batches for c in batch for key in c} == {
        "_id", "email", "name", "fields", "email_hash", "subscribed_list_ids"}


def test_each_job_names_the_lists_that_put_its_contact_in_the_audience(store):
    """Only a single-list campaign's jobs carried their list: a contact who
    unsubscribed from the one list of a two-list campaign, or of a
    segment's, during the send was mailed anyway (the sender's check needs
    these lists)."""
    a = domain.new_id()
    l1, l2, l3 = domain.new_id(), domain.new_id(), domain.new_id()
    store.lists.insert_one({"_id": l1, "account_id": a, "name": "main"})
    store.insert_field({"_id": domain.new_id(), "account_id": a, "key": "city", "type": "text",
                        "label": "City"})
    only_l1 = add(store, a, "one@example.com", [l1])
    l1_and_l3 = add(store, a, "two@example.com", [l1, l3], fields={"city": "Pune"})
    only_l3 = add(store, a, "three@example.com", [l3], fields={"city": "Pune"})

    def via(list_ids, segment_filter=None):
        return {c["_id"]: send_job("camp", c, None, "ab" * 32, list_ids,
                                   segment_filter is not None).get("via_list_ids")
                for c in (c for batch in store.stream_audience(a, list_ids, segment_filter)
                          for c in batch)}

    assert via([l1, l2]) == {only_l1: [l1], l1_and_l3: [l1]}
    segment = {"_id": domain.new_id(), "account_id": a, "name": "Pune",
               "definition": {"field": "fields.city", "op": "eq", "value": "Pune"}}
    store.insert_segment(segment)
    by_segment = via([], store.compile_segment(a, segment["_id"]))
    assert sorted(by_segment[l1_and_l3]) == sorted([l1, l3]) and by_segment[only_l3] == [l3]
    mixed = via([l1], store.compile_segment(a, segment["_id"]))
    assert mixed == {only_l1: [l1], l1_and_l3: [l1], only_l3: [l3]}


def test_compiled_segment_selects_and_needs_a_subscription(store):
    a = domain.new_id()
    l1 = domain.new_id()
    store.lists.insert_one({"_id": l1, "account_id": a, "name": "main"})
    store.insert_field({"_id": domain.new_id(), "account_id": a, "key": "city", "type": "text",
                        "label": "City"})
    pune_new = add(store, a, "p1@example.com", [l1], fields={"city": "Pune"})
    add(store, a, "p2@example.com", [l1], fields={"city": "Pune"},
        created_at=domain.now() - timedelta(days=200))
    add(store, a, "m@example.com", [l1], fields={"city": "Mumbai"})
    add(store, a, "nowhere@example.com", [], fields={"city": "Pune"})   # subscribed nowhere
    segment = {"_id": domain.new_id(), "account_id": a, "name": "recent Pune",
               "definition": {"all": [{"field": "fields.city", "op": "eq", "value": "Pune"},
                                      {"field": "created_at", "op": "within_days", "value": 90}]}}
    store.insert_segment(segment)
    compiled = store.compile_segment(a, segment["_id"])
    assert ids(store.stream_audience(a, [], compiled)) == [pune_new]
    with pytest.raises(LookupError):
        store.compile_segment(domain.new_id(), segment["_id"])


def test_a_segment_on_a_list_reaches_only_the_lists_subscribers(store):
    """A contact who unsubscribed from the list, or never confirmed it, was
    mailed a campaign to "member of" it while another list kept them
    subscribed; "not a member" still leaves out everyone on the list."""
    a, news, offers = domain.new_id(), domain.new_id(), domain.new_id()
    for list_id in (news, offers):
        store.lists.insert_one({"_id": list_id, "account_id": a, "name": list_id})
    reader = add(store, a, "reader@example.com", [news, offers])
    left_news = add(store, a, "left@example.com", [offers])
    unconfirmed = add(store, a, "unconfirmed@example.com", [offers])
    for contact, status in ((left_news, "unsubscribed"), (unconfirmed, "pending")):
        store.update_contact(a, contact, domain.membership_update(
            news, domain.membership(status, "api", domain.now())))
    offers_only = add(store, a, "offers@example.com", [offers])

    def audience(definition):
        segment = {"_id": domain.new_id(), "account_id": a, "name": "s", "definition": definition}
        store.insert_segment(segment)
        return set(ids(store.stream_audience(a, [], store.compile_segment(a, segment["_id"]))))

    member = {"field": "list", "op": "member", "value": news}
    assert audience(member) == {reader}
    # and the reader is mailed because of news: leaving news, not at all
    segment = {"_id": domain.new_id(), "account_id": a, "name": "news", "definition": member}
    store.insert_segment(segment)
    [[doc]] = store.stream_audience(a, [], store.compile_segment(a, segment["_id"]))
    job = send_job("camp", doc, None, "ab" * 32, store.segment_lists(a, segment["_id"]), True)
    assert job["via_list_ids"] == [news]
    assert audience({"not": member}) == {offers_only}
    assert audience({"field": "list", "op": "unsubscribed", "value": news}) == {left_news}


def test_the_fan_out_compiles_a_segments_addresses_as_contacts_are_keyed(mongo_db):
    """The fan-out's own compile (the worker's store, with the salt): a
    campaign to "not CEO@Example.com" left out ceo@example.com."""
    store = ContactsStore(mongo_db, SALT)
    ensure_contacts_indexes(mongo_db)
    a, l1 = domain.new_id(), domain.new_id()
    store.lists.insert_one({"_id": l1, "account_id": a, "name": "main"})
    staff = add(store, a, "staff@example.com", [l1])
    add(store, a, "ceo@example.com", [l1])
    segment = {"_id": domain.new_id(), "account_id": a, "name": "not the CEO",
               "definition": {"not": {"field": "email", "op": "eq", "value": "CEO@Example.com"}}}
    store.insert_segment(segment)
    assert ids(store.stream_audience(a, [], store.compile_segment(a, segment["_id"]))) == [staff]
