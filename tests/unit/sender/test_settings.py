"""The sender refuses a public tracking URL that cannot carry RFC 8058
one-click unsubscribe (https), unless plain http is explicitly allowed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.sender.settings import SETTINGS, check_smtp_relays, check_tracking_url
from shared.config import ConfigError, load_common

KEYS = {"SANDESH_TRACKING_KEYS": "k1:" + "A" * 43 + "=", "SANDESH_PII_SALT": "s",
        "SANDESH_BOUNCE_DOMAIN": "bounces.example.com"}


def config(**env):
    return load_common(SETTINGS, {**KEYS, **env})


def test_production_refuses_http_and_names_the_variable():
    with pytest.raises(ConfigError, match="SANDESH_PUBLIC_TRACKING_URL must be https"):
        check_tracking_url(config(SANDESH_ENV="production",
                                  SANDESH_PUBLIC_TRACKING_URL="http://t.example.com"))
    with pytest.raises(ConfigError, match="SANDESH_PUBLIC_TRACKING_URL"):  # the default is http
        check_tracking_url(config(SANDESH_ENV="production"))


def test_https_is_accepted_everywhere():
    check_tracking_url(config(SANDESH_ENV="production",
                              SANDESH_PUBLIC_TRACKING_URL="https://t.example.com"))
    check_tracking_url(config(SANDESH_ENV="local", SANDESH_ALLOW_HTTP_TRACKING_URL="false",
                              SANDESH_PUBLIC_TRACKING_URL="https://127.0.0.1:8443"))


def test_http_only_with_the_allowance_which_the_local_stack_has_by_default():
    check_tracking_url(config(SANDESH_ENV="local"))  # the local stack: http://127.0.0.1:8081
    check_tracking_url(config(SANDESH_ENV="production", SANDESH_ALLOW_HTTP_TRACKING_URL="true",
                              SANDESH_PUBLIC_TRACKING_URL="http://t.internal"))
    with pytest.raises(ConfigError, match="SANDESH_ALLOW_HTTP_TRACKING_URL"):
        check_tracking_url(config(SANDESH_ENV="local", SANDESH_ALLOW_HTTP_TRACKING_URL="false"))


def test_production_needs_the_address_hash_salt():
    """Without contacts' salt the sender could not match contact.suppressed's hashes."""
    with pytest.raises(ConfigError, match="SANDESH_PII_SALT is not set"):
        load_common(SETTINGS, {"SANDESH_TRACKING_KEYS": KEYS["SANDESH_TRACKING_KEYS"],
                               "SANDESH_ENV": "production",
                               "SANDESH_PUBLIC_TRACKING_URL": "https://t.example.com"})
    assert config(SANDESH_ENV="local", SANDESH_PII_SALT="").pii_salt == "sandesh-local-dev-pii-salt"


@pytest.mark.parametrize("url", ["t.example.com", "ftp://t.example.com", "https://"])
def test_not_a_web_url_is_refused(url):
    with pytest.raises(ConfigError, match="SANDESH_PUBLIC_TRACKING_URL=.* is invalid"):
        check_tracking_url(config(SANDESH_PUBLIC_TRACKING_URL=url))


def test_the_sender_process_stops_at_start_up_with_the_message():
    """Before it connects to anything (no servers needed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDESH_")}
    env.update(KEYS, SANDESH_ENV="production", SANDESH_PII_SALT="s",
               SANDESH_PUBLIC_TRACKING_URL="http://t.example.com", SANDESH_SENDER_PORT="")
    done = subprocess.run([sys.executable, "-m", "services.sender.worker"], env=env,
                          cwd=Path(__file__).resolve().parents[3], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "SANDESH_PUBLIC_TRACKING_URL must be https" in done.stderr


@pytest.mark.parametrize("env", [{}, {"SANDESH_SMTP_HOST": "localhost"},
                                 {"SANDESH_SMTP_RELAYS": "relay.example.com:587:3,127.0.0.1:25:1"}])
def test_production_refuses_a_relay_on_the_pods_own_loopback(env):
    """The defaults are the local sink's: a deployment that named no relay
    deferred, then dead-lettered, every message from a sender that looked ready."""
    with pytest.raises(ConfigError, match="SANDESH_SMTP_RELAYS"):
        check_smtp_relays(config(SANDESH_ENV="production", **env))
    check_smtp_relays(config(SANDESH_ENV="local", **env))


def test_production_takes_named_relays():
    check_smtp_relays(config(SANDESH_ENV="production",
                             SANDESH_SMTP_RELAYS="relay-a.example.com:587:2,relay-b.example.com:587"))
    check_smtp_relays(config(SANDESH_ENV="production", SANDESH_SMTP_HOST="smtp.example.com"))


def test_production_names_where_bounces_and_mailed_unsubscribes_go():
    """Left to each campaign's sending domain, a customer's domain got them
    at its own MX: mailed unsubscribes lost without a word."""
    without = {k: v for k, v in KEYS.items() if k != "SANDESH_BOUNCE_DOMAIN"}
    with pytest.raises(ConfigError, match="SANDESH_BOUNCE_DOMAIN is not set"):
        load_common(SETTINGS, {**without, "SANDESH_ENV": "production"})
    assert config(SANDESH_ENV="production").bounce_domain == "bounces.example.com"
    assert config(SANDESH_ENV="production", SANDESH_BOUNCE_DOMAIN="sending-domain"
                  ).bounce_domain == ""
    assert load_common(SETTINGS, {**without, "SANDESH_ENV": "local"}).bounce_domain == ""
