"""The contacts HTTP API in-process against the real FerretDB."""

import csv
import io

from services.contacts import domain, handlers, privacy, usecases
from services.contacts.store import ContactsStore
from shared.events import new_event
from tests.integration.contacts.conftest import SALT, published
from tests.integration.contacts.test_import import run_worker, upload

V1 = "/api/v1"


def make_list(client, name="Newsletter"):
    r = client.post(f"{V1}/lists", {"name": name})
    assert r.status_code == 201, r.get_json()
    return r.get_json()["id"]


def make_contact(client, email, **extra):
    r = client.post(f"{V1}/contacts", {"email": email, **extra})
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def found_ids(client, query: str) -> set[str]:
    """The ids GET /contacts?<query> answers with (one page)."""
    return {c["id"] for c in client.get(f"{V1}/contacts?{query}").get_json()["items"]}


def test_an_empty_patch_changes_nothing_and_says_so(client):
    list_id = make_list(client)
    contact = make_contact(client, "empty-patch@example.com")
    client.post(f"{V1}/fields", {"key": "city", "type": "text"})
    segment = client.post(f"{V1}/segments", {"name": "S", "definition": {
        "field": "status", "op": "eq", "value": "active"}}).get_json()
    for path in (f"/lists/{list_id}", f"/contacts/{contact['id']}", "/fields/city",
                 f"/segments/{segment['id']}"):
        response = client.patch(V1 + path, {})
        assert response.status_code == 400, (path, response.get_json())
        assert list(response.get_json()["error"]["details"]) == ["_body"], path


def test_a_list_or_segment_name_is_one_line_and_not_blank(client):
    """"a\r\nb" and "   " were taken: names shown in pickers and written
    as CSV cells, one of them telling nothing apart."""
    list_id = make_list(client)
    segment = {"definition": {"field": "status", "op": "eq", "value": "active"}}
    for name in ("a\r\nb", "   ", "tab\x07bell"):
        for method, path, body in (("post", "/lists", {"name": name}),
                                   ("patch", f"/lists/{list_id}", {"name": name}),
                                   ("post", "/segments", {"name": name, **segment})):
            answer = getattr(client, method)(V1 + path, body)
            assert answer.status_code == 400, (path, name, answer.get_json())
            assert "name" in answer.get_json()["error"]["details"], (path, name)


def test_lists_crud_and_counts(client):
    list_id = make_list(client)
    assert client.post(f"{V1}/lists", {"name": "Newsletter"}).status_code == 409
    r = client.patch(f"{V1}/lists/{list_id}", {"name": "Weekly", "description": "every Monday"})
    assert r.get_json()["name"] == "Weekly"
    make_contact(client, "a@example.com", list_ids=[list_id])
    make_contact(client, "b@example.com", list_ids=[list_id], list_status="pending")
    counts = client.get(f"{V1}/lists/{list_id}").get_json()["counts"]
    assert counts == {"pending": 1, "subscribed": 1, "unsubscribed": 0, "total": 2}
    assert [l["id"] for l in client.get(f"{V1}/lists").get_json()["items"]] == [list_id]


def test_deleting_a_list_keeps_contacts_on_other_lists(client):
    one, two = make_list(client, "one"), make_list(client, "two")
    contact = make_contact(client, "x@example.com", list_ids=[one, two])
    assert client.delete(f"{V1}/lists/{one}").status_code == 204
    after = client.get(f"{V1}/contacts/{contact['id']}").get_json()
    assert set(after["lists"]) == {two}
    assert client.get(f"{V1}/lists/{one}").status_code == 404


def test_addresses_are_validated_and_normalised_one_per_account(client):
    r = client.post(f"{V1}/contacts", {"email": "not an address"})
    assert r.status_code == 400 and "email" in r.get_json()["error"]["details"]
    r = client.post(f"{V1}/contacts", {"email": "a@b.c", "role": "admin"})   # mass assignment
    assert r.status_code == 400 and "role" in r.get_json()["error"]["details"]
    contact = make_contact(client, "  Jane.Doe@Example.COM ", name="Jane")
    assert contact["email"] == "Jane.Doe@example.com"
    assert client.post(f"{V1}/contacts", {"email": "Jane.Doe@EXAMPLE.com"}).status_code == 409
    assert client.post(f"{V1}/contacts", {"email": "jane.doe@example.com"}).status_code == 409
    idn = make_contact(client, "user@Bücher.example")
    assert idn["email"] == "user@bücher.example"
    r = client.post(f"{V1}/contacts", {"email": "a" * 65 + "@example.com"})
    assert r.status_code == 400


def test_custom_fields_are_typed(client):
    for body in ({"key": "city", "type": "text"}, {"key": "age", "type": "number"},
                 {"key": "born", "type": "date"}, {"key": "vip", "type": "boolean"},
                 {"key": "plan", "type": "choice", "choices": ["free", "pro"]}):
        assert client.post(f"{V1}/fields", body).status_code == 201
    assert client.post(f"{V1}/fields", {"key": "Bad Key", "type": "text"}).status_code == 400
    assert client.post(f"{V1}/fields", {"key": "x", "type": "choice"}).status_code == 400
    twice = client.post(f"{V1}/fields", {"key": "y", "type": "choice", "choices": ["a", "a"]})
    assert twice.status_code == 400 and "choices" in twice.get_json()["error"]["details"]
    ok = make_contact(client, "f@example.com", fields={"city": "Pune", "age": 31,
                                                       "born": "1990-05-01", "vip": True,
                                                       "plan": "pro"})
    assert ok["fields"]["born"].startswith("1990-05-01")
    r = client.post(f"{V1}/contacts", {"email": "g@example.com",
                                       "fields": {"age": "old", "plan": "gold", "nope": 1}})
    details = r.get_json()["error"]["details"]["fields"]
    assert r.status_code == 400 and set(details) == {"age", "plan", "nope"}
    r = client.patch(f"{V1}/contacts/{ok['id']}", {"fields": {"vip": "yes"}})
    assert r.status_code == 400


