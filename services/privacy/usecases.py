"""What the privacy service does; dependencies come in as arguments."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable

from services.privacy import domain
from services.privacy import metrics as privacy_metrics
from services.privacy.store import ERASED_TEXT, PrivacyStore, new_id, now
from shared import topics
from shared.erased_contacts import ErasedContacts
from shared.events import Event, new_event
from shared.http.internal_auth import Identity
from shared.kafka.producer import EventProducer
from shared.pii import InvalidEmail, email_hash, normalise_email

log = logging.getLogger(__name__)
SOURCE = "sandesh.privacy"
OPERATOR = "operator"


# -- audit -------------------------------------------------------------------
def audit(store: PrivacyStore, *, account_id: str, action: str, principal: str,
          target_type: str, target_id: str | None, reason: str | None = None,
          user_id: str | None = None, service: str = "privacy", entry_id: str | None = None,
          at: datetime | None = None, request_id: str | None = None) -> bool:
    """Append one entry: who (account, key/principal, user), what, when, why.
    Ids only: the caller passes no address and no name. A reason about a
    contact erased already (an audit.recorded that came late) is not kept:
    the erasure replaced the reasons there were (PrivacyStore.forget_contacts)."""
    if reason and target_id and reason != ERASED_TEXT and \
            ErasedContacts(store.db).erased_now(account_id, target_id):
        reason = ERASED_TEXT
    return store.append_audit({
        "_id": entry_id or new_id(), "account_id": account_id, "at": at or now(),
        "action": action, "service": service, "principal": principal, "user_id": user_id,
        "target_type": target_type, "target_id": target_id, "reason": reason,
        "request_id": request_id})


def record_audit_event(store: PrivacyStore, event: Event) -> None:
    data = event.data
    audit(store, account_id=event.account_id, action=data["action"],
          principal=data.get("principal") or event.source, user_id=data.get("user_id"),
          target_type=data["target_type"], target_id=data.get("target_id"),
          reason=data.get("reason"), service=data.get("service") or event.source,
          entry_id=event.id, at=datetime.fromisoformat(event.time),
          request_id=data.get("request_id"))


# -- data-subject requests -----------------------------------------------------
def _subject(body: dict, salt: str) -> dict:
    given = body.get("subject") or {}
    subject = {"kind": None, "contact_id": given.get("contact_id"), "email_hash": None,
               "user_id": given.get("user_id")}
    if given.get("email"):
        try:
            subject["email_hash"] = email_hash(normalise_email(given["email"]), salt)
        except InvalidEmail as exc:
            raise domain.RuleViolation("subject.email", f"not a valid address: {exc}")
    if given.get("account"):
        if subject["contact_id"] or subject["user_id"] or given.get("email"):
            raise domain.RuleViolation("subject", "an account request names nothing else")
        if body["kind"] != "erasure":
            raise domain.RuleViolation("kind", "an account subject is for erasure only")
        subject["kind"] = "account"
        return subject
    if subject["contact_id"] and subject["email_hash"]:
        # Two names of one person, or of two: an access answered with the
        # contact's data alone, an erasure acted on both, unsaid.
        raise domain.RuleViolation("subject", "give the contact's email or its contact_id, "
                                              "not both")
    is_contact = bool(subject["contact_id"] or subject["email_hash"])
    if is_contact == bool(subject["user_id"]):
        raise domain.RuleViolation("subject", "give a contact (email or contact_id) or a "
                                              "user_id, not both and not neither")
    subject["kind"] = "contact" if is_contact else "user"
    if subject["kind"] == "user":
        domain.check_user_request(body["kind"])
    return subject


def create_request(store: PrivacyStore, producer: EventProducer, config, identity: Identity,
                   body: dict, clock: Callable[[], datetime] = now,
                   topic: str = topics.PRIVACY_REQUESTS) -> dict:
    subject = _subject(body, config.pii_salt)
    changes = body.get("changes")
    if body["kind"] == "rectification" and not changes:
        raise domain.RuleViolation("changes", "a rectification says what to change")
    if body["kind"] != "rectification" and changes:
        raise domain.RuleViolation("changes", "only a rectification carries changes")
    received = clock()
    request = {
        "_id": new_id(), "account_id": identity.account_id, "kind": body["kind"],
        "subject": subject, "reason": body.get("reason"), "status": "pending",
        "created_at": received, "due_at": domain.due_at(received), "extensions": [],
        "responders": domain.responders_for(subject["kind"], config.privacy_responders),
        "answers": {}, "completed_at": None,
        "requested_by": {"principal": identity.principal, "user_id": body.get("user_id")},
    }
    if changes:
        request["changes"] = changes
        request["changed_fields"] = sorted(changes)
    # Recorded before it is published, and kept whatever the broker does: a
    # flush that timed out may still deliver the event (the producer goes on
    # trying), and a request deleted then made its services' answers
    # unknown, while its retry by email found nothing and completed.
    store.insert_request({**request, "unpublished": True})
    try:
        producer.publish(topic, requested_event(request), key=request["_id"])
        producer.flush(timeout=30)
    except Exception:
        log.warning("privacy.requested not out yet; the worker sends it again",
                    extra={"request_id": request["_id"]})
    else:
        store.mark_published(request["_id"])
    # The privacy service's own part of an erasure (forget_own_data) is done
    # by its worker from the event just published, not here: an account's
    # markers are tens of thousands of documents, and deleting them inside
    # the request kept DELETE /account waiting past its 30 s timeout.
    if subject["kind"] == "user":
        _answer_for_user(store, request)
        request = store.get_request(None, request["_id"])
    privacy_metrics.REQUESTS.labels(body["kind"]).inc()
    audit(store, account_id=identity.account_id, action=f"{body['kind']}.requested",
          principal=identity.principal, user_id=body.get("user_id"),
          target_type=subject["kind"], target_id=subject["contact_id"] or subject["user_id"]
          or request["_id"], request_id=request["_id"])   # the why is the request's (free text)
    return request


def forget_own_data(store: PrivacyStore, event: Event) -> None:
    """What the privacy service itself holds of an erasure's subject: an
    account's exports, aggregate markers and notice acknowledgements, or a
    contact's markers and earlier access exports (a contact named by address
    is forgotten when contacts answers with its ids). Safe to run again."""
    data = event.data
    subject = data["subject"]
    if data["kind"] != "erasure":
        return
    if subject["kind"] == "account":
        store.forget_account(event.account_id)
    elif subject["kind"] == "contact" and subject.get("contact_id"):
        store.forget_contacts(event.account_id, subject_contact_ids(subject))


def subject_contact_ids(subject: dict) -> list[str]:
    """Every contact id a request's subject names, `contact_id` first."""
    named = [subject.get("contact_id"), *(subject.get("contact_ids") or [])]
    return list(dict.fromkeys(i for i in named if i))


