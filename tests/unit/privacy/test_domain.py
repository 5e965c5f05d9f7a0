"""The privacy rules: due dates, extensions, the 30-day policy rule,
k-anonymity and the export."""
from datetime import datetime, timedelta, timezone

import pytest

from services.privacy import domain

UTC = timezone.utc


def at(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("received, due", [
    (at(2026, 3, 14, 9, 30), at(2026, 4, 14, 9, 30)),
    (at(2026, 1, 31, 12), at(2026, 2, 28, 12)),     # clamped to the month's last day
    (at(2028, 1, 31, 12), at(2028, 2, 29, 12)),     # leap year
    (at(2026, 12, 5), at(2027, 1, 5)),              # over the year end
])
def test_a_request_is_due_one_calendar_month_after_it_is_received(received, due):
    assert domain.due_at(received) == due


def test_extensions_move_the_due_date_from_the_day_received():
    received = at(2026, 1, 31)
    assert domain.due_at(received, extension_months=2) == at(2026, 4, 30)


def test_extensions_are_limited_to_two_months_in_total():
    domain.check_extension([], 2, "pending")
    domain.check_extension([{"months": 1}], 1, "pending")
    with pytest.raises(domain.RuleViolation) as err:
        domain.check_extension([{"months": 1}], 2, "pending")
    assert err.value.field == "months"


def test_a_complete_request_cannot_be_extended():
    with pytest.raises(domain.RuleViolation) as err:
        domain.check_extension([], 1, "complete")
    assert err.value.field == "status"


def test_complete_only_when_every_responder_settled():
    responders = ["contacts", "sender", "tracking"]
    answers = {"contacts": {"status": "done"}, "sender": {"status": "not_found"}}
    assert domain.request_status(responders, answers) == "pending"
    answers["tracking"] = {"status": "failed"}
    assert domain.request_status(responders, answers) == "needs_attention"
    answers["tracking"] = {"status": "done"}
    assert domain.request_status(responders, answers) == "complete"


def test_an_answer_from_a_service_not_asked_does_not_complete_a_request():
    assert domain.request_status(["contacts"], {"other": {"status": "done"}}) == "pending"


def _request(created, answers=None, status="pending"):
    return {"created_at": created, "due_at": domain.due_at(created), "status": status,
            "responders": ["contacts", "sender"], "answers": answers or {}}


def test_silent_services_are_named_after_the_silence_window():
    created = at(2026, 5, 1, 10)
    request = _request(created, {"contacts": {"status": "done"}})
    window = timedelta(hours=24)
    assert domain.silent_services(request, created + timedelta(hours=23), window) == []
    assert domain.silent_services(request, created + timedelta(hours=24), window) == ["sender"]
    assert domain.is_overdue(request, created + timedelta(hours=24), window)


def test_past_due_is_overdue_and_complete_never_is():
    created = at(2026, 5, 1)
    window = timedelta(days=365)
    assert not domain.is_overdue(_request(created), at(2026, 5, 31), window)
    assert domain.is_overdue(_request(created), at(2026, 6, 1), window)
    assert not domain.is_overdue(_request(created, status="complete"), at(2027, 1, 1), window)


def test_user_requests_are_answered_by_the_privacy_service():
    assert domain.responders_for("user", ["contacts", "sender"]) == ["privacy"]
    assert domain.responders_for("contact", ["sender", "contacts"]) == ["contacts", "sender"]


def test_an_account_erasure_is_answered_by_campaigns_too():
    assert domain.responders_for("account", ["sender", "contacts"]) == \
        ["campaigns", "contacts", "sender"]


@pytest.mark.parametrize("kind, pointer", [("erasure", "DELETE /api/v1/users/<id>"),
                                           ("rectification", "PATCH /api/v1/users/<id>"),
                                           ("restriction", "DELETE /api/v1/users/<id>")])
def test_a_user_request_other_than_access_points_to_the_users_api(kind, pointer):
    with pytest.raises(domain.RuleViolation) as err:
        domain.check_user_request(kind)
    assert err.value.field == "kind" and pointer in err.value.message
    domain.check_user_request("access")   # answered here


# -- policies -----------------------------------------------------------------
def test_a_policy_taking_effect_29_days_after_publication_is_refused():
    published = at(2026, 6, 1, 15, 0)
    with pytest.raises(domain.RuleViolation) as err:
        domain.check_policy_dates(published, published + timedelta(days=29))
    assert err.value.field == "effective_at"
    assert "2026-07-01" in err.value.message


def test_a_policy_taking_effect_30_days_after_publication_is_accepted():
    published = at(2026, 6, 1, 15, 0)
    domain.check_policy_dates(published, published + timedelta(days=30))
    # the calendar day counts, not the hour: midnight of day 30 is fine
    domain.check_policy_dates(published, at(2026, 7, 1, 0, 0))


# -- k-anonymity ----------------------------------------------------------------
def test_groups_smaller_than_k_are_suppressed_and_counted():
    rows = [{"provider": "gmail.com", "contacts": 5}, {"provider": "tiny.example", "contacts": 4},
            {"provider": "yahoo.com", "contacts": 40}, {"provider": "solo.example", "contacts": 1}]
    kept, suppressed = domain.k_anonymous(rows, 5)
    assert [r["provider"] for r in kept] == ["gmail.com", "yahoo.com"]
    assert suppressed == 2


# -- export -----------------------------------------------------------------
def _access_request():
    created = at(2026, 5, 1, 8)
    return {"_id": "r1", "kind": "access", "created_at": created,
            "completed_at": created + timedelta(minutes=1),
            "subject": {"kind": "contact", "contact_id": "c1", "email_hash": "ab", "user_id": None},
            "responders": ["contacts", "sender", "tracking"],
            "answers": {"contacts": {"status": "done", "at": created},
                        "sender": {"status": "done", "at": created},
                        "tracking": {"status": "not_found", "at": created}}}


def test_the_export_holds_every_services_part_under_its_name():
    parts = {"contacts": {"contact": {"id": "c1", "status": "subscribed"},
                          "consent_log": [{"action": "subscribed", "at": "2026-01-01"}]},
             "sender": {"messages": [{"campaign_id": "k1", "sent_at": "2026-02-01"}]}}
    export = domain.assemble_export(_access_request(), parts)
    assert export["request_id"] == "r1"
    assert export["subject"] == {"kind": "contact", "contact_id": "c1", "email_hash": "ab"}
    assert set(export["services"]) == {"contacts", "sender", "tracking"}
    assert export["services"]["contacts"]["data"] == parts["contacts"]
    assert export["services"]["tracking"] == {"status": "not_found",
                                              "answered_at": "2026-05-01T08:00:00+00:00",
                                              "data": {}}


def test_the_readable_summary_lists_every_section_and_escapes_html():
    parts = {"contacts": {"contact": {"name": "<b>Jo</b>"},
                          "consent_log": [{"action": "subscribed"}, {"action": "restricted"}]}}
    export = domain.assemble_export(_access_request(), parts)
    text = domain.export_text(export)
    assert "== contacts (done) ==" in text
    assert "consent_log: 2 item(s)" in text
    assert "action: restricted" in text
    assert "== tracking (not_found) ==" in text and "nothing held" in text
    page = domain.export_html(export)
    assert "&lt;b&gt;Jo&lt;/b&gt;" in page and "<b>Jo</b>" not in page
