"""The contacts worker's Prometheus metrics (labels are outcome words, never
anything about a person or an account)."""
from prometheus_client import Counter, Gauge

FANOUT_RECIPIENTS = Counter("sandesh_fanout_recipients_total",
                            "Send jobs produced by campaign fan-outs")
FANOUT_RUNS = Counter("sandesh_fanout_runs_total",
                      "Fan-out runs by how they ended (done, cancelled, paused, stopped, "
                      "lease_lost, error)", ["ended"])
FANOUTS_RUNNING = Gauge("sandesh_fanouts_running", "Fan-outs this worker's threads hold")