def publish_unpublished(store: PrivacyStore, producer: EventProducer, older_than: timedelta,
                        topic: str = topics.PRIVACY_REQUESTS) -> int:
    """privacy.requested again for requests whose publishing failed (the
    worker, now and then): a broker outage delays a request, never drops it.
    A request out twice is answered twice; the answers are idempotent."""
    requests = store.unpublished(now() - older_than)
    for request in requests:
        producer.publish(topic, requested_event(request), key=request["_id"])
    if requests:
        producer.flush(timeout=30)
        for request in requests:
            store.mark_published(request["_id"])
    return len(requests)


def requested_event(request: dict) -> Event:
    data = {"request_id": request["_id"], "kind": request["kind"],
            "subject": request["subject"], "due_at": request["due_at"].isoformat()}
    if request.get("changes"):
        data["changes"] = request["changes"]
    if request.get("resolved"):  # asked again (retry_request): the ids are known
        data["resolved"] = True
    return new_event("privacy.requested", source=SOURCE, subject=request["_id"],
                     account_id=request["account_id"], data=data)


def _answer_for_user(store: PrivacyStore, request: dict) -> None:
    """The privacy service's own part of an access request about an account
    user: the notices they acknowledged (the profile is the gateway's, which
    adds it to the export)."""
    user_id = request["subject"]["user_id"]
    acks = [{"policy_id": a["policy_id"], "acknowledged_at": a["at"].isoformat()}
            for a in store.acks_of(request["account_id"], user_id)]
    record_answer(store, request["account_id"], {
        "request_id": request["_id"], "service": "privacy", "status": "done",
        "export": {"notice_acknowledgements": acks}})


