"""The sender's Prometheus metrics (labels: outcome and reason words, never
anything about a person)."""
from prometheus_client import Counter, Histogram

OUTCOMES = Counter("sandesh_sender_jobs_total", "Jobs settled by the sender", ["outcome"])
HELD = Counter("sandesh_sender_holds_total", "Jobs held back (partition rewound)", ["reason"])
ERASED = Counter("sandesh_sender_erased_jobs_total",
                 "Queued jobs dropped because their account was deleted")
PARKED = Counter("sandesh_sender_parked_total",
                 "Jobs parked (set aside in MongoDB, off their partition): their campaign "
                 "paused, or beyond its rate limit or hourly quota", ["reason"])
BATCH_SECONDS = Histogram("sandesh_sender_batch_seconds", "Time to settle one polled batch",
                          buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 30))
CONTACT_VIEW_BEHIND = Counter(
    "sandesh_sender_contact_view_behind_total",
    "Blocked jobs skipped while the contact-state loop was still behind (contact_view.py)")
