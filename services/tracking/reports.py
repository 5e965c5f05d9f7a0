"""Reading bounce (DSN, RFC 3464) and complaint (ARF, RFC 5965) messages.

Pure: bytes in, a `Report` out. Which job it concerns is found from the
signed tokens the message carries: the VERP Return-Path the bounce was sent
to ("b+<token>@..."), or the links of the original message quoted in the
report (its List-Unsubscribe header names the whole context). Unsigned
headers are never trusted: anyone can send us a DSN.
"""
from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.header import Header, decode_header
from email.message import Message

from shared.tracking_tokens import parse_verp

# Not a piece of a longer dotted number: "[5.9.70.12]" is an address.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![.\d])")
# A server's reply as a transcript quotes it: "550 5.1.1 User unknown".
_REPLY_STATUS = re.compile(r"(?<![\d.])[45]\d\d[ -]\s*([45])\.(\d{1,3})\.(\d{1,3})(?![.\d])")
_SMTP_CODE = re.compile(r"(?m)(?:^|said:|<<<)\s*([45])\d\d[ -]")  # a reply, as transcripts show it
_LINK_TOKEN = re.compile(r"/(?:u|t/o|t/c)/([A-Za-z0-9_-]{100,140})")
_VERP = re.compile(r"(?i)\bb\+[a-z2-7]{45}@[a-z0-9.-]+")
_ADDRESS = re.compile(r"[^\s<>()\"';,:]+@[^\s<>()\"';,]+")
_DELIVERY_STATUS = {"message/delivery-status",
                    "message/global-delivery-status"}   # RFC 6533: a report on SMTPUTF8 mail
_ADDRESS_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To",
                    "Original-Recipient", "Return-Path", "X-Failed-Recipients")


@dataclass
class Report:
    kind: str                          # "bounce" | "complaint" | "ignored"
    bounce_type: str | None = None     # "hard" | "soft" for bounces
    status: str = ""                   # enhanced status code, e.g. "5.1.1"
    feedback_type: str = ""            # ARF Feedback-Type, e.g. "abuse"
    reason: str = ""                   # why ignored, or the diagnostic with addresses masked
    bounce_tokens: list[str] = field(default_factory=list)
    link_tokens: list[str] = field(default_factory=list)


def mask_addresses(text: str) -> str:
    return _ADDRESS.sub("<address>", text)


def parse_report(raw: bytes) -> Report:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    report = _read_report(message)
    report.bounce_tokens, report.link_tokens = _find_tokens(message, raw)
    return report


def _read_report(message: Message) -> Report:
    report_type = ""
    if message.get_content_type() == "multipart/report":
        report_type = (message.get_param("report-type") or "").lower()
    parts = list(message.walk())
    if report_type == "feedback-report" or any(p.get_content_type() == "message/feedback-report"
                                               for p in parts):
        return _read_arf(parts)
    for part in parts:
        if part.get_content_type() in _DELIVERY_STATUS:
            return _read_dsn(_status_blocks(part))
    return _read_plain_bounce(message)


def header_text(message: Message, name: str) -> str:
    """A header's value as text. compat32 gives a value with raw 8-bit
    bytes as a Header object; those bytes are read as UTF-8. RFC 2047
    encoded words ("=?UTF-8?B?...?=") are decoded: webmail encodes many a
    subject so, and a mailed unsubscribe's went unread."""
    value = message.get(name)
    if isinstance(value, Header) or isinstance(value, str) and "=?" in value:
        try:
            return "".join(_chunk_text(chunk, charset) for chunk, charset in decode_header(value))
        except (HeaderParseError, ValueError):   # a broken encoded word: as written
            return str(value)
    return value or ""


def _chunk_text(chunk: bytes | str, charset: str | None) -> str:
    if isinstance(chunk, str):
        return chunk
    try:
        return chunk.decode(charset or "utf-8", "replace")
    except LookupError:   # a charset Python does not know: the reporter's choice
        return chunk.decode("utf-8", "replace")


