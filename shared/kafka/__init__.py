"""Messaging: a small broker interface (`MessageSource`, `MessageSink`) with a
Kafka implementation and an in-memory one for unit tests, the event
producer, and the one consumer loop every worker runs."""
from shared.kafka.interface import MessageSink, MessageSource, Record
from shared.kafka.producer import EventProducer
from shared.kafka.consumer import ConsumerLoop, PermanentError

__all__ = ["MessageSink", "MessageSource", "Record", "EventProducer", "ConsumerLoop",
           "PermanentError"]
