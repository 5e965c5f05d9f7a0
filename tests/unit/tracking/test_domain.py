"""Bot heuristics, what analytics may see, and stats arithmetic."""
from __future__ import annotations

import pytest

from services.tracking import domain
from services.tracking.domain import Verdict

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
IPHONE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Mobile/15E148")
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


@pytest.mark.parametrize("agent,reason", [
    ("Barracuda Sentinel (EE)", "scanner:barracuda"),
    ("Mozilla/5.0 (compatible; Mimecast URL Protect)", "scanner:mimecast"),
    ("Proofpoint URL Defense", "scanner:proofpoint"),
    ("Microsoft Office Existence Discovery", "scanner:microsoft-defender"),
    ("Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36",
     "scanner:headless-browser"),
    ("python-requests/2.31.0", "scanner:http-library"),
    ("curl/8.5.0", "scanner:http-library"),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "scanner:crawler"),
])
def test_known_scanners_are_machines(agent, reason):
    assert domain.classify_request("GET", agent, "203.0.113.9", "click") == Verdict(True, reason)


@pytest.mark.parametrize("agent", [CHROME, IPHONE_MAIL, GMAIL_PROXY,
                                   "Mozilla/5.0 (Linux; Android 13; CUBOT X30) Chrome/120.0 Mobile",
                                   "Microsoft Outlook 16.0.17328; Pro"])
def test_people_are_people(agent):
    assert domain.classify_request("GET", agent, "203.0.113.9", "open") == domain.HUMAN


def test_head_requests_and_missing_agents_are_machines():
    assert domain.classify_request("HEAD", CHROME, "203.0.113.9", "click").reason == "head-request"
    assert domain.classify_request("GET", "  ", "203.0.113.9", "open").reason == "no-user-agent"


def test_apple_privacy_proxy_prefetch_is_a_machine_open_only_from_apple():
    assert domain.classify_request("GET", "Mozilla/5.0", "17.58.101.4", "open") == \
        Verdict(True, "apple-privacy-proxy")
    assert not domain.classify_request("GET", "Mozilla/5.0", "198.51.100.4", "open").machine
    assert not domain.classify_request("GET", IPHONE_MAIL, "17.58.101.4", "open").machine


def test_hits_soon_after_delivery_are_machines():
    assert domain.classify_timing(domain.HUMAN, 3.0, 10.0) == Verdict(True, "soon-after-delivery")
    # a sender's clock a little ahead: still on arrival; far ahead: no telling
    assert domain.classify_timing(domain.HUMAN, -2.0, 10.0).machine
    assert domain.classify_timing(domain.HUMAN, -3600.0, 10.0) == domain.HUMAN
    assert domain.classify_timing(domain.HUMAN, 60.0, 10.0) == domain.HUMAN
    assert domain.classify_timing(domain.HUMAN, None, 10.0) == domain.HUMAN
    already = Verdict(True, "scanner:mimecast")
    assert domain.classify_timing(already, 60.0, 10.0) is already


def test_clicking_other_links_within_a_second_is_a_burst():
    assert domain.classify_burst(domain.HUMAN, 2, (1, 100.0), 100.4, 1.0).reason == "all-links-burst"
    assert domain.classify_burst(domain.HUMAN, 1, (1, 100.0), 100.4, 1.0) == domain.HUMAN
    assert domain.classify_burst(domain.HUMAN, 2, (1, 100.0), 105.0, 1.0) == domain.HUMAN
    assert domain.classify_burst(domain.HUMAN, 2, None, 105.0, 1.0) == domain.HUMAN


@pytest.mark.parametrize("agent,family", [
    (CHROME, "chrome"), (GMAIL_PROXY, "gmail-image-proxy"), (IPHONE_MAIL, "apple-mail"),
    ("Mozilla/5.0 (Macintosh) Gecko/20100101 Firefox/125.0", "firefox"),
    ("Microsoft Outlook 16.0.17328; Pro", "outlook"), ("Barracuda Sentinel (EE)", "scanner:barracuda"),
    ("", "none"), ("something odd", "other"),
])
def test_user_agent_family_is_coarse(agent, family):
    assert domain.user_agent_family(agent) == family


@pytest.mark.parametrize("ip,prefix", [
    ("203.0.113.77", "203.0.113.0/24"), ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
    ("::ffff:198.51.100.9", "198.51.100.0/24"), ("not-an-ip", ""), ("", ""),
    # 6to4: the /48 would be the client's whole IPv4 address, 203.0.113.77
    ("2002:cb00:714d::1", "203.0.113.0/24"),
])
def test_ip_is_truncated(ip, prefix):
    assert domain.truncate_ip(ip) == prefix


def test_summary_and_rates():
    stats = domain.summarise({"sent": 100, "failed": 4, "bounced_hard": 3, "bounced_soft": 2,
                              "opens_unique_human": 38, "opens_unique_machine": 20,
                              "clicks_unique_human": 19, "unsubscribes": 1, "complaints": 0})
    assert stats["delivered"] == 95
    assert stats["bounced"] == {"hard": 3, "soft": 2, "total": 5}
    assert stats["rates"]["open"] == 0.4
    assert stats["rates"]["click_to_open"] == 0.5
    assert stats["rates"]["bounce"] == 0.05
    assert stats["rates"]["failure"] == round(4 / 104, 4)
    assert domain.summarise({})["rates"]["open"] == 0.0


def test_an_open_or_click_rate_is_never_over_one():
    """A message clicked and then reported bounced counts in both: 4 clickers
    of 3 delivered read 1.3333."""
    rates = domain.summarise({"sent": 4, "bounced_hard": 1, "opens_unique_human": 4,
                              "clicks_unique_human": 4})["rates"]
    assert (rates["open"], rates["click"], rates["click_to_open"]) == (1.0, 1.0, 1.0)
