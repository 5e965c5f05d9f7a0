"""Sandesh's common package: configuration, logging, events, Kafka, MongoDB,
metrics and HTTP pieces that every service uses. Nothing here connects to
anything at import time."""
