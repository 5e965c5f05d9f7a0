from __future__ import annotations

from shared.events import Event, encode
from shared.kafka.interface import MessageSink


class EventProducer:
    """Validates and publishes envelopes. `flush()` is the durability point:
    nothing that depends on an event being out (an offset commit, an HTTP
    202) may happen before it returns."""

    def __init__(self, sink: MessageSink):
        self.sink = sink

    def publish(self, topic: str, event: Event, key: str | None = None) -> None:
        headers = [("ce_type", event.type.encode()), ("ce_id", event.id.encode())]
        if event.trace_id:
            headers.append(("trace_id", event.trace_id.encode()))
        self.sink.send(topic, (key or event.subject).encode(), encode(event), headers)

    def flush(self, timeout: float | None = None) -> None:
        self.sink.flush(timeout)

    def publish_now(self, topic: str, event: Event, key: str | None = None) -> None:
        self.publish(topic, event, key)
        self.flush()
