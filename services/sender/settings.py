"""The sender's settings (environment variables, validated at start-up)."""
from __future__ import annotations

from urllib.parse import urlsplit

from shared.config import BOOL, POSITIVE_FLOAT, POSITIVE_INT, Config, ConfigError, Setting

SETTINGS = [
    Setting("SANDESH_DEFAULT_SENDING_DOMAIN", default="sandesh.test"),
    # Where bounces (the VERP Return-Path) and mailed unsubscribes go: a
    # domain whose MX is the MTA that pipes them to tracking's /t/bounces.
    # Outside the local stack it must be chosen: "sending-domain" (each
    # campaign's, when every sending domain's MX is that MTA) or a domain.
    # Left to the sending domain by default, a customer's client.example got
    # them at its own MX, and mailed unsubscribes were lost without a word.
    Setting("SANDESH_BOUNCE_DOMAIN", lambda raw: "" if raw.strip() == "sending-domain" else raw,
            dev_default=""),
    Setting("SANDESH_DKIM_KEY_DIR", default="run/dkim"),
    Setting("SANDESH_DKIM_SELECTOR", default="sandesh"),
    Setting("SANDESH_TRACKING_KEYS", secret=True),
    # Key of the address hashes on contact.suppressed (contacts' suppression
    # list): the same value as contacts', or platform-wide suppressions miss.
    Setting("SANDESH_PII_SALT", secret=True, dev_default="sandesh-local-dev-pii-salt"),
    Setting("SANDESH_PUBLIC_TRACKING_URL", default="http://127.0.0.1:8081"),
    # RFC 8058 one-click unsubscribe needs https; plain http only where
    # explicitly allowed (on by default in the local stack, SANDESH_ENV=local).
    Setting("SANDESH_ALLOW_HTTP_TRACKING_URL", BOOL, default=False, dev_default=True),
    Setting("SANDESH_SMTP_HOST", default="127.0.0.1"),
    Setting("SANDESH_SMTP_PORT", POSITIVE_INT, default=2525),
    Setting("SANDESH_SMTP_RELAYS", default=""),  # "host:port:weight,..."; empty: HOST:PORT
    Setting("SANDESH_SMTP_CONNECTIONS", POSITIVE_INT, default=8),
    Setting("SANDESH_SMTP_STARTTLS", BOOL, default=False),
    Setting("SANDESH_SMTP_USERNAME", default=""),
    Setting("SANDESH_SMTP_PASSWORD", secret=True, default=""),
    Setting("SANDESH_SMTP_TIMEOUT", float, default=30.0),
    # After a SIGTERM, transactions still open are cut (smtp.cut_transactions).
    Setting("SANDESH_SENDER_SHUTDOWN_CUT_SECONDS", POSITIVE_FLOAT, default=20.0),
    Setting("SANDESH_SEND_MAX_ATTEMPTS", POSITIVE_INT, default=5),
    Setting("SANDESH_SEND_RETRY_BASE_SECONDS", float, default=30.0),
    Setting("SANDESH_SEND_CLAIM_LEASE_SECONDS", float, default=60.0),
    Setting("SANDESH_SEND_DOMAIN_CONCURRENCY", POSITIVE_INT, default=8),
    Setting("SANDESH_SEND_BATCH", POSITIVE_INT, default=500),
    # Outcomes are recorded every N sends, and at most N more go out before
    # that record is written: a kill -9 re-sends at most ~2N + connections.
    Setting("SANDESH_SEND_RECORD_EVERY", POSITIVE_INT, default=32),
    # Where the sender reads and writes: overridable so a benchmark can run
    # its own senders beside the stack's without sharing their work.
    Setting("SANDESH_SENDER_GROUP", default="sender"),
    Setting("SANDESH_SENDER_DB", default=""),  # empty: <prefix>sender
    Setting("SANDESH_SENDER_TOPIC_PREFIX", default=""),  # prefixes every topic it reads or writes
    Setting("SANDESH_SENDER_STATE_CONSUMERS", BOOL, default=True),
    # How long a job blocked by a contact state waits for the contact-state
    # loop to catch up before it is skipped on the state there is (contact_view.py).
    Setting("SANDESH_SENDER_CONTACT_VIEW_PATIENCE_SECONDS", POSITIVE_FLOAT, default=30.0),
    # /healthz fails once the send loop has not turned for this long
    # (shared/heartbeat.py): longer than any batch may take, its flush
    # waiting out Kafka's two-minute message timeout included.
    Setting("SANDESH_SENDER_STALL_SECONDS", POSITIVE_FLOAT, default=300.0),
]


def check_tracking_url(config: Config) -> None:
    """The List-Unsubscribe URL is built on SANDESH_PUBLIC_TRACKING_URL, and
    mailbox providers only honour one-click unsubscribe (RFC 8058) over https."""
    url = urlsplit(config.public_tracking_url)
    if not url.netloc or url.scheme not in ("http", "https"):
        raise ConfigError("configuration error: SANDESH_PUBLIC_TRACKING_URL="
                          f"{config.public_tracking_url!r} is invalid: expected https://host[:port]")
    if url.scheme == "http" and not config.allow_http_tracking_url:
        raise ConfigError("configuration error: SANDESH_PUBLIC_TRACKING_URL must be https "
                          "(RFC 8058 one-click unsubscribe); plain http is accepted only with "
                          "SANDESH_ALLOW_HTTP_TRACKING_URL=true (local stacks)")


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def check_smtp_relays(config: Config) -> None:
    """In production, a relay on the pod's own loopback (the defaults, the
    local stack's sink) is a deployment that forgot to name its relays: every
    message would be deferred, then dead-lettered, by a sender that looks
    healthy. Refused at start-up instead."""
    if config.env != "production":
        return
    from services.sender.smtp import parse_relays
    relays = parse_relays(config.smtp_relays, config.smtp_host, config.smtp_port)
    local = [f"{r.host}:{r.port}" for r in relays if r.host.lower() in LOOPBACK_HOSTS]
    if local:
        raise ConfigError(f"configuration error: SMTP relay {', '.join(local)} is this host's "
                          "own loopback; set SANDESH_SMTP_RELAYS (or SANDESH_SMTP_HOST and "
                          "SANDESH_SMTP_PORT) to the relays mail leaves through")
