"""The sender's send-time check against the real FerretDB, fed through its
own event handlers: address hashes suppressed for an account or for every
account, unsubscribes and complaints straight from tracking.events, and
the two topics' copies of a change applied in event-time order."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from services.sender import handlers
from services.sender.domain import Job
from services.sender.store import ContactStateStore
from shared.events import new_event
from shared.pii import email_hash

SALT = "contact-state-test-salt"
A, B = "a" * 32, "b" * 32
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def _job(job_id, account_id, contact_id, email, list_id=None, test=False, via=None):
    return Job.from_event(account_id, {"job_id": job_id, "campaign_id": "c" * 32,
                                       "contact_id": contact_id, "list_id": list_id,
                                       "attempt": 0, "test": test,
                                       "recipient": {"email": email},
                                       **({"via_list_ids": via} if via else {})})


def _event(type_, account_id, data, at=T0, source="contacts"):
    return replace(new_event(type_, source=source, subject=data.get("contact_id") or "",
                             account_id=account_id, data=data), time=at.isoformat())


def _tracking(type_, account_id, contact_id, at=T0, **data):
    return _event(type_, account_id, {"campaign_id": "c" * 32, "contact_id": contact_id,
                                      "job_id": "j" * 32, **data}, at, source="tracking")


def _handle(store, *events):
    table = handlers.contact_handlers(store)
    for event in events:
        table[event.type](event)


def test_a_platform_suppression_blocks_the_address_in_every_account(mongo_db):
    store = ContactStateStore(mongo_db, SALT)
    shared = "Shared.Person@example.com"
    # account A's complaint: contacts names A's contact and the address hash
    _handle(store, _event("contact.suppressed", "", {
        "contact_id": "ca", "scope": "platform", "reason": "complaint",
        "email_hash": email_hash("shared.person@example.com", SALT)}))
    jobs = [_job("j-a", A, "ca", shared), _job("j-b", B, "cb", shared),
            _job("j-other", B, "cx", "someone.else@example.com"),
            _job("j-test", B, "test-1", shared, test=True)]
    # a test send too: whoever complained or was erased gets no test either
    assert store.blocked(jobs) == {"j-a": "suppressed", "j-b": "suppressed",
                                   "j-test": "suppressed"}


def test_an_account_suppression_blocks_the_address_in_that_account_only(mongo_db):
    store = ContactStateStore(mongo_db, SALT)
    hash_ = email_hash("gone@example.com", SALT)
    _handle(store, _event("contact.suppressed", A, {
        "contact_id": None, "scope": "account", "reason": "manual", "email_hash": hash_}))
    jobs = [_job("j-a", A, "ca", "gone@example.com"), _job("j-b", B, "cb", "gone@example.com"),
            _job("j-test", A, "test-1", "gone@example.com", test=True)]  # its own list: tested
    assert store.blocked(jobs) == {"j-a": "suppressed"}
    assert ContactStateStore(mongo_db).blocked(jobs) == {}  # no salt: by contact id only


def test_tracking_unsubscribes_and_complaints_apply_without_contacts(mongo_db):
    store = ContactStateStore(mongo_db, SALT)
    one, l1, l2 = "list-one", "l1", "l2"
    _handle(store,
            _tracking("tracking.unsubscribed", A, one, list_id=l1, method="one-click"),
            _tracking("tracking.unsubscribed", A, "every", list_id=None, method="page"),
            _tracking("tracking.unsubscribed", A, "old-link"),       # no list_id: every list
            _tracking("tracking.complained", A, "angry", feedback_type="abuse"))
    jobs = [_job("1", A, one, "o@example.com", l1), _job("2", A, one, "o@example.com", l2),
            _job("3", A, "every", "e@example.com", l2),
            _job("4", A, "every", "e@example.com", None),             # a segment's job
            _job("5", A, "old-link", "k@example.com", l2),
            _job("6", A, "angry", "a@example.com", l1),
            _job("7", A, "fine", "f@example.com", l1)]
    assert store.blocked(jobs) == {"1": "unsubscribed", "3": "unsubscribed",
                                   "4": "unsubscribed", "5": "unsubscribed",
                                   "6": "complained"}


def test_a_late_copy_of_an_unsubscribe_does_not_undo_a_later_resubscription(mongo_db):
    store = ContactStateStore(mongo_db, SALT)
    unsubscribe = _tracking("tracking.unsubscribed", A, "c1", at=T0, list_id="l1")
    _handle(store, unsubscribe,
            _event("contact.unsubscribed", A, {"contact_id": "c1", "list_id": "l1",
                                               "via": "one-click"}, T0 + timedelta(seconds=1)),
            _event("contact.subscribed", A, {"contact_id": "c1", "list_id": "l1", "via": "api"},
                   T0 + timedelta(minutes=5)))
    job = _job("j", A, "c1", "c1@example.com", "l1")
    assert store.blocked([job]) == {}
    _handle(store, unsubscribe)                                      # replayed after a restart
    assert store.blocked([job]) == {}
    _handle(store, _tracking("tracking.unsubscribed", A, "c1", at=T0 + timedelta(minutes=9),
                             list_id="l1"))                          # a new unsubscribe counts
    assert store.blocked([job]) == {"j": "unsubscribed"}


def test_a_late_complaint_does_not_overwrite_an_erasure(mongo_db):
    store = ContactStateStore(mongo_db, SALT)
    _handle(store, _event("contact.erased", A, {"contact_id": "c1", "request_id": None},
                          T0 + timedelta(minutes=1)),
            _tracking("tracking.complained", A, "c1", at=T0))
    assert store.blocked([_job("j", A, "c1", "c1@example.com")]) == {"j": "erased"}


def test_a_lifted_account_suppression_lets_the_address_and_the_contact_through(mongo_db):
    store = ContactStateStore(mongo_db, SALT)
    hash_ = email_hash("back@example.com", SALT)
    complained = email_hash("angry@example.com", SALT)
    _handle(store,
            _event("contact.suppressed", A, {"contact_id": "cb", "scope": "account",
                                             "reason": "manual", "email_hash": hash_}),
            _event("contact.suppressed", "", {"contact_id": "ca", "scope": "platform",
                                              "reason": "complaint", "email_hash": complained}))
    jobs = [_job("j-back", A, "cb", "back@example.com"),
            _job("j-angry", A, "ca", "angry@example.com")]
    assert store.blocked(jobs) == {"j-back": "suppressed", "j-angry": "suppressed"}
    # the contact re-consented: its account's entry is lifted
    _handle(store,
            _event("contact.unsuppressed", A, {"contact_id": "cb", "scope": "account",
                                               "email_hash": hash_}),
            # an account's lift never touches a platform-wide block
            _event("contact.unsuppressed", A, {"contact_id": None, "scope": "account",
                                               "email_hash": complained}))
    assert store.blocked(jobs) == {"j-angry": "suppressed"}


def _read_at(job, revision):
    return Job.from_event(job.account_id, {**job.data, "contact_revision": revision})


def test_a_job_read_before_its_contacts_latest_change_is_stale(mongo_db):
    """contact.updated carries the contact's revision; a job the fan-out read
    at an earlier one must not go out as it is (the address may be the one
    that was corrected). Revisions only move forward, and only the owner's
    count: another account's job naming the id is not held back."""
    store = ContactStateStore(mongo_db, SALT)
    before = _job("j-before", A, "c1", "old@example.com")            # never changed then
    read_at_1 = _read_at(_job("j-1", A, "c1", "mid@example.com"), 1)
    read_at_2 = _read_at(_job("j-2", A, "c1", "new@example.com"), 2)
    elsewhere = _job("j-b", B, "c1", "x@example.com")
    untouched = _job("j-other", A, "c2", "c2@example.com")
    jobs = [before, read_at_1, read_at_2, elsewhere, untouched]
    assert store.blocked(jobs) == {}
    _handle(store, _event("contact.updated", A, {"contact_id": "c1", "fields": ["name"],
                                                 "revision": 1}))
    assert store.blocked(jobs) == {"j-before": "contact_changed"}
    _handle(store,
            _event("contact.updated", A, {"contact_id": "c1", "fields": ["email"],
                                          "revision": 2}),
            _event("contact.updated", A, {"contact_id": "c1", "fields": ["name"],
                                          "revision": 1}),   # a late copy of the first
            _event("contact.updated", A, {"contact_id": "c2", "fields": ["name"]}))  # older
    assert store.blocked(jobs) == {"j-before": "contact_changed", "j-1": "contact_changed"}
    # a stop for good comes first: nobody asks for an unsubscribed contact again
    _handle(store, _event("contact.unsubscribed", A, {"contact_id": "c1", "list_id": None,
                                                      "via": "api"}))
    assert store.blocked([before, read_at_1, read_at_2]) == {
        "j-before": "unsubscribed", "j-1": "unsubscribed", "j-2": "unsubscribed"}