def test_membership_changes_append_the_consent_log_and_emit_events(client, broker):
    list_id = make_list(client)
    contact = make_contact(client, "c@example.com")
    r = client.put(f"{V1}/contacts/{contact['id']}/lists/{list_id}",
                   {"status": "subscribed", "consent": {"via": "form", "ip": "203.0.113.9",
                                                        "source_url": "https://x.test/join",
                                                        "wording": "Yes, send me the newsletter",
                                                        "policy_version": "2024-01"}})
    assert r.status_code == 200 and r.get_json()["lists"][list_id]["status"] == "subscribed"
    client.put(f"{V1}/contacts/{contact['id']}/lists/{list_id}", {"status": "unsubscribed"})
    log = client.get(f"{V1}/contacts/{contact['id']}/consent").get_json()["items"]
    assert [(e["action"], e["via"]) for e in log] == [("subscribe", "form"), ("unsubscribe", "api")]
    assert log[0]["ip"] == "203.0.113.9" and log[0]["policy_version"] == "2024-01"
    assert log[0]["source_url"] == "https://x.test/join" and log[0]["actor"] == "key-test"
    assert log[0]["wording"] == "Yes, send me the newsletter"
    types = [e["type"] for e in published(broker)]
    assert types == ["contact.created", "contact.subscribed", "contact.unsubscribed"]
    assert all("c@example.com" not in str(e) for e in published(broker))
    # A retry of the unsubscribe (its first answer lost) announces it again, logs nothing new.
    client.put(f"{V1}/contacts/{contact['id']}/lists/{list_id}", {"status": "unsubscribed"})
    assert [e["type"] for e in published(broker)][3:] == ["contact.unsubscribed"]
    assert len(client.get(f"{V1}/contacts/{contact['id']}/consent").get_json()["items"]) == 2


def test_a_contact_who_left_a_list_is_subscribed_again_only_with_a_logged_reconsent(client):
    """An unsubscribe from one list writes no suppression entry: a plain
    PUT subscribed the person again (or a double opt-in "confirmed" it
    later), logged as an ordinary subscribe."""
    list_id = make_list(client)
    contact = make_contact(client, "left@example.com", list_ids=[list_id])
    path = f"{V1}/contacts/{contact['id']}/lists/{list_id}"
    assert client.put(path, {"status": "unsubscribed"}).status_code == 200
    for status in ("subscribed", "pending"):
        refused = client.put(path, {"status": status})
        assert refused.status_code == 409, refused.get_json()
        assert refused.get_json()["error"]["code"] == "unsubscribed"
    no_wording = client.put(path, {"status": "subscribed", "reconsent": True})
    assert no_wording.status_code == 400 and "consent" in no_wording.get_json()["error"]["details"]
    again = client.put(path, {"status": "subscribed", "reconsent": True,
                              "consent": {"wording": "Yes, the newsletter again"}})
    assert again.status_code == 200 and again.get_json()["lists"][list_id]["status"] == "subscribed"
    log = client.get(f"{V1}/contacts/{contact['id']}/consent").get_json()["items"]
    assert [e["action"] for e in log][-2:] == ["unsubscribe", "reconsent"]
    assert log[-1]["wording"] == "Yes, the newsletter again"


