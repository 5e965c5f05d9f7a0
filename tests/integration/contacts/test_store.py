"""ContactsStore queries against the real FerretDB."""
from services.contacts import domain
from services.contacts.store import ContactsStore, contact_document, ensure_contacts_indexes
from tests.integration.contacts.conftest import SALT


def _member(store, account, email, memberships):
    doc = contact_document(account, domain.address(email, SALT), name=None, fields={},
                           at=domain.now(), origin={"via": "api"})
    store.insert_contact(doc)
    for list_id, status in memberships.items():
        store.update_contact(account, doc["_id"], domain.membership_update(
            list_id, domain.membership(status, "api", domain.now())))


class _NoFind:
    """The contacts collection, minus find(): counting must not read members."""

    def __init__(self, collection):
        self._collection = collection

    def find(self, *args, **kwargs):
        raise AssertionError("count_members read the members into Python")

    def __getattr__(self, name):
        return getattr(self._collection, name)


def test_members_are_counted_by_status_in_the_database(mongo_db):
    ensure_contacts_indexes(mongo_db)
    store = ContactsStore(mongo_db)
    account, other_account = domain.new_id(), domain.new_id()
    mine, elsewhere = domain.new_id(), domain.new_id()
    statuses = ["subscribed"] * 3 + ["pending"] * 2 + ["unsubscribed"]
    for i, status in enumerate(statuses):
        _member(store, account, f"m{i}@example.com", {mine: status, elsewhere: "subscribed"})
    _member(store, account, "only-elsewhere@example.com", {elsewhere: "subscribed"})
    _member(store, account, "no-list@example.com", {})
    _member(store, other_account, "m0@example.com", {mine: "subscribed"})   # same list id, other account
    store.contacts = _NoFind(store.contacts)
    assert store.count_members(account, mine) == {"subscribed": 3, "pending": 2,
                                                  "unsubscribed": 1, "total": 6}
    assert store.count_members(account, elsewhere) == {"subscribed": 7, "pending": 0,
                                                       "unsubscribed": 0, "total": 7}
    assert store.count_members(account, domain.new_id())["total"] == 0
