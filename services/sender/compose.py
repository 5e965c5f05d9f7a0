"""One recipient's message, from a campaign's frozen template.

`Composer` is built once per campaign (per process): it compiles the
templates, rewrites the links of the HTML source once into per-recipient
placeholders (shared/links.py defines link index n, the tracking service
redirects it back; a link with merge fields is marked, and tracked once
rendered), and prepares the MIME skeleton. `compose(job)` then
renders, fills in the signed tracking and unsubscribe URLs, builds the
message and DKIM-signs it.
"""
from __future__ import annotations

import html as html_lib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime

import markupsafe

from services.sender.dkim import Signer
from services.sender.domain import Campaign, Job, hex_id, message_id
from services.sender.mime import (HeaderInjection, Part, Skeleton,
                                  refuse_line_breaks)
from shared import links, templating
from shared.html_body import insert_before_body_close, without_comments
from shared.idn import ascii_domain, with_ascii_domain
from shared.tracking_tokens import (Keyring, LinkContext, click_url, open_url, unsubscribe_token,
                                    unsubscribe_url, verp_address)

_CLICK_VAR = "sandesh_click_"
_TAGS = re.compile(r"<[^>]+>")
# Blank lines a text part's {% if %}, {% for %} and {% set %} lines leave
# when rendered: two or more in a row read as one, none before the text.
_BLANK_RUN = re.compile(r"\n(?:[ \t]*\n){2,}")
_LEADING_BLANK = re.compile(r"^(?:[ \t]*\n)+")


class ComposeError(ValueError):
    """This job can never be composed (bad template data, bad address...)."""


@dataclass(frozen=True)
class Outgoing:
    job: Job
    message: bytes
    mail_from: str
    message_id: str
    smtputf8: bool
    rcpt_to: str = ""  # the envelope recipient, its domain in ASCII form (else job.email)

    @property
    def recipient(self) -> str:
        return self.rcpt_to or self.job.email


@dataclass(frozen=True)
class ComposeSettings:
    keyring: Keyring
    tracking_base: str
    default_domain: str
    bounce_domain: str = ""  # empty: the sending domain


def text_from_html(html: str) -> str:
    """A plain part when the template has none (campaigns normally derives
    a better one at save time)."""
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</h\d>|</li>", "\n", html)
    text = _TAGS.sub("", text)
    return re.sub(r"\n{3,}", "\n\n", html_lib.unescape(text)).strip() + "\n"


def tidy_text(text: str) -> str:
    """A rendered text part without the blank lines its template's tag lines
    left (a derived part has its {% set %} and {% if %} lines between
    paragraphs): at most one blank line in a row, none at the start."""
    return _LEADING_BLANK.sub("", _BLANK_RUN.sub("\n\n", text))


