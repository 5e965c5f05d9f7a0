"""The privacy service (see the architecture brief)."""
