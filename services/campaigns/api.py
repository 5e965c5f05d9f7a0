"""HTTP API of the campaigns service: templates, campaigns and their
send / schedule / pause / resume / cancel / test, and the account's usage."""
from __future__ import annotations

from flask.views import MethodView

from services.campaigns import schemas, usecases
from services.campaigns.store import CampaignStore, JobStateStore, ProgressStore, TemplateStore
from shared.http import ApiError, Blueprint, current_identity
from shared.http.pagination import PageArgs, cursor_position, page
from shared.http.service import runtime

blp = Blueprint("campaigns", __name__, url_prefix="/api/v1", description="Campaigns")


def _ports() -> usecases.Ports:
    rt = runtime()
    return usecases.Ports(TemplateStore(rt.db), CampaignStore(rt.db), JobStateStore(rt.db),
                          ProgressStore(rt.db, writer="api"), rt.producer())


def _account() -> str:
    return current_identity().account_id


# The principal the gateway signs the platform's own notices with
# (services/gateway/policy_mail.py); an API key's principal is its key id.
PLATFORM_PRINCIPAL = "operator"


def _kind_allowed(body: dict) -> dict:
    """System mail goes out without an unsubscribe link, List-Unsubscribe or
    postal address: it is for the platform's own notices (a privacy policy
    change), never an account's campaigns (CAN-SPAM, RFC 8058)."""
    if body.get("kind") == "system" and current_identity().principal != PLATFORM_PRINCIPAL:
        raise ApiError(403, "forbidden", "system mail is for the platform's own notices",
                       {"kind": ["use marketing: it carries the unsubscribe link and "
                                 "postal address"]})
    return body


def _template_view(template: dict, version: dict | None = None) -> dict:
    return {**template, "current": version} if version else template


def _campaign_view(campaign: dict) -> dict:
    return usecases.progress_views(_ports(), [campaign])[0]


# -- templates -------------------------------------------------------------
@blp.route("/templates")
class Templates(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, schemas.TemplatePage)
    def get(self, args):
        """List the account's templates (oldest first, paginated)."""
        after = cursor_position(args["cursor"], "id", str)
        items = _ports().templates.page(_account(), after, args["limit"])
        return page(items, args["limit"], lambda t: {"id": t["_id"]})

    @blp.arguments(schemas.TemplateCreate)
    @blp.response(201, schemas.Template)
    def post(self, body):
        """Create a template (version 1). Every part is checked in the
        sender's sandbox; a part that does not compile is refused with 400
        naming the field, the line and the reason. A marketing template
        without an unsubscribe link or postal address gets them appended."""
        template, version = usecases.create_template(_ports(), _account(), _kind_allowed(body))
        return _template_view(template, version)


@blp.route("/templates/<template_id>")
class TemplateItem(MethodView):
    @blp.response(200, schemas.Template)
    def get(self, template_id):
        """A template with its latest version."""
        return _template_view(*usecases.get_template(_ports(), _account(), template_id))

    @blp.arguments(schemas.TemplateUpdate)
    @blp.response(200, schemas.Template)
    def patch(self, body, template_id):
        """Edit a template: a new immutable version (parts not given carry over)."""
        return _template_view(*usecases.update_template(_ports(), _account(), template_id,
                                                        _kind_allowed(body)))

    @blp.response(204)
    def delete(self, template_id):
        """Archive a template. Its versions stay, so campaigns that froze one
        keep their content."""
        if not _ports().templates.archive(_account(), template_id):
            from shared.http.errors import not_found
            raise not_found("template")


@blp.route("/templates/<template_id>/versions")
class TemplateVersions(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, schemas.TemplateVersionPage)
    def get(self, args, template_id):
        """Every version of a template, oldest first (paginated)."""
        ports = _ports()
        usecases.get_template(ports, _account(), template_id)
        after = cursor_position(args["cursor"], "version", int)
        items = ports.templates.versions_page(template_id, after, args["limit"])
        return page(items, args["limit"], lambda v: {"version": v["version"]})


@blp.route("/templates/<template_id>/versions/<int:version>")
class TemplateVersionItem(MethodView):
    @blp.response(200, schemas.TemplateVersion)
    def get(self, template_id, version):
        """One version of a template, as it was saved."""
        return usecases.get_template(_ports(), _account(), template_id, version)[1]


