"""What the privacy service itself holds of an erased contact or account
(real FerretDB): a rectification's new values, and the rolled-up aggregates."""
from services.privacy.store import PrivacyStore


def _rectification(request_id, account_id, contact_id, new_name):
    return {"_id": request_id, "account_id": account_id, "kind": "rectification",
            "status": "needs_attention", "changes": {"name": new_name},
            "subject": {"kind": "contact", "contact_id": contact_id}}


def test_erasures_leave_no_rectification_values_nor_an_accounts_aggregates(mongo_db):
    """A rectification's new values were cleared only once it completed, so
    one that needed attention kept them after the contact's (or the
    account's) erasure; and an account's rolled-up aggregates outlived it."""
    store = PrivacyStore(mongo_db)
    mongo_db.requests.insert_many([_rectification("r1", "a", "c1", "Priya R"),
                                   _rectification("r2", "a", "c2", "Kept Until Erased"),
                                   _rectification("r3", "b", "c3", "Gone With Account")])
    mongo_db.aggregates.insert_many([
        {"_id": "a|2026-01-01|x.com", "account_id": "a", "day": "2026-01-01", "sent": 9},
        {"_id": "b|2026-01-01|x.com", "account_id": "b", "day": "2026-01-01", "sent": 4}])

    store.forget_contacts("a", ["c1"])
    store.forget_account("b")

    changes = {r["_id"]: r.get("changes") for r in mongo_db.requests.find()}
    assert changes == {"r1": None, "r2": {"name": "Kept Until Erased"}, "r3": None}
    assert [d["account_id"] for d in mongo_db.aggregates.find()] == ["a"]
