"""The privacy service's metrics. Labels carry a request kind or a service
name, never anything about a person."""
from prometheus_client import Counter, Gauge

REQUESTS = Counter("sandesh_privacy_requests_total", "Data-subject requests received", ["kind"])
COMPLETED = Counter("sandesh_privacy_requests_completed_total",
                    "Data-subject requests every service has answered", ["kind"])
# Refreshed from the database at every scrape of /metrics (app.py), so the
# alert sees the truth however many gunicorn workers there are.
OVERDUE = Gauge("sandesh_privacy_requests_overdue",
                "Open requests past their due date or with a silent service",
                multiprocess_mode="mostrecent")
SILENT = Gauge("sandesh_privacy_silent_services",
               "Open requests a service has not answered in time, per service", ["responder"],
               multiprocess_mode="mostrecent")
