"""The gateway: the one HTTP entry point of the dashboard (`/api/v1`). It owns
accounts, API keys and quotas, authenticates every call, rate-limits per key,
and forwards the rest to the owning service with a signed identity."""
