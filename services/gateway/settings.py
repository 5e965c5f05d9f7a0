from shared.config import POSITIVE_INT, TRUSTED_PROXY_HOPS, Setting

SETTINGS = [
    Setting("SANDESH_OPERATOR_TOKEN", secret=True, default=""),
    Setting("SANDESH_CONTACTS_URL", default="http://127.0.0.1:8082"),
    Setting("SANDESH_CAMPAIGNS_URL", default="http://127.0.0.1:8083"),
    Setting("SANDESH_TRACKING_URL", default="http://127.0.0.1:8081"),
    Setting("SANDESH_PRIVACY_URL", default="http://127.0.0.1:8084"),
    Setting("SANDESH_DASHBOARD_ORIGIN", default=""),
    Setting("SANDESH_RATE_LIMIT_PER_MINUTE", POSITIVE_INT, default=1200),
    # Failed authentications a minute from one client address, across every
    # gateway process (auth_failures.py); the local stack, where every client
    # is 127.0.0.1, raises it.
    Setting("SANDESH_AUTH_FAILURES_PER_MINUTE", POSITIVE_INT, default=30),
    TRUSTED_PROXY_HOPS,
    Setting("SANDESH_UPSTREAM_CONNECT_TIMEOUT", float, default=2.0),
    Setting("SANDESH_UPSTREAM_READ_TIMEOUT", float, default=30.0),
    # The From of the platform's own mail (privacy-policy notices to account
    # users): a domain of the operator's, with DKIM and a bounce address.
    # Production must name it; sandesh.test went out as a domain that does not exist.
    Setting("SANDESH_PLATFORM_FROM_EMAIL", dev_default="privacy@sandesh.test"),
]
