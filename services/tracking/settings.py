"""The tracking service's configuration (validated once at start-up)."""
from shared import topics
from shared.config import POSITIVE_INT, TRUSTED_PROXY_HOPS, Setting
from shared.tracking_tokens import Keyring


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise ValueError("expected a number >= 0")
    return value


SETTINGS = [
    # "k1:<base64 32 bytes>,k0:<base64>": the first key signs, every key verifies.
    Setting("SANDESH_TRACKING_KEYS", Keyring.from_env, secret=True),
    Setting("SANDESH_TRACKING_PORT", POSITIVE_INT, default=8081),
    # Shared secret of the bounce/complaint webhook (Bearer, X-Sandesh-Webhook-Token
    # or the HTTP Basic password). Empty: the webhook refuses everything.
    Setting("SANDESH_BOUNCE_WEBHOOK_TOKEN", secret=True, default=""),
    # Soft bounces of one contact (distinct messages) before it counts as hard.
    Setting("SANDESH_SOFT_BOUNCE_LIMIT", POSITIVE_INT, default=3),
    # Hits this soon after delivery are machine (security scanners, prefetch).
    Setting("SANDESH_MACHINE_HIT_SECONDS", _non_negative_float, default=10.0),
    # Clicks on different links of one message this close together are machine.
    Setting("SANDESH_MACHINE_BURST_SECONDS", _non_negative_float, default=1.0),
    # Hits waiting for Kafka in one web process before new ones are dropped (counted).
    Setting("SANDESH_HIT_QUEUE_LIMIT", POSITIVE_INT, default=100_000),
    Setting("SANDESH_HIT_FLUSH_SECONDS", _non_negative_float, default=0.1),
    # Where open/click events go; only benchmarks and canaries change it, so
    # their hits do not reach the stats worker.
    Setting("SANDESH_TRACKING_HITS_TOPIC", default=topics.TRACKING_EVENTS),
    TRUSTED_PROXY_HOPS,
    # The hourly series covers this many days after a campaign's first event.
    Setting("SANDESH_STATS_HOURLY_DAYS", POSITIVE_INT, default=3),
]
