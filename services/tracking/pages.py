"""The few HTML pages a recipient may see: small, accessible, no JavaScript,
no external resources, nothing personal (the page shows no address)."""
from __future__ import annotations

from html import escape

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;"
          "line-height:1.5;color:#1a1a1a}fieldset{border:1px solid #888;padding:1rem}"
          "button{font-size:1rem;padding:.6rem 1.2rem;margin-top:1rem}"
          "label{display:block;margin:.4rem 0}")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
}


def _page(title: str, body: str, head: str = "") -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="robots" content="noindex">{head}'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>")


def not_found_page() -> str:
    return _page("Not found", "<h1>Not found</h1><p>This link is not valid.</p>")


def come_back_page(seconds: int) -> str:
    """A link tracking cannot follow yet: the browser asks again by itself
    (a meta refresh needs no script), and the reader can too."""
    return _page("One moment", "<h1>One moment</h1><p>This link is almost ready. "
                 f"This page tries again in {seconds} seconds.</p>"
                 '<p><a href="">Try again now</a></p>',
                 head=f'<meta http-equiv="refresh" content="{seconds}">')


def unsubscribe_form(action: str, has_list: bool) -> str:
    """GET only shows this: link scanners fetch every URL of a message, so
    unsubscribing takes a POST (the button, or the RFC 8058 one-click)."""
    choices = []
    if has_list:
        choices.append(_radio("list", "Only this mailing list", checked=True))
    choices.append(_radio("all", "Every email from this sender", checked=not has_list))
    return _page("Unsubscribe", (
        "<h1>Unsubscribe</h1>"
        "<p>Choose what you no longer want to receive, then confirm.</p>"
        f'<form method="post" action="{escape(action)}">'
        '<fieldset><legend>Stop sending me</legend>'
        f"{''.join(choices)}</fieldset>"
        '<button type="submit">Unsubscribe</button></form>'))


def _radio(value: str, label: str, checked: bool) -> str:
    mark = " checked" if checked else ""
    return (f'<label><input type="radio" name="scope" value="{value}"{mark}> '
            f"{escape(label)}</label>")


def unsubscribed_page(whole_account: bool) -> str:
    what = "any more email from this sender" if whole_account else "email from this list"
    return _page("Unsubscribed", (
        '<h1>You are unsubscribed</h1>'
        f'<p role="status">You will not receive {what}. '
        "It takes effect immediately.</p>"))