def extend_request(store: PrivacyStore, identity: Identity, request_id: str, months: int,
                   reason: str) -> dict | None:
    request = store.get_request(identity.account_id, request_id)
    if request is None:
        return None
    domain.check_extension(request["extensions"], months, request["status"])
    total = domain.extended_months(request["extensions"]) + months
    extension = {"months": months, "reason": reason, "at": now(),
                 "principal": identity.principal}
    updated = store.add_extension(identity.account_id, request_id, extension,
                                  domain.due_at(request["created_at"], total),
                                  len(request["extensions"]))
    if updated is None:  # extended concurrently: read again and re-check
        raise domain.RuleViolation("months", "the request changed meanwhile; try again")
    # The why stays on the request: free text may name the person, and the
    # audit log, append-only, could not forget it at their erasure.
    audit(store, account_id=identity.account_id, action="request.extended",
          principal=identity.principal, target_type="request", target_id=request_id,
          request_id=request_id)
    return updated


def retry_request(store: PrivacyStore, producer: EventProducer, identity: Identity,
                  request_id: str, topic: str = topics.PRIVACY_REQUESTS) -> dict | None:
    """Ask again the services that could not fulfil a request, once the
    account has fixed what they said (a custom field a rectification names,
    say). Published as a new request is: the worker's sweep sends it if the
    broker does not take it now. None if the account has no such request."""
    request = store.get_request(identity.account_id, request_id)
    if request is None:
        return None
    domain.check_needs_attention(request["status"], "retried")
    failed = [service for service, given in (request.get("answers") or {}).items()
              if given.get("status") == "failed"]
    reopened = store.reopen(request_id, failed)
    if reopened is None:
        raise domain.RuleViolation("status", "the request changed meanwhile; read it again")
    try:
        producer.publish(topic, requested_event(reopened), key=request_id)
        producer.flush(timeout=30)
    except Exception:
        log.warning("privacy.requested not out yet; the worker sends it again",
                    extra={"request_id": request_id})
    else:
        store.mark_published(request_id)
    audit(store, account_id=identity.account_id, action=f"{request['kind']}.retried",
          principal=identity.principal, target_type="request", target_id=request_id,
          request_id=request_id)
    return store.get_request(identity.account_id, request_id)


def close_request(store: PrivacyStore, identity: Identity, request_id: str,
                  reason: str) -> dict | None:
    """End a request no service can fulfil (the person asked to correct a
    field the account does not keep): closed with the account's reason, no
    longer open nor overdue. The reason stays on the request, where an
    erasure of the person can replace it. None if there is no such request."""
    request = store.get_request(identity.account_id, request_id)
    if request is None:
        return None
    domain.check_needs_attention(request["status"], "closed")
    closed = store.close(request_id, reason, now())
    if closed is None:
        raise domain.RuleViolation("status", "the request changed meanwhile; read it again")
    audit(store, account_id=identity.account_id, action=f"{request['kind']}.closed",
          principal=identity.principal, target_type="request", target_id=request_id,
          request_id=request_id)
    return closed


def record_answer(store: PrivacyStore, account_id: str, data: dict,
                  clock: Callable[[], datetime] = now,
                  producer: EventProducer | None = None,
                  topic: str = topics.PRIVACY_REQUESTS) -> dict | None:
    """One service's answer (idempotent: the same answer twice changes
    nothing)."""
    request = store.get_request(None, data["request_id"])
    if request is None or request["account_id"] != account_id:
        log.warning("answer for an unknown request ignored",
                    extra={"request_id": data["request_id"], "responder": data["service"]})
        return None
    service = data["service"]
    if service == "contacts" and producer is not None and _needs_resolution(request):
        _resolve(store, producer, request, data.get("contact_ids") or [], topic)
    previous = (request.get("answers") or {}).get(service)
    if previous and (previous["status"] == data["status"]
                     or (previous["status"] == "done" and data["status"] == "not_found")):
        # the same answer again, or a redelivered erasure finding its work done
        answer = previous
    else:
        answer = {"status": data["status"], "at": clock(), "detail": data.get("detail")}
    if data.get("export") is not None:
        store.save_export_part(request["_id"], account_id, service, data["export"])
        # An erasure of the same contact recorded before this part came in
        # found nothing of it to delete. Checked after the save: an erasure
        # recorded after the check finds the part itself.
        subject_ids = {*subject_contact_ids(request["subject"]), *(data.get("contact_ids") or [])}
        if store.contact_erased(account_id, subject_ids):
            store.drop_export_part(request["_id"], service)
    if request["kind"] == "erasure" and data.get("contact_ids"):
        store.forget_contacts(account_id, list(data["contact_ids"]))
    request = store.set_answer(request["_id"], service, answer)
    if request["status"] == domain.CLOSED:
        return request  # an answer after the account closed it: kept, the end stands
    status = domain.request_status(request["responders"], request["answers"])
    if status != request["status"]:
        completed_at = request.get("completed_at") or (clock() if status == "complete" else None)
        store.set_status(request["_id"], status, completed_at)
        request.update(status=status, completed_at=completed_at)
        if status == "complete":
            privacy_metrics.COMPLETED.labels(request["kind"]).inc()
            store.clear_changes(request["_id"])
            if request["kind"] == "erasure":
                store.forget_erasure_reasons(account_id, request)
            audit(store, account_id=account_id, action=f"{request['kind']}.completed",
                  principal=SOURCE, target_type=request["subject"]["kind"],
                  target_id=request["subject"].get("contact_id") or request["_id"],
                  entry_id=f"{request['_id']}:completed", request_id=request["_id"])
    return request


