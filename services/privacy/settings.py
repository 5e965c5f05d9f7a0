"""The privacy service's own settings (on top of shared.config.COMMON)."""
from shared.config import POSITIVE_INT, Setting


def _names(raw: str) -> list[str]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise ValueError("expected a comma-separated list of service names")
    return names


SETTINGS = [
    # The same salt every service hashes addresses with (contacts' suppression
    # list, the sender's send-time check): a request by address travels as
    # this hash, never as the address.
    Setting("SANDESH_PII_SALT", secret=True, dev_default="sandesh-local-dev-pii-salt"),
    # Services that hold personal data about contacts and must answer every
    # contact request (docs/privacy.md says why each is on the list).
    Setting("SANDESH_PRIVACY_RESPONDERS", _names, default=_names("contacts,sender,tracking")),
    # A service that has not answered within this many hours is "silent".
    Setting("SANDESH_PRIVACY_SILENT_AFTER_HOURS", POSITIVE_INT, default=24),
    # k of the k-anonymous aggregate report: smaller groups are suppressed.
    Setting("SANDESH_PRIVACY_AGGREGATE_K", POSITIVE_INT, default=5),
    # Per-contact markers behind the aggregate counts are rolled up into
    # plain counts and deleted once a day is this many days old.
    Setting("SANDESH_PRIVACY_AGGREGATE_ROLLUP_DAYS", POSITIVE_INT, default=3),
    # An access request's export (a copy of the person's data) is deleted
    # this many days after the request completed; a download after is 410.
    Setting("SANDESH_PRIVACY_EXPORT_DAYS", POSITIVE_INT, default=30),
    # Accounts allowed to publish policy versions besides the operator
    # (comma-separated ids; the platform's own account).
    Setting("SANDESH_PRIVACY_PUBLISHER_ACCOUNTS", lambda raw: [a.strip() for a in raw.split(",") if a.strip()],
            default=[]),
]
