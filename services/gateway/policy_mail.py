"""A published privacy policy is mailed to every account user through the
platform's own send path: a *system* campaign of the platform account,
counted and tracked like any other.

The platform account (created on first use, marked `platform: true` in the
gateway's accounts) keeps one contacts list, "Account users", that mirrors
the gateway's users at each publication: every user is added (an existing
contact is left as it is). The campaign goes to that list; contacts' fan-out,
the senders, campaigns' progress and tracking do the rest. A deleted user's
address leaves the list with them (forget_users), unless the same address
is still a user of another account; a corrected one is corrected there too
(correct_user).

Why the gateway calls contacts and campaigns synchronously here: it is the
only service that knows the users, and the gateway is the one synchronous
caller of service APIs.
"""
from __future__ import annotations

import html
import json
from urllib.parse import urlencode

from flask import current_app
from pymongo.errors import DuplicateKeyError

from services.gateway.store import now
from shared.http.errors import ApiError
from shared.http.internal_auth import Identity
from shared.header_text import HEADER_CONTROLS

LIST_NAME = "Account users"
CONTACT_NAME_MAX = 200   # the contacts API's limit; a user's name may be longer


def _contact_name(name: str | None) -> str:
    """A user's name as contacts takes it: one line (contacts refuses a line
    break or control character, and one user stored with one failed the
    whole mailing), at most CONTACT_NAME_MAX characters."""
    return " ".join(HEADER_CONTROLS.sub(" ", name or "").split())[:CONTACT_NAME_MAX]


class NotifyFailed(RuntimeError):
    pass


def _call(identity: Identity, service: str, method: str, path: str, body=None, ok=(200, 201, 202)):
    upstreams = current_app.extensions["upstreams"]
    try:
        response = upstreams._call(service, method, path, identity,
                                   {"Content-Type": "application/json",
                                    "Accept": "application/json"},
                                   data=json.dumps(body) if body is not None else None)
    except ApiError as exc:
        # The service is down or slow (502/504): the policy, published
        # already, still stands; the notice is what failed. Raised as is,
        # the operator saw an error and published the policy again.
        raise NotifyFailed(f"{service} {method} {path.split('?')[0]}: {exc.message}") from None
    if response.status_code not in ok:
        raise NotifyFailed(f"{service} {method} {path.split('?')[0]}: {response.status_code} "
                           f"{response.text[:200]}")
    try:
        return response.json() if response.content else None
    except ValueError:
        raise NotifyFailed(f"{service} {method} {path.split('?')[0]}: an answer that is not "
                           "JSON") from None


# The platform account's id when this version makes it: a fixed one, so
# that two publications at once make one (a random id each made two, and a
# user's erasure cleaned only the list of the one it found). One made before
# keeps its id.
PLATFORM_ACCOUNT_ID = "0" * 31 + "1"


def platform_account(db) -> str:
    found = db["accounts"].find_one({"platform": True}, {"_id": 1})
    if found:
        return found["_id"]
    account = {"_id": PLATFORM_ACCOUNT_ID, "name": "Sandesh platform", "postal_address": "",
               "rate_limit_per_minute": 0, "status": "active", "platform": True,
               "created_at": now()}
    try:
        db["accounts"].insert_one(account)
    except DuplicateKeyError:
        pass   # the other publication made it
    return PLATFORM_ACCOUNT_ID


