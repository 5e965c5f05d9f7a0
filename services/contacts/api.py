"""HTTP API of the contacts service: lists, custom fields, contacts and their
memberships, consent log, suppression list, segments, usage. (Imports and
exports: files_api.py.) Every handler passes the caller's account id down;
an id of another account is a 404 like a missing one."""
from __future__ import annotations

from flask.views import MethodView

from services.contacts import audit, domain, schemas, usecases
from services.contacts.store import ContactsStore
from shared.http import Blueprint, current_identity
from shared.http.errors import ApiError
from shared.http.pagination import PageArgs, cursor_position, page
from shared.http.service import runtime

blp = Blueprint("contacts", __name__, url_prefix="/api/v1", description="Contacts")


def ports() -> usecases.Ports:
    rt = runtime()
    return usecases.Ports(ContactsStore(rt.db), rt.producer(), rt.config.pii_salt)


def account() -> str:
    return current_identity().account_id


def actor() -> str:
    return current_identity().principal


def after_id(args: dict) -> str | None:
    """The cursor's position; only an id this API could have returned."""
    position = cursor_position(args.get("cursor"), "id", str)
    if position is not None and not domain.is_id(position):
        raise ApiError(400, "validation_error", "invalid input: cursor",
                       {"cursor": ["Not a cursor this API returned."]})
    return position


def paged(items: list[dict], args: dict) -> dict:
    return page(items, args["limit"], lambda doc: {"id": doc["_id"]})


# -- lists -------------------------------------------------------------------
@blp.route("/lists")
class Lists(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, schemas.ListPage)
    def get(self, args):
        """The account's lists (in id order, paginated)."""
        return paged(ports().store.page_lists(account(), after_id(args), args["limit"]), args)

    @blp.arguments(schemas.ListCreate)
    @blp.response(201, schemas.ListOut)
    def post(self, body):
        """Create a list (names are unique within the account: 409 otherwise)."""
        return usecases.create_list(ports(), account(), body)


@blp.route("/lists/<list_id>")
class ListOne(MethodView):
    @blp.response(200, schemas.ListOut)
    def get(self, list_id):
        """One list, with its members counted by status."""
        return usecases.get_list(ports(), account(), list_id, with_counts=True)

    @blp.arguments(schemas.ListUpdate)
    @blp.response(200, schemas.ListOut)
    def patch(self, body, list_id):
        """Rename or describe a list."""
        return usecases.update_list(ports(), account(), list_id, body)

    @blp.response(204)
    def delete(self, list_id):
        """Delete a list and its memberships; the contacts stay (they may be on
        other lists)."""
        usecases.delete_list(ports(), account(), list_id)


# -- custom fields -----------------------------------------------------------
@blp.route("/fields")
class Fields(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, schemas.FieldPage)
    def get(self, args):
        """The account's custom fields."""
        return paged(ports().store.page_fields(account(), after_id(args), args["limit"]), args)

    @blp.arguments(schemas.FieldCreate)
    @blp.response(201, schemas.FieldOut)
    def post(self, body):
        """Declare a typed custom field (text, number, date, boolean, choice)."""
        return usecases.create_field(ports(), account(), body)


@blp.route("/fields/<field_id>")
class FieldOne(MethodView):
    @blp.response(200, schemas.FieldOut)
    def get(self, field_id):
        """One custom field."""
        return usecases.get_field(ports(), account(), field_id)

    @blp.arguments(schemas.FieldUpdate)
    @blp.response(200, schemas.FieldOut)
    def patch(self, body, field_id):
        """Relabel a field or add choices (its key and type never change)."""
        return usecases.update_field(ports(), account(), field_id, body)

    @blp.response(204)
    def delete(self, field_id):
        """Delete a field and its values on every contact."""
        usecases.delete_field(ports(), account(), field_id)


# -- contacts ----------------------------------------------------------------
@blp.route("/contacts")
class Contacts(MethodView):
    @blp.arguments(schemas.ContactSearch, location="query")
    @blp.response(200, schemas.ContactPage)
    def get(self, args):
        """Search contacts by email prefix, name prefix, status, list (and
        status on it) and custom field value; cursor-paginated by id."""
        return paged(usecases.search_contacts(ports(), account(), args, after_id(args)), args)

    @blp.arguments(schemas.ContactCreate)
    @blp.response(201, schemas.ContactOut)
    def post(self, body):
        """Create a contact (one per normalised address: 409 otherwise),
        optionally subscribing it to lists with the consent it gave."""
        return usecases.create_contact(ports(), account(), body, actor())