# -- campaigns -------------------------------------------------------------
@blp.route("/campaigns")
class Campaigns(MethodView):
    @blp.arguments(schemas.CampaignListArgs, location="query")
    @blp.response(200, schemas.CampaignPage)
    def get(self, args):
        """List the account's campaigns (oldest first, paginated, by status)."""
        after = cursor_position(args["cursor"], "id", str)
        ports = _ports()
        items = ports.campaigns.page(_account(), after, args["limit"], args["status"])
        result = page(items, args["limit"], lambda c: {"id": c["_id"]})
        result["items"] = usecases.progress_views(ports, result["items"])
        return result

    @blp.arguments(schemas.CampaignCreate)
    @blp.response(201, schemas.Campaign)
    def post(self, body):
        """Create a draft campaign."""
        return _campaign_view(usecases.create_campaign(_ports(), _account(), _kind_allowed(body)))


@blp.route("/campaigns/<campaign_id>")
class CampaignItem(MethodView):
    @blp.response(200, schemas.Campaign)
    def get(self, campaign_id):
        """A campaign with its status and progress (audience size, queued,
        sent, deferred, failed, bounced, skipped, estimated time left)."""
        return _campaign_view(usecases.get_campaign(_ports(), _account(), campaign_id))

    @blp.arguments(schemas.CampaignUpdate)
    @blp.response(200, schemas.Campaign)
    def patch(self, body, campaign_id):
        """Edit a draft campaign (409 once it is scheduled or sending)."""
        return _campaign_view(usecases.update_campaign(_ports(), _account(), campaign_id,
                                                       _kind_allowed(body)))

    @blp.response(204)
    def delete(self, campaign_id):
        """Delete a draft, or a campaign cancelled before it launched (409
        for one that launched: it keeps its record and stats)."""
        usecases.delete_campaign(_ports(), _account(), campaign_id)


@blp.route("/campaigns/<campaign_id>/send")
class CampaignSend(MethodView):
    @blp.response(202, schemas.Campaign)
    def post(self, campaign_id):
        """Send now: freezes the template version, status `sending`, emits
        campaign.launched (fan-out starts)."""
        return _campaign_view(usecases.send_now(_ports(), _account(), campaign_id))


@blp.route("/campaigns/<campaign_id>/schedule")
class CampaignSchedule(MethodView):
    @blp.arguments(schemas.ScheduleRequest)
    @blp.response(200, schemas.Campaign)
    def post(self, body, campaign_id):
        """Schedule a draft for a future time (with a UTC offset or a time
        zone); it fires once, whatever the number of replicas."""
        return _campaign_view(usecases.schedule(_ports(), _account(), campaign_id,
                                                body["send_at"], body["time_zone"]))


def _action_view(action: str, doc: str):
    def post(self, campaign_id):
        return _campaign_view(usecases.change_status(_ports(), _account(), campaign_id,
                                                     action))
    post.__doc__ = doc
    view = type(f"Campaign{action.title()}", (MethodView,),
                {"post": blp.response(200, schemas.Campaign)(post)})
    blp.route(f"/campaigns/<campaign_id>/{action}")(view)


_action_view("pause", "Pause a sending campaign: senders hold its jobs within seconds.")
_action_view("resume", "Resume a paused campaign.")
_action_view("cancel", "Cancel a campaign: senders skip the jobs not yet sent.")
_action_view("unschedule", "Take a scheduled campaign back to draft.")


@blp.route("/campaigns/<campaign_id>/test")
class CampaignTest(MethodView):
    @blp.arguments(schemas.TestRequest)
    @blp.response(202, schemas.TestQueued)
    def post(self, body, campaign_id):
        """Send the campaign as it would go out now to up to five addresses;
        counted nowhere."""
        return {"job_ids": usecases.send_test(_ports(), _account(), campaign_id,
                                              body["emails"])}


@blp.route("/usage")
class Usage(MethodView):
    @blp.response(200, schemas.Usage)
    def get(self):
        """The account's templates, campaigns, and mailings sent (count, bytes)."""
        return usecases.usage(_ports(), _account())
