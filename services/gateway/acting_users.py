"""User ids a call to the privacy service names are the account's users.

The privacy service takes `user_id` (the account user acting, or whose
notices are asked for) and `subject.user_id` (whose data a request is about)
as it is given them; the users are the gateway's. A misspelt id, or another
account's, went into the audit log as the user who acted, and a request
about it was answered as if for a user with no data. Checked here, before
the call is forwarded.
"""
from __future__ import annotations

from flask import request

from services.gateway.forwarded_json import json_object
from services.gateway.store import is_id
from services.gateway.users_store import UserStore
from shared.http.errors import invalid_fields

CHECKED_SERVICE = "privacy"
NO_SUCH_USER = "no user with this id in the account"


def _named_user_ids() -> list[tuple[str, str]]:
    """(field, id) for each user id the request names, query or JSON body."""
    named = [("user_id", value) for value in request.args.getlist("user_id") if value]
    body = json_object() or {}
    subject = body.get("subject")
    for field, value in (("user_id", body.get("user_id")),
                         ("subject.user_id", subject.get("user_id") if isinstance(subject, dict)
                          else None)):
        if isinstance(value, str) and value:
            named.append((field, value))
    return named


def check(service: str, account_id: str, users: UserStore) -> None:
    """A 400 naming each field whose user id is not one of the account's."""
    if service != CHECKED_SERVICE:
        return
    unknown = {field: [NO_SUCH_USER] for field, user_id in _named_user_ids()
               # not an id (too long, a lone surrogate the database cannot
               # even take): no user, and not looked up
               if not is_id(user_id) or users.get(account_id, user_id) is None}
    if unknown:
        raise invalid_fields(unknown)