@blp.route("/contacts/<contact_id>")
class ContactOne(MethodView):
    @blp.response(200, schemas.ContactOut)
    def get(self, contact_id):
        """One contact."""
        return usecases.get_contact(ports(), account(), contact_id)

    @blp.arguments(schemas.ContactUpdate)
    @blp.response(200, schemas.ContactOut)
    def patch(self, body, contact_id):
        """Change the address, name or custom field values (checked by type)."""
        return usecases.update_contact(ports(), account(), contact_id, body)

    @blp.response(204)
    def delete(self, contact_id):
        """Delete a contact (the consent log keeps its pseudonymous entries;
        the delete is audited)."""
        p = ports()
        contact = usecases.get_contact(p, account(), contact_id)
        audit.record(p.producer, account(), "contact.deleted", actor(), "contact", contact_id)
        usecases.delete_contact(p, contact)


@blp.route("/contacts/<contact_id>/lists/<list_id>")
class ContactMembership(MethodView):
    @blp.arguments(schemas.MembershipSet)
    @blp.response(200, schemas.ContactOut)
    def put(self, body, contact_id, list_id):
        """Subscribe, mark pending, or unsubscribe the contact on a list; the
        change is appended to the consent log. A suppressed address needs
        `reconsent: true` (409 otherwise)."""
        return usecases.set_membership(ports(), account(), contact_id, list_id, body, actor())


@blp.route("/contacts/<contact_id>/consent")
class ContactConsent(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, schemas.ConsentPage)
    def get(self, args, contact_id):
        """The contact's consent log (append-only, oldest first)."""
        p = ports()
        usecases.get_contact(p, account(), contact_id)
        return paged(p.store.page_consent(account(), contact_id, after_id(args), args["limit"]),
                     args)


# -- suppression -------------------------------------------------------------
@blp.route("/suppressions")
class Suppressions(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, schemas.SuppressionPage)
    def get(self, args):
        """The account's suppression list (salted hashes, never addresses)."""
        return paged(ports().store.page_suppressions(account(), after_id(args), args["limit"]),
                     args)

    @blp.arguments(schemas.SuppressionCreate)
    @blp.response(201, schemas.SuppressionStatus)
    def post(self, body):
        """Suppress an address for this account (idempotent)."""
        return usecases.add_suppression(ports(), account(), body, actor())


@blp.route("/suppressions/check")
class SuppressionCheck(MethodView):
    @blp.arguments(schemas.SuppressionCheck)
    @blp.response(200, schemas.SuppressionStatus)
    def post(self, body):
        """Is this address suppressed for the account or platform-wide?
        (POST: an address does not belong in a URL.)"""
        return usecases.check_suppression(ports(), account(), body)


@blp.route("/suppressions/<suppression_id>")
class SuppressionOne(MethodView):
    @blp.arguments(schemas.SuppressionRemove)
    @blp.response(204)
    def delete(self, body, suppression_id):
        """Lift an account-level suppression, with the reason (logged)."""
        usecases.remove_suppression(ports(), account(), suppression_id, body, actor())


# -- segments ----------------------------------------------------------------
@blp.route("/segments")
class Segments(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, schemas.SegmentPage)
    def get(self, args):
        """The account's saved segments."""
        return paged(ports().store.page_segments(account(), after_id(args), args["limit"]), args)

    @blp.arguments(schemas.SegmentCreate)
    @blp.response(201, schemas.SegmentOut)
    def post(self, body):
        """Save a segment; its definition is validated (400 names the place)."""
        return usecases.create_segment(ports(), account(), body)


@blp.route("/segments/<segment_id>")
class SegmentOne(MethodView):
    @blp.response(200, schemas.SegmentOut)
    def get(self, segment_id):
        """One segment."""
        return usecases.get_segment(ports(), account(), segment_id)

    @blp.arguments(schemas.SegmentUpdate)
    @blp.response(200, schemas.SegmentOut)
    def patch(self, body, segment_id):
        """Rename a segment or change its definition."""
        return usecases.update_segment(ports(), account(), segment_id, body)

    @blp.response(204)
    def delete(self, segment_id):
        """Delete a segment."""
        usecases.delete_segment(ports(), account(), segment_id)


@blp.route("/segments/<segment_id>/preview")
class SegmentPreview(MethodView):
    @blp.arguments(schemas.PreviewArgs, location="query")
    @blp.response(200, schemas.SegmentPreview)
    def get(self, args, segment_id):
        """How many contacts match now, and a sample of them."""
        return usecases.preview_segment(ports(), account(), segment_id, args["sample"])


# -- usage -------------------------------------------------------------------
@blp.route("/usage")
class Usage(MethodView):
    @blp.response(200, schemas.Usage)
    def get(self):
        """The account's lists and contacts (summed by the gateway's /usage)."""
        return usecases.usage(ports(), account())