class Composer:
    def __init__(self, campaign: Campaign, settings: ComposeSettings, signer: Signer):
        self.campaign = campaign
        self.settings = settings
        self.signer = signer
        sender = campaign.sender
        try:  # an IDN in its ASCII form, wherever a domain goes (shared/idn.py)
            self.from_email = with_ascii_domain(sender["from_email"])
            reply_to = with_ascii_domain(sender["reply_to"]) if sender.get("reply_to") else None
            domain = ascii_domain(sender.get("sending_domain") or self.from_email.rpartition("@")[2]
                                  or settings.default_domain)
            self.bounce_domain = ascii_domain(settings.bounce_domain or domain)
        except ValueError:  # its text quotes the labels
            raise ComposeError("the campaign's sending domain or address is not a valid "
                               "domain name") from None
        self.sending_domain = domain
        # Another domain's keys sign only for the accounts it belongs to (dkim.py).
        own = domain == settings.default_domain or signer.may_sign(domain, campaign.account_id)
        self.signing_domain = domain if own else settings.default_domain
        self.marketing = campaign.kind == "marketing"
        template = campaign.template
        html = template.get("html") or ""
        text = template.get("text") or text_from_html(html)
        self._static_links: list[int] = []
        # Personal links are found in the rendered HTML by this mark, which
        # merge data cannot know.
        self._personal_mark = f"sandesh-link-{secrets.token_hex(8)}-"
        self._has_personal_links = False
        if campaign.tracking:
            # A list frozen with the template is the one tracking holds, even
            # empty: extracting again would track what tracking cannot
            # redirect (personal links, from templates frozen before them).
            link_list = template.get("links")
            if link_list is None:
                link_list = links.extract_links(html)
            self._static_links = [i for i, url in enumerate(link_list) if not links.is_personal(url)]
            self._has_personal_links = len(self._static_links) < len(link_list)
            html = links.rewrite_links(html, link_list,
                                       lambda i: "{{ %s%d }}" % (_CLICK_VAR, i),
                                       personal_mark=lambda i: f"{self._personal_mark}{i}:")
        html = templating.html_with_preheader(html, template.get("preheader") or "")
        # No footer here: _compliant adds it to each rendered message that
        # lacks the link or the address (campaigns adds the placeholders at
        # save; a template made before, or one that hides them, gets it there).
        postal = self.campaign.postal_address
        # As the template engine writes it (markupsafe: ' is &#39;, where
        # html.escape writes &#x27;), so the check below finds what it wrote.
        self._postal_html = str(markupsafe.escape(postal)) if postal else ""
        try:
            self.subject = templating.compile_template(template.get("subject") or "", False)
            self.html = templating.compile_template(html, True)
            self.text = templating.compile_template(text, False)
            self._text_has_tags = "{%" in text
        except templating.TemplateSyntaxProblem as exc:
            raise ComposeError(f"template: {exc}") from None
        self._date: tuple[int, str] = (-1, "")
        self.skeleton = Skeleton(sender.get("from_name"), self.from_email, reply_to,
                                 [("Feedback-ID", f"{campaign.campaign_id}:{campaign.account_id}:"
                                                  f"{campaign.kind}:sandesh")])

    def _date_header(self, now: datetime) -> str:
        """The Date header's value, formatted once per second (it has no
        finer resolution): 4.5 us per message otherwise."""
        second = int(now.timestamp())
        cached = self._date  # one tuple, so a reader never pairs a second with another's text
        if cached[0] != second:
            cached = self._date = (second, format_datetime(now))
        return cached[1]

    def _compliant(self, html: str, text: str, unsubscribe: str) -> tuple[str, str]:
        """Marketing mail carries a working unsubscribe link and the postal
        address (CAN-SPAM), whatever the template did with its placeholders:
        put in a comment, under {% if %} with the page's </body>, or read
        as fields.unsubscribe_url, they rendered to nothing. Checked in
        what was rendered, and added where missing."""
        postal = self.campaign.postal_address
        seen = without_comments(html)
        if unsubscribe not in seen or (postal and self._postal_html not in seen):
            html = insert_before_body_close(
                html, f'<p style="font-size:12px;color:#666">{self._postal_html}<br>'
                      f'<a href="{unsubscribe}">Unsubscribe</a></p>')
        if unsubscribe not in text or (postal and postal not in text):
            text = f"{text.rstrip()}\n--\n{postal}\nUnsubscribe: {unsubscribe}\n"
        return html, text

    def compose(self, job: Job, now: datetime | None = None) -> Outgoing:
        """The message, or ComposeError saying why not, in words that hold
        none of the contact's data: the reason is recorded with the job, and
        an error's own text quoted a name or a field value."""
        try:
            return self._compose(job, now or datetime.now(timezone.utc))
        except HeaderInjection as exc:  # names the header, never its value
            raise ComposeError(str(exc)) from None
        except templating.TemplateRenderProblem as exc:
            raise ComposeError(exc.without_values()) from None
        except ValueError as exc:  # an address's IDNA error quotes its labels
            raise ComposeError(type(exc).__name__) from None

    def _compose(self, job: Job, now: datetime) -> Outgoing:
        s = self.settings
        # The time in the tokens lets tracking tell a scanner's fetch on
        # arrival before it has read this message's delivery.sent.
        ctx = LinkContext(hex_id(job.account_id), hex_id(job.campaign_id),
                          hex_id(job.contact_id), hex_id(job.job_id), int(now.timestamp()))
        list_id = job.list_id if job.list_id and len(job.list_id) == 32 else None
        extra = {templating.POSTAL_ADDRESS: self.campaign.postal_address}
        headers: list[tuple[str, str]] = []
        if self.marketing:
            extra[templating.UNSUBSCRIBE_URL] = unsubscribe_url(s.tracking_base, s.keyring, ctx,
                                                                list_id)
            # "unsubscribe <token>", URL-quoted: the token is base64url, which
            # quote() leaves as it is (it took ~7 us per message to say so)
            mailto = (f"mailto:unsubscribe@{self.bounce_domain}?subject=unsubscribe%20"
                      + unsubscribe_token(s.keyring, ctx, list_id))
            headers += [("List-Unsubscribe", f"<{extra[templating.UNSUBSCRIBE_URL]}>, <{mailto}>"),
                        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
        headers.append(("List-Id", f"<{job.list_id or job.account_id}.list-id.{self.sending_domain}>"))
        for i in self._static_links:
            extra[f"{_CLICK_VAR}{i}"] = click_url(s.tracking_base, s.keyring, ctx, i)
        context = templating.merge_context(job.email, job.name, job.fields, **extra)
        html = templating.render_compiled(self.html, context)
        text = templating.render_compiled(self.text, context)
        if self._text_has_tags:
            text = tidy_text(text)
        if self._has_personal_links:
            html = links.personal_links(html, self._personal_mark, lambda i, url: click_url(
                s.tracking_base, s.keyring, ctx, i, url))
        if self.marketing:
            html, text = self._compliant(html, text, extra[templating.UNSUBSCRIBE_URL])
        if self.campaign.tracking:
            pixel = (f'<img src="{open_url(s.tracking_base, s.keyring, ctx)}" width="1" height="1"'
                     ' alt="" style="display:none">')
            html = insert_before_body_close(html, pixel)
        subject = refuse_line_breaks("Subject", templating.render_compiled(self.subject, context))
        mid = message_id(job.job_id, self.sending_domain)
        to_email = with_ascii_domain(job.email)  # SMTPUTF8 only for a mailbox part not ASCII
        message = self.skeleton.build(
            to_name=job.name, to_email=to_email, subject=subject, date=self._date_header(now),
            message_id=mid, headers=headers,
            parts=[Part("text/plain", text), Part("text/html", html)])
        signed = self.signer.sign(message, self.signing_domain)
        return Outgoing(job, signed, verp_address(s.keyring, ctx, self.bounce_domain), mid,
                        self.skeleton.needs_smtputf8(to_email), to_email)