# The registered ARF feedback types (RFC 5965, 6430, 6591, 6650). Only a
# recipient's objection to the mail is a complaint: "not-spam" says the mail
# is wanted, "auth-failure" reports a DKIM or SPF failure (a forwarded
# message, say), "virus" a scanner's verdict; each suppressed the address
# platform-wide as a complaint did.
FEEDBACK_TYPES = {"abuse", "fraud", "virus", "other", "not-spam", "auth-failure"}
COMPLAINT_TYPES = {"abuse", "fraud"}


def _read_arf(parts: list[Message]) -> Report:
    feedback_type = "abuse"
    for part in parts:
        if part.get_content_type() == "message/feedback-report":
            fields = _report_fields(part)
            feedback_type = (fields.get("feedback-type") or "abuse").strip().lower()
    if feedback_type not in COMPLAINT_TYPES:
        known = feedback_type if feedback_type in FEEDBACK_TYPES else "unregistered"
        return Report("ignored", feedback_type=known,
                      reason=f"feedback type {known}: not a complaint")
    return Report("complaint", feedback_type=feedback_type)


def _status_blocks(part: Message) -> list[Message]:
    """A delivery-status part's field blocks: the per-message one, then
    one per recipient."""
    if part.get_content_type() == "message/global-delivery-status":
        return _field_blocks(_global_status_text(part))
    blocks = part.get_payload()
    if isinstance(blocks, str):  # an unparsed body: read its lines ourselves
        return _field_blocks(blocks)
    return blocks


def _field_blocks(text: str) -> list[Message]:
    return [email.message_from_string(b) for b in re.split(r"\r?\n\r?\n", text) if b.strip()]


def _global_status_text(part: Message) -> str:
    """The body of the global form: UTF-8, perhaps in a transfer encoding
    (RFC 6533). The parser reads it as a message whose headers are the
    first block, so its bytes are put back together, then decoded."""
    inner = part.get_payload()
    body = Message()   # email decodes a transfer encoding for a plain body only
    body["Content-Transfer-Encoding"] = header_text(part, "Content-Transfer-Encoding")
    body.set_payload(_message_bytes(inner[0]) if isinstance(inner, list) and inner else b"")
    return (body.get_payload(decode=True) or b"").decode("utf-8", "replace")


def _message_bytes(message: Message) -> bytes:
    fields = "".join(f"{name}: {value}\r\n" for name, value in message.raw_items())
    body = message.get_payload(decode=True)
    return fields.encode("utf-8", "surrogateescape") + b"\r\n" + (body or b"")


def _read_dsn(blocks: list[Message]) -> Report:
    recipients = [b for b in blocks[1:]
                  if header_text(b, "Action") or header_text(b, "Status")] or blocks
    # One message, one recipient in practice; with several, the worst wins.
    best: Report | None = None
    for block in recipients:
        action = header_text(block, "Action").strip().lower()
        status_match = _STATUS.search(header_text(block, "Status"))
        status = ".".join(status_match.groups()) if status_match else ""
        diagnostic = mask_addresses(
            " ".join(header_text(block, "Diagnostic-Code").split()))[:300]
        if action not in ("failed", "") or not status:
            candidate = Report("ignored", status=status,
                               reason=f"action {action or 'missing'}: not a bounce")
        elif status.startswith("5"):
            candidate = Report("bounce", "hard", status, reason=diagnostic)
        elif status.startswith("4"):
            candidate = Report("bounce", "soft", status, reason=diagnostic)
        else:
            candidate = Report("ignored", status=status, reason="success status")
        if best is None or _severity(candidate) > _severity(best):
            best = candidate
    return best or Report("ignored", reason="no recipient block")


# Auto-responders answer the Return-Path (RFC 3834), which is our VERP
# address: an out-of-office reply arrives here with a valid token. Read as
# free text, "call 555-0100" or "back on 4.3.25" made it a bounce, and a
# hard one suppressed the subscriber. So a free-text message counts only
# when a mail server sent it, and never when it says it is an auto-reply.
_MTA_SENDERS = {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"}
_FAILURE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|has failed)|mail delivery failed|"
    r"returned mail|failure notice|delivery failed|nondeliverable|non-delivery", re.IGNORECASE)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|auto:|out of (?:the )?office|"
    r"abwesenheit|r[ée]ponse automatique|absence)", re.IGNORECASE)