def _needs_resolution(request: dict) -> bool:
    subject = request["subject"]
    return subject["kind"] == "contact" and not subject.get("contact_id") \
        and not request.get("resolved")


def _resolve(store: PrivacyStore, producer: EventProducer, request: dict,
             contact_ids: list[str], topic: str) -> None:
    """Contacts turned the address hash into a contact id (or found none):
    ask again, with the id, the services that know contacts by id only.
    Published before it is recorded: a crash in between asks twice, which
    the services' idempotent handling absorbs."""
    # An address deleted more than once (and perhaps held again) has several
    # ids: each keeps records in the sender and tracking. `contact_id`, the
    # first, stays for consumers that read only it.
    request["subject"]["contact_id"] = contact_ids[0] if contact_ids else None
    request["subject"]["contact_ids"] = list(contact_ids)
    event = requested_event(request)
    event.data["resolved"] = True
    producer.publish(topic, event, key=request["_id"])
    producer.flush(timeout=30)
    store.mark_resolved(request["_id"], list(contact_ids))


def overdue_requests(store: PrivacyStore, account_id: str | None, silent_after: timedelta,
                     at: datetime | None = None) -> list[dict]:
    at = at or now()
    return [r for r in store.open_requests(account_id) if domain.is_overdue(r, at, silent_after)]


def expire_exports(store: PrivacyStore, days: int, at: datetime | None = None) -> int:
    """Delete the exports of access requests completed `days` ago or more:
    each is a copy of a person's data, kept only for the account to hand
    over (the worker, hourly). Returns how many went."""
    at = at or now()
    return store.expire_exports(at - timedelta(days=days), at)


def export_for(store: PrivacyStore, identity: Identity, request: dict, fmt: str) -> dict:
    export = domain.assemble_export(request, store.export_parts(request["_id"]))
    audit(store, account_id=identity.account_id, action="export.downloaded",
          principal=identity.principal, target_type="request", target_id=request["_id"],
          reason=f"access request ({fmt})", request_id=request["_id"])
    return export


# -- policies and notices ------------------------------------------------------
def publish_policy(store: PrivacyStore, producer: EventProducer | None, config,
                   identity: Identity, body: dict,
                   clock: Callable[[], datetime] = now) -> dict:
    published = clock()
    domain.check_policy_dates(published, body["effective_at"])
    policy = {"_id": new_id(), "version": body.get("version"), "text": body["text"],
              "summary": body["summary"], "material": body["material"],
              "published_at": published, "effective_at": body["effective_at"],
              "published_by": identity.principal}
    store.insert_policy(policy)
    audit(store, account_id=identity.account_id, action="policy.published",
          principal=identity.principal, target_type="policy", target_id=policy["_id"])
    return policy


def can_publish(config, identity: Identity) -> bool:
    return identity.principal == OPERATOR or identity.account_id in config.privacy_publisher_accounts


def notices_for(store: PrivacyStore, account_id: str, subject: str, limit: int,
                after: str | None) -> list[dict]:
    """Up to limit+1 policy versions the subject has not acknowledged."""
    return store.policies_not_in(store.acknowledged(account_id, subject), limit, after)


def acknowledge_notice(store: PrivacyStore, identity: Identity, policy_id: str,
                       user_id: str | None) -> dict | None:
    if store.get_policy(policy_id) is None:
        return None
    subject = user_id or identity.principal
    ack = store.acknowledge(policy_id, identity.account_id, subject,
                            {"at": now(), "principal": identity.principal, "user_id": user_id})
    return ack