def _users_list(identity: Identity) -> str:
    cursor = None
    while True:
        page = _call(identity, "contacts", "GET",
                     "/api/v1/lists?limit=500" + (f"&cursor={cursor}" if cursor else ""))
        for item in page["items"]:
            if item["name"] == LIST_NAME:
                return item["id"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return _call(identity, "contacts", "POST", "/api/v1/lists",
                 {"name": LIST_NAME, "description": "every user of every account"})["id"]


def _inert(text: str) -> str:
    """Text for the notice's template source: HTML-escaped, and its braces
    as character references, so that `{{ ... }}` or `{% ... %}` in what the
    operator wrote is shown as written, never run by the template engine
    (nor made the template fail to compile)."""
    return html.escape(text).replace("{", "&#123;").replace("}", "&#125;")


def notify_account_users(db, policy: dict) -> dict:
    identity = Identity(platform_account(db), "operator")
    list_id = _users_list(identity)
    users = list(db["users"].find({}, {"email": 1, "name": 1}))
    unreached = 0
    for user in users:
        answer = _call(identity, "contacts", "POST", "/api/v1/contacts",
                       {"email": user["email"], "name": _contact_name(user.get("name")),
                        "list_ids": [list_id]},
                       ok=(201, 409))
        # 409 is also an address suppressed or erased: not on the list, not
        # mailed, and it was counted among the users told
        if ((answer or {}).get("error") or {}).get("code") in ("suppressed", "erased"):
            unreached += 1
    summary = _inert(policy.get("summary") or "")
    effective = _inert(str(policy.get("effective_at", ""))[:10])
    template = _call(identity, "campaigns", "POST", "/api/v1/templates", {
        "name": f"Privacy policy {policy['id']}", "kind": "system",
        "subject": "We are updating our privacy policy",
        # No merge of the user's name: an account chooses it, and in the
        # platform's own mail it could say anything in the platform's voice.
        "html": ("<p>Hello,</p>"
                 f"<p>Our privacy policy changes on {effective}.</p><p>{summary}</p>"
                 "<p>You will see it in your dashboard until you acknowledge it.</p>")})
    campaign = _call(identity, "campaigns", "POST", "/api/v1/campaigns", {
        "name": f"Privacy policy notice {policy['id']}", "kind": "system",
        "template_id": template["id"], "from_name": "Sandesh",
        "from_email": current_app.config["SANDESH"].platform_from_email,
        "audience": {"list_ids": [list_id]}})
    _call(identity, "campaigns", "POST", f"/api/v1/campaigns/{campaign['id']}/send")
    return {"status": "sending", "campaign_id": campaign["id"], "account_id": identity.account_id,
            "users": len(users) - unreached, "not_reached": unreached}


def forget_users(db, users: list[dict]) -> int:
    """Delete the contacts of the platform's users list that stood for these
    (about to be deleted) users; returns how many. Raises NotifyFailed when
    contacts cannot be reached, before anything of the users is deleted, so
    the caller answers an error and the deletion is simply retried."""
    platform = db["accounts"].find_one({"platform": True}, {"_id": 1})
    if platform is None:
        return 0   # no policy was ever published: nobody is on the list
    identity = Identity(platform["_id"], "operator")
    leaving = {u["_id"] for u in users}
    removed = 0
    for user in users:
        others = db["users"].find_one({"email_key": user["email_key"], "_id": {"$nin": list(leaving)}})
        if others is not None:
            continue   # the address is still a user of another account
        for contact in _contacts_with(identity, user["email"]):
            _call(identity, "contacts", "DELETE", f"/api/v1/contacts/{contact['id']}", ok=(204, 404))
            removed += 1
    return removed


def correct_user(db, user: dict, changes: dict) -> None:
    """A user's rectification, on the platform's users list, before the
    user's record changes (NotifyFailed: nothing changed yet, the caller
    answers an error and the correction is retried). A new address: the
    old one leaves the list as a deleted user's does, and the next
    publication adds the new one, as it adds every user. A new name: the
    contact takes it, unless its address is also another user's. Until now
    a publication left an existing contact as it was, so a corrected name
    never reached the list, and a corrected address kept the old one on it,
    to be mailed with every notice."""
    platform = db["accounts"].find_one({"platform": True}, {"_id": 1})
    if platform is None:
        return   # no policy was ever published: nobody is on the list
    if changes.get("email_key", user["email_key"]) != user["email_key"]:
        forget_users(db, [user])
        return
    if "name" not in changes and changes.get("email", user["email"]) == user["email"]:
        return
    shared = db["users"].find_one({"email_key": user["email_key"], "_id": {"$ne": user["_id"]}})
    if shared is not None:
        return
    identity = Identity(platform["_id"], "operator")
    patch = {key: changes[key] for key in ("email", "name") if key in changes}
    if "name" in patch:
        patch["name"] = _contact_name(patch["name"])
    for contact in _contacts_with(identity, user["email"]):
        _call(identity, "contacts", "PATCH", f"/api/v1/contacts/{contact['id']}", patch,
              ok=(200, 404))


def _contacts_with(identity: Identity, email: str) -> list[dict]:
    """The platform contacts whose address is `email`, in any case (the
    search is by prefix, in either case: the exact match is kept), from
    every page: the first page of 100 alone missed the match whenever more
    addresses began with this one (pat@example.co among pat@example.co000.org
    and others), and a deleted user stayed on the list, mailed every notice."""
    found, cursor = [], None
    while True:
        query = {"email_prefix": email, "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = _call(identity, "contacts", "GET", "/api/v1/contacts?" + urlencode(query))
        found += [c for c in page["items"] if c["email"].lower() == email.lower()]
        cursor = page.get("next_cursor")
        if not cursor:
            return found
