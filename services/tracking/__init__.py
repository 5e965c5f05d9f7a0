"""The tracking service (see the architecture brief)."""
