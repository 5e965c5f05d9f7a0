"""Pure rules of tracking: who is a machine, what analytics may see, rates.

No pymongo, no Kafka, no Flask: everything here is a function of its
arguments, so every heuristic has a unit test (docs/tracking.md explains them).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

# --------------------------------------------------------------- machines
# Mail security gateways and link scanners that fetch every link or pixel of
# a message on its own, before (or instead of) a person. Matched anywhere in
# the User-Agent, case-insensitively.
SCANNER_PATTERNS: list[tuple[str, str]] = [
    ("barracuda", r"barracuda"),
    ("mimecast", r"mimecast"),
    ("proofpoint", r"proofpoint|ppops-|pphosted"),
    ("microsoft-defender", r"microsoft office existence discovery|safelinks|ms-office-scan|"
                           r"microsoft-atp|bingpreview"),
    ("cisco-ironport", r"ironport|cisco secure email"),
    ("trend-micro", r"trend ?micro|trendmicro"),
    ("symantec", r"symantec|messagelabs|broadcom"),
    ("forcepoint", r"forcepoint|websense"),
    ("sophos", r"sophos"),
    ("fortinet", r"fortiguard|fortimail"),
    ("headless-browser", r"headlesschrome|phantomjs|puppeteer|playwright|selenium"),
    ("http-library", r"^(python-requests|python-urllib|curl|wget|go-http-client|java/|okhttp|"
                     r"apache-httpclient|libwww-perl|node-fetch|axios)"),
    # "bot" as a word or before a version ("Googlebot/2.1"), not inside a
    # phone model such as "CUBOT".
    ("crawler", r"(?<![a-z])bot\b|bot/|crawler|spider|slurp|facebookexternalhit|"
                r"linkexpanding|skypeuripreview"),
]
# One pass over the User-Agent instead of one per pattern (the hot path).
_ANY_SCANNER = re.compile("|".join(f"(?P<s{i}>{pattern})"
                                   for i, (_, pattern) in enumerate(SCANNER_PATTERNS)), re.I)

# Apple Mail Privacy Protection fetches every pixel through Apple's relays
# (17.0.0.0/8) with a bare "Mozilla/5.0" user agent, whether or not the
# message is read.
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
_BARE_MOZILLA = re.compile(r"^Mozilla/5\.0\s*$")

# Image proxies that fetch the pixel when the person opens the message (and
# cache it): an open through them is a person, unless it comes within the
# machine window after delivery (see classify_timing).
_OPEN_PROXIES = [("gmail-image-proxy", re.compile(r"GoogleImageProxy", re.I)),
                 ("yahoo-mail-proxy", re.compile(r"YahooMailProxy", re.I))]

_FAMILIES = [
    ("gmail-image-proxy", r"GoogleImageProxy"), ("yahoo-mail-proxy", r"YahooMailProxy"),
    ("outlook", r"Microsoft Outlook|MSOffice|Outlook-"), ("thunderbird", r"Thunderbird"),
    ("edge", r"Edg(e|A|iOS)?/"), ("opera", r"OPR/|Opera"), ("samsung", r"SamsungBrowser"),
    ("chrome", r"Chrome/|CriOS/"), ("firefox", r"Firefox/|FxiOS/"),
    ("apple-mail", r"AppleWebKit/.*Mobile/\w+$|AppleWebKit/[\d.]+ \(KHTML, like Gecko\)$"),
    ("safari", r"Safari/"),
]
_FAMILY_RES = [(name, re.compile(pattern)) for name, pattern in _FAMILIES]


@dataclass(frozen=True)
class Verdict:
    machine: bool
    reason: str = ""  # which rule said so; "" for a person


HUMAN = Verdict(False)


def classify_request(method: str, user_agent: str, ip: str, kind: str) -> Verdict:
    """What the request alone says (rules 1-4 of docs/tracking.md)."""
    if method.upper() == "HEAD":
        return Verdict(True, "head-request")
    agent = (user_agent or "").strip()
    if not agent:
        return Verdict(True, "no-user-agent")
    scanner = scanner_name(agent)
    if scanner:
        return Verdict(True, f"scanner:{scanner}")
    if kind == "open" and _BARE_MOZILLA.match(agent) and _in_network(ip, APPLE_NETWORK):
        return Verdict(True, "apple-privacy-proxy")
    return HUMAN


@lru_cache(maxsize=4096)
def scanner_name(user_agent: str) -> str:
    """The scanner a User-Agent belongs to, "" if none (cached: agents repeat)."""
    match = _ANY_SCANNER.search(user_agent)
    return SCANNER_PATTERNS[int(match.lastgroup[1:])][0] if match else ""


def classify_timing(verdict: Verdict, seconds_since_delivery: float | None,
                    machine_window: float) -> Verdict:
    """Rule 5: a hit within `machine_window` seconds of delivery is a machine.
    A hit further *before* its delivery than that says the clocks disagree
    (the sender's and this one's), not when it came: the rule cannot tell."""
    if verdict.machine or seconds_since_delivery is None \
            or seconds_since_delivery < -machine_window:
        return verdict
    if seconds_since_delivery < machine_window:
        return Verdict(True, "soon-after-delivery")
    return verdict


def classify_burst(verdict: Verdict, link_index: int, previous_click: tuple[int, float] | None,
                   at: float, burst_window: float) -> Verdict:
    """Rule 6: a click on another link of the same message within
    `burst_window` seconds of the previous click is a machine walking every
    link. `previous_click` is (link index, epoch seconds)."""
    if verdict.machine or previous_click is None:
        return verdict
    previous_index, previous_at = previous_click
    if previous_index != link_index and abs(at - previous_at) <= burst_window:
        return Verdict(True, "all-links-burst")
    return verdict


def _in_network(ip: str, network) -> bool:
    try:
        return ipaddress.ip_address(ip) in network
    except ValueError:
        return False


# ------------------------------------------------- what analytics may see

@lru_cache(maxsize=4096)
def user_agent_family(user_agent: str) -> str:
    """A coarse family ("chrome", "scanner:mimecast"...), never the raw string."""
    agent = (user_agent or "").strip()
    if not agent:
        return "none"
    scanner = scanner_name(agent)
    if scanner:
        return f"scanner:{scanner}"
    for name, pattern in _FAMILY_RES:
        if pattern.search(agent):
            return name
    return "other"


_IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.\d{1,3}$")


def truncate_ip(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network, "" when not an address. An
    IPv6 address with an IPv4 one inside its first 48 bits is cut as that
    IPv4 address: a 6to4 address's /48 (2002:cb00:714d::/48) is its
    client's whole public IPv4 address (203.0.113.77)."""
    match = _IPV4.match(ip or "")
    if match and all(int(part) < 256 for part in match.groups()):
        return f"{match.group(1)}.{match.group(2)}.{match.group(3)}.0/24"
    try:
        address = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        address = address.ipv4_mapped or address.sixtofour or address
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