def test_suppression_blocks_subscribe_until_logged_reconsent(client):
    list_id = make_list(client)
    r = client.post(f"{V1}/suppressions", {"email": "S@Example.com", "reason": "manual"})
    assert r.status_code == 201 and r.get_json()["suppressed"] is True
    entry_id = r.get_json()["id"]
    listed = client.get(f"{V1}/suppressions").get_json()["items"]
    assert [e["id"] for e in listed] == [entry_id] and "email" not in listed[0]
    r = client.post(f"{V1}/contacts", {"email": "s@example.com", "list_ids": [list_id]})
    assert r.status_code == 409 and client.get(f"{V1}/usage").get_json()["contacts"] == 0
    # a re-consent without its wording: refused before anything is stored
    r = client.post(f"{V1}/contacts", {"email": "s@example.com", "list_ids": [list_id],
                                       "reconsent": True})
    assert r.status_code == 400 and "consent" in r.get_json()["error"]["details"]
    assert client.get(f"{V1}/usage").get_json()["contacts"] == 0
    contact = make_contact(client, "s@example.com")
    assert contact["suppressed"] is True
    path = f"{V1}/contacts/{contact['id']}/lists/{list_id}"
    r = client.put(path, {"status": "subscribed"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "suppressed"
    assert client.put(path, {"status": "subscribed", "reconsent": True}).status_code == 400
    r = client.put(path, {"status": "subscribed", "reconsent": True,
                          "consent": {"wording": "Yes, send me the newsletter again"}})
    assert r.status_code == 200 and r.get_json()["suppressed"] is False
    assert client.post(f"{V1}/suppressions/check", {"email": "s@example.com"}).get_json()[
        "suppressed"] is False
    log = client.get(f"{V1}/contacts/{contact['id']}/consent").get_json()["items"]
    assert log[-1]["action"] == "reconsent"


def test_lifting_a_suppression_needs_a_reason(client):
    entry = client.post(f"{V1}/suppressions", {"email": "t@example.com"}).get_json()
    assert client.delete(f"{V1}/suppressions/{entry['id']}", {}).status_code == 400
    assert client.delete(f"{V1}/suppressions/{entry['id']}", {"reason": "typo"}).status_code == 204
    assert client.post(f"{V1}/suppressions/check", {"email": "t@example.com"}).get_json()[
        "suppressed"] is False


def test_search_and_cursor_pagination(client):
    list_id = make_list(client)
    client.post(f"{V1}/fields", {"key": "city", "type": "text"})
    made = [make_contact(client, f"user{i}@example.com", name=f"User {i}",
                         fields={"city": "Pune" if i % 2 else "Goa"},
                         list_ids=[list_id] if i < 3 else [])["id"] for i in range(6)]
    make_contact(client, "Other.Person@Example.com", name="Zed")
    seen, cursor = [], None
    while True:
        q = f"{V1}/contacts?email_prefix=user&limit=4" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(q).get_json()
        seen += [c["id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 6
    by = lambda q: found_ids(client, q)
    assert by("name=zed") == by("email_prefix=other.") == by("email_prefix=OTHER.person@ex")
    assert len(by("name=zed")) == 1
    make_contact(client, "idn@xn--bcher-kva.de")   # stored as idn@bücher.de
    assert by("email_prefix=idn@xn--bcher-kva.de") == by("email_prefix=IDN%40B%C3%BCcher.de") \
        != set()
    assert by(f"list_id={list_id}") == set(made[:3])
    assert by(f"list_id={list_id}&list_status=subscribed&field=city&value=Pune") == {made[1]}
    assert by("email_prefix=.*") == set()           # escaped, never a pattern
    for query, field in (("name=Use%00", "name"), ("email_prefix=a%00b", "email_prefix")):
        refused = client.get(f"{V1}/contacts?{query}")   # MongoDB refuses a NUL in $regex
        assert refused.status_code == 400 and field in refused.get_json()["error"]["details"]
    assert client.get(f"{V1}/contacts?field=nope&value=1").status_code == 400
    assert client.get(f"{V1}/contacts?cursor=eyJpZCI6eyIkZ3QiOiIifX0").status_code == 400


def test_search_matches_either_case_and_any_accent_and_follows_changes(client, other):
    ids = {name: make_contact(client, f"{n}@example.com", name=name)["id"]
           for n, name in enumerate(["İstanbul Tüccar", "Müller", "Straße  Neu", "Zoë"])}
    make_contact(other, "theirs@example.com", name="Müller")   # another account's
    by = lambda q: found_ids(client, q)
    assert by("name=istanbul") == by("name=%C4%B0ST") == {ids["İstanbul Tüccar"]}
    assert by("name=MULLER") == by("name=m%C3%BCll") == {ids["Müller"]}
    assert by("name=strasse%20n") == {ids["Straße  Neu"]}
    assert by("name=zo") == {ids["Zoë"]} and by("name=x") == set()
    # a change of name or address is what a search finds next
    client.patch(f"{V1}/contacts/{ids['Müller']}", {"name": "Åsa Lind", "email": "ÅSA@example.com"})
    assert by("name=muller") == set()
    assert by("name=asa") == by("email_prefix=asa@") == {ids["Müller"]}


def test_segment_text_conditions_on_a_name_match_either_case_and_any_accent(client, other, app):
    """As the search does: a case-insensitive regular expression found
    neither "Müller" for "muller" nor "İstanbul" for "istanbul". Not on
    the address: müller.de and muller.de are two domains."""
    names = ["İstanbul Tüccar", "Müller", "Zoë", "Ann Lee", "Anna Ashlee"]
    ids = {name: make_contact(client, f"{n}@müller.de", name=name)["id"]
           for n, name in enumerate(names)}
    make_contact(client, "other@muller.de", name="Someone")
    make_contact(other, "theirs@example.com", name="Müller")   # another account's

    def segment(field, op, value):
        return client.post(f"{V1}/segments", {"name": f"{field} {op} {value}", "definition": {
            "field": field, "op": op, "value": value}})

    def matched(field, op, value):
        made = segment(field, op, value)
        assert made.status_code == 201, made.get_json()
        preview = client.get(f"{V1}/segments/{made.get_json()['id']}/preview").get_json()
        assert preview["count"] == len(preview["sample"])
        return {c["id"] for c in preview["sample"]}
    assert matched("name", "starts_with", "istanbul") == {ids["İstanbul Tüccar"]}
    assert matched("name", "contains", "TUCCAR") == {ids["İstanbul Tüccar"]}
    assert matched("name", "starts_with", "MULL") == matched("name", "contains", "üll") \
        == {ids["Müller"]}
    assert matched("name", "starts_with", "ann ") == {ids["Ann Lee"]}
    assert matched("name", "contains", " lee") == {ids["Ann Lee"]}
    assert matched("name", "starts_with", "x") == set()
    assert matched("email", "contains", "@MÜLLER.de") == set(ids.values())
    refused = segment("name", "contains", "\u0301")   # would match every name
    assert refused.status_code == 400
    assert "definition.value" in refused.get_json()["error"]["details"]
    # a contact stored before it had keys is found as it was, by its text
    store = ContactsStore(app.extensions["runtime"].db)
    store.contacts.update_one({"_id": ids["Zoë"]}, {"$unset": {"email_key": "", "name_key": ""}})
    assert matched("name", "starts_with", "ZO") == {ids["Zoë"]}


def test_search_keys_missing_or_stale_are_put_right_until_a_pass_finds_none(client, app):
    from services.contacts.search_backfill import MARKER, backfill_search_keys
    store = ContactsStore(app.extensions["runtime"].db)
    old = make_contact(client, "Old.Timer@example.com", name="Émile Old")
    renamed = make_contact(client, "renamed@example.com", name="Before")
    odd = make_contact(client, "odd@example.com")
    # as stored before the keys; renamed by an older pod, which wrote no key;
    # and a name from before the name rule (a number), which has no key
    store.contacts.update_one({"_id": old["id"]}, {"$unset": {"email_key": "", "name_key": ""}})
    store.contacts.update_one({"_id": renamed["id"]}, {"$set": {"name": "Zoë After"}})
    store.contacts.update_one({"_id": odd["id"]}, {"$set": {"name": 42},
                                                   "$unset": {"name_key": ""}})
    by = lambda q: found_ids(client, q)
    assert by("name=emile") == set() and by("name=zoe") == set()
    migrations = store.contacts.database["migrations"]
    migrations.delete_one({"_id": MARKER})

    assert backfill_search_keys(store) == 3
    assert migrations.find_one({"_id": MARKER}) is None        # not until a pass changes nothing
    assert by("name=emile") == by("email_prefix=old.t") == {old["id"]}
    assert by("name=zoe") == {renamed["id"]} and by("name=before") == set()
    assert by("email_prefix=odd@") == {odd["id"]}
    assert backfill_search_keys(store) == 0
    assert migrations.find_one({"_id": MARKER}) is not None
    store.contacts.update_one({"_id": old["id"]}, {"$unset": {"email_key": ""}})
    assert backfill_search_keys(store) == 0                    # done: later starts skip it


def test_an_address_change_keeps_a_name_key_written_meanwhile(client, app):
    # Each change writes its own field's key only: one computed from the
    # contact as read would put back the key of a name changed in between.
    store = ContactsStore(app.extensions["runtime"].db)
    contact = make_contact(client, "first@example.com", name="Ann")
    store.contacts.update_one({"_id": contact["id"]}, {"$set": {"name_key": "written meanwhile"}})
    client.patch(f"{V1}/contacts/{contact['id']}", {"email": "second@example.com"})
    stored = store.contacts.find_one({"_id": contact["id"]})
    assert stored["email_key"] == "second@example.com"
    assert stored["name_key"] == "written meanwhile"


def test_segments_validate_preview_and_refuse_operators(client):
    list_id = make_list(client)
    client.post(f"{V1}/fields", {"key": "city", "type": "text"})
    pune = make_contact(client, "p@example.com", fields={"city": "Pune"}, list_ids=[list_id])
    make_contact(client, "g@example.com", fields={"city": "Goa"}, list_ids=[list_id])
    definition = {"all": [{"field": "fields.city", "op": "eq", "value": "Pune"},
                          {"field": "created_at", "op": "within_days", "value": 90},
                          {"field": "list", "op": "subscribed", "value": list_id}]}
    r = client.post(f"{V1}/segments", {"name": "Pune", "definition": definition})
    assert r.status_code == 201, r.get_json()
    preview = client.get(f"{V1}/segments/{r.get_json()['id']}/preview").get_json()
    assert preview["count"] == 1 and preview["sample"][0]["id"] == pune["id"]
    everyone = client.post(f"{V1}/segments", {"name": "all", "definition": {
        "field": "list", "op": "member", "value": list_id}}).get_json()
    for sample, shown in (("0", 0), ("1", 1), ("100", 2)):   # 0: the count alone, not everyone
        preview = client.get(f"{V1}/segments/{everyone['id']}/preview?sample={sample}").get_json()
        assert preview["count"] == 2 and len(preview["sample"]) == shown, (sample, preview)
    nul = client.post(f"{V1}/segments", {"name": "NUL", "definition": {
        "field": "fields.city", "op": "contains", "value": "Pu\u0000ne"}})
    assert nul.status_code == 400 and "definition.value" in nul.get_json()["error"]["details"]
    for hostile in ({"$where": "sleep(1000)"},
                    {"field": "fields.city", "op": "$ne", "value": None},
                    {"field": "$where", "op": "eq", "value": "x"},
                    {"field": "fields.city", "op": "eq", "value": {"$gt": ""}},
                    {"all": [{"field": "email.$", "op": "eq", "value": "a"}]}):
        r = client.post(f"{V1}/segments", {"name": "bad", "definition": hostile})
        assert r.status_code == 400, hostile
        assert r.get_json()["error"]["details"]


def test_usage_counts_the_callers_data(client, other):
    make_list(client)
    make_contact(client, "u1@example.com")
    make_contact(client, "u2@example.com")
    make_contact(other, "u1@example.com")
    assert client.get(f"{V1}/usage").get_json() == {"lists": 1, "contacts": 2}
    assert other.get(f"{V1}/usage").get_json() == {"lists": 0, "contacts": 1}


def test_another_accounts_ids_are_404_everywhere(client, other):
    list_id = make_list(client)
    contact = make_contact(client, "mine@example.com", list_ids=[list_id])
    field = client.post(f"{V1}/fields", {"key": "city", "type": "text"}).get_json()
    segment = client.post(f"{V1}/segments", {"name": "s", "definition": {
        "field": "status", "op": "eq", "value": "active"}}).get_json()
    supp = client.post(f"{V1}/suppressions", {"email": "gone@example.com"}).get_json()
    cid, lid = contact["id"], list_id
    attempts = [
        ("GET", f"/lists/{lid}", None), ("PATCH", f"/lists/{lid}", {"name": "x"}),
        ("DELETE", f"/lists/{lid}", None),
        ("GET", f"/contacts/{cid}", None), ("PATCH", f"/contacts/{cid}", {"name": "x"}),
        ("DELETE", f"/contacts/{cid}", None), ("GET", f"/contacts/{cid}/consent", None),
        ("PUT", f"/contacts/{cid}/lists/{lid}", {"status": "unsubscribed"}),
        ("GET", f"/fields/{field['id']}", None), ("DELETE", f"/fields/{field['id']}", None),
        ("GET", f"/segments/{segment['id']}", None),
        ("GET", f"/segments/{segment['id']}/preview", None),
        ("DELETE", f"/segments/{segment['id']}", None),
        ("DELETE", f"/suppressions/{supp['id']}", {"reason": "x"}),
        ("GET", f"/contacts?list_id={lid}", None),
    ]
    for method, path, body in attempts:
        r = other.call(method, V1 + path, body)
        assert r.status_code == 404, (method, path, r.status_code)
    assert other.get(f"{V1}/contacts").get_json()["items"] == []
    assert other.get(f"{V1}/contacts?list_id={lid}").get_json()["error"]["details"] == {
        "list_id": ["no list with this id in the account"]}   # which part of the query
    assert client.get(f"{V1}/contacts/{cid}").status_code == 200
    assert client.get(f"{V1}/lists/{lid}").status_code == 200


def test_an_erasure_takes_the_persons_address_out_of_segments(client, app):
    """A segment naming the person's address kept it after the erasure,
    returned by GET /segments/<id>. An exact condition on it keeps its
    meaning without it (the person is no contact any more); a name, a
    prefix or another value may be about other people and stays."""
    jane = make_contact(client, "Jane.Roe@Example.com", name="Jane Roe")
    definition = {"any": [
        {"field": "email", "op": "eq", "value": "jane.roe@example.COM "},
        {"field": "email", "op": "in", "value": ["Jane.Roe@example.com", "kept@example.com"]},
        {"not": {"field": "email", "op": "ne", "value": "jane.roe@example.com"}},
        {"field": "email", "op": "starts_with", "value": "jane.roe@example.com"},
        {"not": {"field": "name", "op": "eq", "value": "jane roe"}}]}
    segment = client.post(f"{V1}/segments", {"name": "One person", "definition": definition})
    assert segment.status_code == 201, segment.get_json()
    privacy.handle_privacy_request(app.extensions["runtime"], new_event(
        "privacy.requested", source="sandesh.privacy", subject="r1", account_id=client.account_id,
        data={"request_id": "r1", "kind": "erasure",
              "subject": {"kind": "contact", "contact_id": jane["id"]}}))
    after = client.get(f"{V1}/segments/{segment.get_json()['id']}").get_json()["definition"]
    assert after == {"any": [
        {"field": "email", "op": "eq", "value": "(erased)"},
        {"field": "email", "op": "in", "value": ["(erased)", "kept@example.com"]},
        {"not": {"field": "email", "op": "ne", "value": "(erased)"}},
        {"field": "email", "op": "starts_with", "value": "jane.roe@example.com"},
        {"not": {"field": "name", "op": "eq", "value": "jane roe"}}]}
    preview = client.get(f"{V1}/segments/{segment.get_json()['id']}/preview")
    assert preview.status_code == 200, preview.get_json()


def test_an_erased_address_is_never_stored_again(client, other, app, settings):
    list_id = make_list(client)
    jane = make_contact(client, "Jane@example.com", name="Jane", list_ids=[list_id])
    privacy.handle_privacy_request(app.extensions["runtime"], new_event(
        "privacy.requested", source="sandesh.privacy", subject="r1", account_id=client.account_id,
        data={"request_id": "r1", "kind": "erasure",
              "subject": {"kind": "contact", "contact_id": jane["id"]}}))
    assert client.get(f"{V1}/contacts/{jane['id']}").status_code == 404
    check = client.post(f"{V1}/suppressions/check", {"email": "jane@example.com"}).get_json()
    assert (check["suppressed"], check["scope"], check["reason"]) == (True, "platform", "erasure")
    r = client.post(f"{V1}/contacts", {"email": "JANE@example.com"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "erased"
    elsewhere = make_contact(other, "jane@example.com")      # another account's own contact
    assert elsewhere["suppressed"] is True                    # kept, never mailed
    seen = other.post(f"{V1}/suppressions/check", {"email": "jane@example.com"}).get_json()
    assert (seen["suppressed"], seen["scope"], seen["reason"]) == (True, "platform", None)
    bob = make_contact(client, "bob@example.com")
    r = client.patch(f"{V1}/contacts/{bob['id']}", {"email": "jane@example.com"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "erased"
    job = upload(client, list_id, b"email\njane@example.com\n").get_json()
    run_worker(app, settings)
    counters = client.get(f"{V1}/imports/{job['id']}").get_json()["counters"]
    assert (counters["created"], counters["skipped_suppressed"]) == (0, 1)
    assert client.get(f"{V1}/usage").get_json()["contacts"] == 1          # bob only
    r = client.get(f"{V1}/contacts?status=erased")                          # not a stored status
    assert r.status_code == 400 and "status" in r.get_json()["error"]["details"]


def _ports(app):
    runtime = app.extensions["runtime"]
    return usecases.Ports(ContactsStore(runtime.db), runtime.producer(), SALT)


def test_search_by_global_status(client, app):
    ports = _ports(app)
    active = make_contact(client, "fine@example.com")
    bounced = make_contact(client, "bounce@example.com")
    angry = make_contact(client, "angry@example.com")
    for kind, contact, extra in (("delivery.bounced", bounced, {"bounce_type": "hard"}),
                                 ("tracking.complained", angry, {})):
        event = new_event(kind, source="test", subject="c" * 32, account_id=client.account_id,
                          data={"campaign_id": "c" * 32, "contact_id": contact["id"],
                                "job_id": "j" * 32, **extra})
        (handlers.bounced if kind == "delivery.bounced" else handlers.complained)(ports, event)
    by = lambda q: [c["id"] for c in client.get(f"{V1}/contacts?{q}").get_json()["items"]]
    assert by("status=active") == [active["id"]]
    assert by("status=bounced") == [bounced["id"]]
    assert by("status=complained") == [angry["id"]]
    r = client.get(f"{V1}/contacts?status=gone")
    assert r.status_code == 400 and "status" in r.get_json()["error"]["details"]


def test_the_suppression_log_keeps_each_change_with_its_reason(client, app):
    entry = client.post(f"{V1}/suppressions", {"email": "Log.Me@example.com", "reason": "manual",
                                               "note": "asked by phone"}).get_json()
    client.post(f"{V1}/suppressions", {"email": "log.me@example.com"})       # idempotent
    assert client.delete(f"{V1}/suppressions/{entry['id']}",
                         {"reason": "added by mistake"}).status_code == 204
    db = app.extensions["runtime"].db
    log = list(db.suppression_log.find({"account_id": client.account_id}).sort("at", 1))
    assert [(e["action"], e["reason"], e["actor"]) for e in log] == \
        [("add", "manual", "key-test"), ("remove", "added by mistake", "key-test")]
    assert log[0]["note"] == "asked by phone" and log[0]["email_hash"] == entry["email_hash"]
    assert "log.me" not in str(log).lower()                                 # the hash only


def test_segment_export_is_formula_safe_and_the_accounts_own(client, other):
    for who in (client, other):
        assert who.post(f"{V1}/fields", {"key": "city", "type": "text"}).status_code == 201
    hostile = ["=HYPERLINK(\"http://x\")", "+1+2", "-3", "@SUM(A1)", "\tTab", "Plain"]
    for i, name in enumerate(hostile):
        make_contact(client, f"s{i}@example.com", name=name, fields={"city": "Pune"})
    make_contact(client, "goa@example.com", name="Goa", fields={"city": "Goa"})
    make_contact(other, "theirs@example.com", name="=theirs", fields={"city": "Pune"})
    pune = {"field": "fields.city", "op": "eq", "value": "Pune"}
    mine = client.post(f"{V1}/segments", {"name": "Pune", "definition": pune}).get_json()
    theirs = other.post(f"{V1}/segments", {"name": "Pune", "definition": pune}).get_json()
    r = client.get(f"{V1}/segments/{mine['id']}/export")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert sorted(row["name"] for row in rows) == sorted(
        ["'=HYPERLINK(\"http://x\")", "'+1+2", "'-3", "'@SUM(A1)", "'\tTab", "Plain"])
    assert {row["fields.city"] for row in rows} == {"Pune"}
    assert other.get(f"{V1}/segments/{mine['id']}/export").status_code == 404
    rows = list(csv.DictReader(io.StringIO(
        other.get(f"{V1}/segments/{theirs['id']}/export").get_data(as_text=True))))
    assert [(row["email"], row["name"]) for row in rows] == [("theirs@example.com", "'=theirs")]


PAGED = ["contacts", "lists", "fields", "segments", "suppressions", "consent", "imports"]


def test_paged_collections_keep_ids_the_local_server_can_page_by_index(client, app, settings):
    """Every page is `_id` past the cursor, sorted by `_id`. The local
    FerretDB reads that through its `_id` index only while every `_id` in the
    collection is a plain printable string (docs/local-stack.md); one other
    `_id` and each page reads and sorts the whole collection again. So
    everything the service writes to a paged collection keeps to that."""
    list_id = make_list(client)
    client.post(f"{V1}/fields", {"key": "city", "type": "text"})
    client.post(f"{V1}/segments", {"name": "Pune", "definition": {
        "field": "fields.city", "op": "eq", "value": "Pune"}})
    client.post(f"{V1}/suppressions", {"email": "gone@example.com"})
    make_contact(client, "api@example.com", list_ids=[list_id])
    upload(client, list_id, b"email,city\nimported@example.com,Pune\n")
    run_worker(app, settings)
    assert client.get(f"{V1}/usage").get_json()["contacts"] == 2

    db = app.extensions["runtime"].db
    for name in PAGED:
        assert db[name].estimated_document_count() > 0, name
        plan = db.command("explain", {"find": name, "filter": {"account_id": client.account_id},
                                      "sort": {"_id": 1}, "limit": 51})
        assert plan["sortPushdown"], f"{name}: pages are sorted in memory"


def test_a_delete_whose_announcement_failed_is_done_by_the_retry(client, app, broker,
                                                                 monkeypatch):
    """The contact was deleted, then contact.erased failed to go out: the
    client saw an error, its retry a 404, and the sender and tracking never
    heard of the deletion. It is now announced first and deleted after."""
    contact = make_contact(client, "gone@example.com")
    producer = app.extensions["runtime"].producer()
    real_flush = producer.flush

    flushes = []

    def broker_down_after_the_audit(*args, **kwargs):  # the audit entry goes out first
        flushes.append(1)
        if len(flushes) > 1:
            raise TimeoutError("broker down")
        return real_flush(*args, **kwargs)

    monkeypatch.setattr(producer, "flush", broker_down_after_the_audit)
    assert client.delete(f"{V1}/contacts/{contact['id']}").status_code >= 500
    monkeypatch.setattr(producer, "flush", real_flush)
    assert client.get(f"{V1}/contacts/{contact['id']}").status_code == 200
    assert client.delete(f"{V1}/contacts/{contact['id']}").status_code == 204
    assert client.get(f"{V1}/contacts/{contact['id']}").status_code == 404
    assert [e["subject"] for e in published(broker) if e["type"] == "contact.erased"][-1] == \
        contact["id"]


def test_a_suppression_lift_whose_announcement_failed_is_finished_by_the_retry(
        client, app, broker, monkeypatch):
    """The entry was deleted and the removal logged, then contact.unsuppressed
    failed to go out: the retry met a 404, and the sender skipped the
    address for good. The entry now stays, still suppressing, until the
    announcement is out."""
    entry = client.post(f"{V1}/suppressions", {"email": "lifted@example.com"}).get_json()
    producer = app.extensions["runtime"].producer()
    real_flush = producer.flush

    def broker_down(*args, **kwargs):
        raise TimeoutError("broker down")

    monkeypatch.setattr(producer, "flush", broker_down)
    removal = {"reason": "added by mistake"}
    assert client.delete(f"{V1}/suppressions/{entry['id']}", removal).status_code >= 500
    monkeypatch.setattr(producer, "flush", real_flush)
    assert client.post(f"{V1}/suppressions/check",
                       {"email": "lifted@example.com"}).get_json()["suppressed"] is True
    [listed] = client.get(f"{V1}/suppressions").get_json()["items"]
    assert listed["id"] == entry["id"] and listed["lift_pending"] is True

    assert client.delete(f"{V1}/suppressions/{entry['id']}",
                         {"reason": "a second try"}).status_code == 204
    assert client.post(f"{V1}/suppressions/check",
                       {"email": "lifted@example.com"}).get_json()["suppressed"] is False
    lifted = [e for e in published(broker) if e["type"] == "contact.unsuppressed"
              and e["data"]["email_hash"] == entry["email_hash"]]
    assert lifted
    log = list(app.extensions["runtime"].db["suppression_log"].find(
        {"email_hash": entry["email_hash"], "action": "remove"}))
    assert [e["reason"] for e in log] == ["added by mistake"]  # the lift the first try began


def test_suppressing_again_calls_off_a_lift_left_unfinished(client, app, monkeypatch):
    entry = client.post(f"{V1}/suppressions", {"email": "undecided@example.com"}).get_json()
    producer = app.extensions["runtime"].producer()
    real_flush = producer.flush
    monkeypatch.setattr(producer, "flush", lambda *a, **k: (_ for _ in ()).throw(
        TimeoutError("broker down")))
    client.delete(f"{V1}/suppressions/{entry['id']}", {"reason": "mistake?"})
    monkeypatch.setattr(producer, "flush", real_flush)
    client.post(f"{V1}/suppressions", {"email": "undecided@example.com"})
    [listed] = client.get(f"{V1}/suppressions").get_json()["items"]
    assert listed["id"] == entry["id"] and listed["lift_pending"] is False


def test_a_suppressed_contact_moved_to_a_new_address_is_unsuppressed_for_the_sender(client,
                                                                                     broker):
    """The sender keeps the contact's suppressed flag from the events: after
    an address change it skipped every job of the contact for good, while
    contacts put it in every audience."""
    contact = make_contact(client, "blocked.old@example.com")
    client.post(f"{V1}/suppressions", {"email": "blocked.old@example.com"})
    moved = client.patch(f"{V1}/contacts/{contact['id']}", {"email": "fresh.new@example.com"})
    assert moved.status_code == 200 and moved.get_json()["suppressed"] is False
    [lifted] = [e for e in published(broker) if e["type"] == "contact.unsuppressed"
                and e["subject"] == contact["id"]]
    assert lifted["data"]["email_hash"] == domain.address("fresh.new@example.com", SALT).hash
    client.post(f"{V1}/suppressions", {"email": "blocked.other@example.com"})
    client.patch(f"{V1}/contacts/{contact['id']}", {"email": "blocked.other@example.com"})
    suppressed = [e for e in published(broker) if e["type"] == "contact.suppressed"
                  and e["subject"] == contact["id"]]
    assert suppressed[-1]["data"]["email_hash"] == \
        domain.address("blocked.other@example.com", SALT).hash


def test_a_subscription_whose_write_failed_still_gets_its_consent_entry_on_retry(client,
                                                                                 monkeypatch):
    """The membership was written, then the consent entry failed: the
    client's retry found the status set and wrote no entry, leaving a
    subscription (here a lifted suppression) with nothing in the log."""
    list_id = make_list(client)
    client.post(f"{V1}/suppressions", {"email": "again@example.com"})
    contact = make_contact(client, "again@example.com")
    path = f"{V1}/contacts/{contact['id']}/lists/{list_id}"
    body = {"status": "subscribed", "reconsent": True,
            "consent": {"wording": "Yes, again", "ip": "198.51.100.7"}}
    real = ContactsStore.append_consent

    def database_blip(self, *args, **kwargs):
        raise TimeoutError("database blip")

    monkeypatch.setattr(ContactsStore, "append_consent", database_blip)
    assert client.put(path, body).status_code >= 500
    monkeypatch.setattr(ContactsStore, "append_consent", real)
    assert client.put(path, body).status_code == 200
    log = client.get(f"{V1}/contacts/{contact['id']}/consent").get_json()["items"]
    assert "reconsent" in [e["action"] for e in log]
    assert any(e["wording"] == "Yes, again" for e in log)


def test_a_change_that_clashes_with_another_list_or_contact_is_a_409_naming_the_field(client):
    """FerretDB refuses an update that breaks a unique index with code 1,
    not MongoDB's 11000: it came out as a 500."""
    make_list(client, "Taken")
    other = make_list(client, "Other")
    r = client.patch(f"{V1}/lists/{other}", {"name": "Taken"})
    assert r.status_code == 409, r.get_json()
    assert r.get_json()["error"]["details"] == {"name": ["a list with this name exists"]}
    make_contact(client, "taken@example.com")
    contact = make_contact(client, "mine@example.com")
    r = client.patch(f"{V1}/contacts/{contact['id']}", {"email": "Taken@example.com"})
    assert r.status_code == 409, r.get_json()
    assert list(r.get_json()["error"]["details"]) == ["email"]
    assert client.get(f"{V1}/contacts/{contact['id']}").get_json()["email"] == "mine@example.com"
    r = client.post(f"{V1}/lists", {"name": "Taken"})
    assert r.status_code == 409 and list(r.get_json()["error"]["details"]) == ["name"]


def test_a_name_with_a_line_break_or_a_field_with_a_control_character_is_refused(client):
    """The name goes into To:, and the sender refuses a line break there, so
    every message to the contact failed. Tabs are fine, and a text field may
    hold lines (an address)."""
    client.post(f"{V1}/fields", {"key": "city", "type": "text"})
    for body in ({"email": "crlf@example.com", "name": "Eve\r\nBcc: x@example.com"},
                 {"email": "nul@example.com", "name": "Eve\x00"},
                 {"email": "field@example.com", "fields": {"city": "Pu\x00ne"}}):
        r = client.post(f"{V1}/contacts", body)
        assert r.status_code == 400, (body, r.get_json())
        details = r.get_json()["error"]["details"]
        assert "name" in details or "fields.city" in details or "fields" in details, details
    contact = make_contact(client, "tab@example.com", name="Eve\tAdams",
                           fields={"city": "Pune\r\nMaharashtra"})
    r = client.patch(f"{V1}/contacts/{contact['id']}", {"name": "Eve\nAdams"})
    assert r.status_code == 400 and "name" in r.get_json()["error"]["details"]
    assert client.get(f"{V1}/contacts/{contact['id']}").get_json()["name"] == "Eve\tAdams"


def test_an_unknown_query_parameter_is_a_400_naming_it(client):
    """It was dropped: a mistyped filter answered with every contact."""
    make_contact(client, "someone@example.com")
    r = client.get(f"{V1}/contacts?emai_prefix=zz")
    assert r.status_code == 400, r.get_json()
    assert "emai_prefix" in str(r.get_json()["error"]["details"])
    assert client.get(f"{V1}/contacts?email_prefix=zz").get_json()["items"] == []


def test_a_field_a_segment_uses_cannot_be_deleted_until_the_segment_goes(client):
    """Deleted, it made the segment a 400 to preview, and a campaign to it
    went to nobody."""
    field = client.post(f"{V1}/fields", {"key": "city", "type": "text"}).get_json()
    segment = client.post(f"{V1}/segments", {"name": "Pune people", "definition": {
        "any": [{"field": "status", "op": "eq", "value": "active"},
                {"not": {"field": "fields.city", "op": "eq", "value": "Pune"}}]}}).get_json()
    r = client.delete(f"{V1}/fields/{field['id']}")
    assert r.status_code == 409 and "Pune people" in r.get_json()["error"]["message"]
    assert client.get(f"{V1}/segments/{segment['id']}/preview").status_code == 200
    assert client.delete(f"{V1}/segments/{segment['id']}").status_code == 204
    assert client.delete(f"{V1}/fields/{field['id']}").status_code == 204


def test_a_segment_whose_list_was_deleted_is_a_409_to_preview_and_export(client):
    """A 400 on a GET named no input of the request: the segment must change."""
    list_id = client.post(f"{V1}/lists", {"name": "Gone soon"}).get_json()["id"]
    segment = client.post(f"{V1}/segments", {"name": "On it", "definition": {
        "field": "list", "op": "member", "value": list_id}}).get_json()
    assert client.delete(f"{V1}/lists/{list_id}").status_code == 204
    for path in ("preview", "export"):
        r = client.get(f"{V1}/segments/{segment['id']}/{path}")
        assert r.status_code == 409, (path, r.get_json())
        error = r.get_json()["error"]
        assert error["code"] == "segment_stale" and "definition.value" in error["details"], error


def test_head_of_an_export_is_refused_where_a_get_is_audited(client):
    """Flask answers HEAD by running the GET: a link checker's HEAD was
    audited as a download of the whole list."""
    list_id = client.post(f"{V1}/lists", {"name": "Checked"}).get_json()["id"]
    segment = client.post(f"{V1}/segments", {"name": "All on it", "definition": {
        "field": "list", "op": "member", "value": list_id}}).get_json()
    for path in (f"{V1}/lists/{list_id}/export", f"{V1}/segments/{segment['id']}/export"):
        head = client.call("HEAD", path)
        assert head.status_code == 405 and head.headers["Allow"] == "GET", path
        assert client.get(path).status_code == 200


def test_a_segment_preview_says_how_many_a_campaign_would_reach(client):
    """The count took in contacts no campaign reaches, and the fan-out sent
    to fewer than the preview promised, with nothing to say why."""
    assert client.post(f"{V1}/fields", {"key": "city", "type": "text"}).status_code == 201
    list_id = client.post(f"{V1}/lists", {"name": "News"}).get_json()["id"]
    pune = {"fields": {"city": "Pune"}}
    make_contact(client, "in@example.com", list_ids=[list_id], **pune)
    left = make_contact(client, "left@example.com", list_ids=[list_id], **pune)
    client.put(f"{V1}/contacts/{left['id']}/lists/{list_id}", {"status": "unsubscribed"})
    make_contact(client, "nowhere@example.com", **pune)
    make_contact(client, "blocked@example.com", list_ids=[list_id], **pune)
    assert client.post(f"{V1}/suppressions", {"email": "blocked@example.com"}).status_code in (200, 201)
    segment = client.post(f"{V1}/segments", {"name": "Pune", "definition": {
        "field": "fields.city", "op": "eq", "value": "Pune"}}).get_json()
    preview = client.get(f"{V1}/segments/{segment['id']}/preview").get_json()
    assert (preview["count"], preview["mailable"]) == (4, 1)


def test_a_segment_preview_of_list_members_reaches_only_its_subscribers(client):
    """`mailable` counted a member who unsubscribed from the list, and the
    campaign then mailed them through another list."""
    news = client.post(f"{V1}/lists", {"name": "News"}).get_json()["id"]
    offers = client.post(f"{V1}/lists", {"name": "Offers"}).get_json()["id"]
    make_contact(client, "reader@example.com", list_ids=[news, offers])
    left = make_contact(client, "left@example.com", list_ids=[news, offers])
    client.put(f"{V1}/contacts/{left['id']}/lists/{news}", {"status": "unsubscribed"})
    segment = client.post(f"{V1}/segments", {"name": "News", "definition": {
        "field": "list", "op": "member", "value": news}}).get_json()
    preview = client.get(f"{V1}/segments/{segment['id']}/preview").get_json()
    assert (preview["count"], preview["mailable"]) == (2, 1)


def test_a_segment_excluding_an_address_leaves_it_out_however_it_is_written(client):
    """Compared as typed, `CEO@Example.com` and `boss@xn--bcher-kva.de` missed
    the contacts stored as `ceo@example.com` and `boss@bücher.de`: an
    exclusion by address mailed the people it meant to leave out."""
    list_id = client.post(f"{V1}/lists", {"name": "All"}).get_json()["id"]
    staff = make_contact(client, "staff@example.com", list_ids=[list_id])
    make_contact(client, "ceo@example.com", list_ids=[list_id])
    boss = make_contact(client, "boss@bücher.de", list_ids=[list_id])
    segment = client.post(f"{V1}/segments", {"name": "Not the bosses", "definition": {"all": [
        {"field": "list", "op": "member", "value": list_id},
        {"not": {"field": "email", "op": "in",
                 "value": ["CEO@Example.com", "boss@xn--bcher-kva.de"]}}]}})
    assert segment.status_code == 201, segment.get_json()
    preview = client.get(f"{V1}/segments/{segment.get_json()['id']}/preview").get_json()
    assert [c["id"] for c in preview["sample"]] == [staff["id"]]
    only = client.post(f"{V1}/segments", {"name": "The boss", "definition": {
        "field": "email", "op": "eq", "value": "Boss@XN--BCHER-KVA.de"}}).get_json()
    assert [c["id"] for c in client.get(f"{V1}/segments/{only['id']}/preview")
            .get_json()["sample"]] == [boss["id"]]
    refused = client.post(f"{V1}/segments", {"name": "x", "definition": {
        "field": "email", "op": "eq", "value": "not an address"}})
    assert refused.status_code == 400 and "definition.value" in refused.get_json()["error"]["details"]
