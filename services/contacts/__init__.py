"""The contacts service (see the architecture brief)."""