# A warning that the server still tries: no bounce yet (Exim's "Warning:
# message ... delayed 24 hours", Postfix's "Delayed Mail (still being
# retried)").
_DELAY_SUBJECT = re.compile(r"\bdelay(?:ed)?\b|^\s*warning\b", re.IGNORECASE)
_DELAY_TEXT = re.compile(r"still being retried|delivery attempts will continue|"
                         r"will (?:continue to )?(?:be )?retr(?:y|ied)\b", re.IGNORECASE)


def _auto_reply(message: Message) -> bool:
    precedence = header_text(message, "Precedence").strip().lower()
    return bool(header_text(message, "X-Autoreply") or header_text(message, "X-Autorespond")
                or precedence == "auto_reply"
                or _AUTO_REPLY_SUBJECT.search(header_text(message, "Subject")))


def _from_a_mail_server(message: Message) -> bool:
    sender = header_text(message, "From").lower()
    local = sender.rpartition("<")[2].split("@", 1)[0].strip(' "')
    return local in _MTA_SENDERS or bool(_FAILURE_SUBJECT.search(header_text(message, "Subject")))


def _read_plain_bounce(message: Message) -> Report:
    """Providers that still send free-text bounces, when a mail server sent
    one: the status of the server's reply the text quotes ("550 5.1.1"),
    else, under a failure subject, the first status code of the text, else
    the first SMTP reply code. A postmaster's out-of-office ("fuera hasta el
    5.1.25") quotes no reply, and has no failure subject."""
    if _auto_reply(message):
        return Report("ignored", reason="an automatic reply, not a bounce")
    if not _from_a_mail_server(message):
        return Report("ignored", reason="neither a delivery-status nor a feedback report")
    text = _first_text(message)
    if _DELAY_SUBJECT.search(header_text(message, "Subject")) or _DELAY_TEXT.search(text):
        return Report("ignored", reason="a delay warning: the server is still trying")
    status = _REPLY_STATUS.search(text)
    if status is None and _FAILURE_SUBJECT.search(header_text(message, "Subject")):
        status = _STATUS.search(text)
    if status and status.group(1) in "45":
        kind = "hard" if status.group(1) == "5" else "soft"
        return Report("bounce", kind, ".".join(status.groups()),
                      reason=mask_addresses(" ".join(text.split()))[:300])
    code = _SMTP_CODE.search(text)
    if code:
        kind = "hard" if code.group(1) == "5" else "soft"
        return Report("bounce", kind, f"{code.group(1)}.0.0",
                      reason=mask_addresses(" ".join(text.split()))[:300])
    return Report("ignored", reason="neither a delivery-status nor a feedback report")


def _severity(report: Report) -> int:
    return {"hard": 3, "soft": 2}.get(report.bounce_type or "", 1 if report.kind != "ignored" else 0)


def _report_fields(part: Message) -> dict[str, str]:
    payload = part.get_payload()
    fields: dict[str, str] = {}
    blocks = payload if isinstance(payload, list) else \
        [email.message_from_string(payload or "")]
    for block in blocks:
        for name in block.keys():
            fields.setdefault(name.lower(), header_text(block, name))
    return fields


def _first_text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_maintype() == "text":
            return _decoded(part.get_payload(decode=True) or b"", part)
    return ""


def _find_tokens(message: Message, raw: bytes) -> tuple[list[str], list[str]]:
    texts = [raw.decode("latin-1")]
    for part in message.walk():
        for name in _ADDRESS_HEADERS:
            texts.extend(str(v) for v in part.get_all(name) or [])
        if part.get_content_maintype() == "text":
            body = part.get_payload(decode=True)
            if body:
                texts.append(_decoded(body, part))
    joined = "\n".join(texts)
    bounce = _unique(filter(None, (parse_verp(m) for m in _VERP.findall(joined))))
    links = _unique(_LINK_TOKEN.findall(joined))
    return bounce, links


def _decoded(body: bytes, part: Message) -> str:
    """A text part in its declared charset; UTF-8 when the charset is one
    Python does not know (a report's sender chooses it)."""
    try:
        return body.decode(part.get_content_charset() or "utf-8", "replace")
    except (LookupError, ValueError):  # unknown, or not a name at all ("utf\x008")
        return body.decode("utf-8", "replace")


def _unique(items) -> list[str]:
    return list(dict.fromkeys(items))