def test_a_withdrawn_job_is_skipped_as_erased(mongo_db):
    """Contacts' answer for a contact gone before it could send the job again."""
    store = ContactStateStore(mongo_db, SALT)
    withdrawn = Job.from_event(A, {"job_id": "j", "campaign_id": "c" * 32, "contact_id": "c9",
                                   "attempt": 0, "withdrawn": True})
    assert withdrawn.email == "" and withdrawn.withdrawn
    assert store.blocked([withdrawn]) == {"j": "erased"}


def test_a_re_consent_after_unsubscribing_from_everything_lets_the_list_through(mongo_db):
    """all_lists was set by a list-less unsubscribe and never cleared:
    after a logged re-consent to a list, every job was skipped."""
    store = ContactStateStore(mongo_db, SALT)
    _handle(store,
            _event("contact.unsubscribed", A, {"contact_id": "c1", "list_id": "l1", "via": "link"}),
            _event("contact.unsubscribed", A, {"contact_id": "c1", "list_id": "l2", "via": "link"}),
            _event("contact.unsubscribed", A, {"contact_id": "c1", "list_id": None, "via": "link"}))
    jobs = [_job("j1", A, "c1", "c1@example.com", list_id="l1"),
            _job("j2", A, "c1", "c1@example.com", list_id="l2")]
    assert store.blocked(jobs) == {"j1": "unsubscribed", "j2": "unsubscribed"}
    _handle(store, _event("contact.subscribed", A, {"contact_id": "c1", "list_id": "l1",
                                                    "via": "api"}, at=T0 + timedelta(days=1)))
    assert store.blocked(jobs) == {"j2": "unsubscribed"}   # l2 stays as it was


def test_a_contact_unsubscribed_from_every_list_that_reached_it_is_not_mailed(mongo_db):
    """A two-list campaign's (or a segment's) jobs carried no list: leaving
    the one list that put the contact in the audience changed nothing."""
    store = ContactStateStore(mongo_db, SALT)
    job = _job("j1", A, "c1", "c1@example.com", via=["l1", "l2"])
    _handle(store, _event("contact.unsubscribed", A, {"contact_id": "c1", "list_id": "l1",
                                                      "via": "link"}))
    assert store.blocked([job]) == {}                      # still subscribed to l2
    _handle(store, _event("contact.unsubscribed", A, {"contact_id": "c1", "list_id": "l2",
                                                      "via": "link"}, at=T0 + timedelta(seconds=1)))
    assert store.blocked([job]) == {"j1": "unsubscribed"}
    assert store.blocked([_job("j2", A, "c1", "c1@example.com", via=["l3"])]) == {}
