"""The campaigns service (see the architecture brief)."""
