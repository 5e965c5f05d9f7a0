"""What benchmarks publish into instead of Kafka."""


class CountingSink:
    """Stands in for Kafka: counts what the code publishes (already encoded
    and schema-validated by EventProducer) and keeps nothing. Benchmark
    events have no business on the stack's shared topics (send.jobs feeds
    its senders)."""

    def __init__(self):
        self.sent = 0

    def send(self, topic, key, value, headers=None):
        self.sent += 1

    def flush(self, timeout=None):
        pass

    def close(self):
        pass