# ---------------------------------------------------------------- stats

COUNTERS = (
    "sent", "failed", "bounced_hard", "bounced_soft",
    "opens_total_human", "opens_total_machine", "opens_unique_human", "opens_unique_machine",
    "clicks_total_human", "clicks_total_machine", "clicks_unique_human", "clicks_unique_machine",
    "unsubscribes", "complaints",
)


def hour_of(iso_time: str) -> datetime:
    at = parse_time(iso_time)
    return at.replace(minute=0, second=0, microsecond=0)


def parse_time(iso_time: str) -> datetime:
    at = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _ratio(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


def summarise(counts: dict[str, int]) -> dict:
    """The stats body from raw counters (missing counters are zero)."""
    c = {name: int(counts.get(name, 0)) for name in COUNTERS}
    bounced = c["bounced_hard"] + c["bounced_soft"]
    delivered = max(0, c["sent"] - bounced)
    return {
        "sent": c["sent"], "delivered": delivered, "failed": c["failed"],
        "bounced": {"hard": c["bounced_hard"], "soft": c["bounced_soft"], "total": bounced},
        "opens": {"unique_human": c["opens_unique_human"], "total_human": c["opens_total_human"],
                  "unique_machine": c["opens_unique_machine"],
                  "total_machine": c["opens_total_machine"]},
        "clicks": {"unique_human": c["clicks_unique_human"],
                   "total_human": c["clicks_total_human"],
                   "unique_machine": c["clicks_unique_machine"],
                   "total_machine": c["clicks_total_machine"]},
        "unsubscribes": c["unsubscribes"], "complaints": c["complaints"],
        "rates": {
            "delivery": _ratio(delivered, c["sent"]),
            "bounce": _ratio(bounced, c["sent"]),
            "failure": _ratio(c["failed"], c["sent"] + c["failed"]),
            # At most 1: a message opened or clicked and then reported
            # bounced counts in both.
            "open": min(1.0, _ratio(c["opens_unique_human"], delivered)),
            "click": min(1.0, _ratio(c["clicks_unique_human"], delivered)),
            "click_to_open": _ratio(c["clicks_unique_human"], c["opens_unique_human"]),
            "unsubscribe": _ratio(c["unsubscribes"], delivered),
            "complaint": _ratio(c["complaints"], delivered),
        },
    }
