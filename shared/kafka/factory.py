"""Build the Kafka-backed pieces from configuration."""
from __future__ import annotations

import os
import socket

from shared.config import Config
from shared.kafka.consumer import STALL_SECONDS, ConsumerLoop, Handler
from shared.kafka.kafka_impl import KafkaSink
from shared.kafka.producer import EventProducer


# Idle, a prompt loop fetches ten times a second instead of twice: the idle
# stack's CPU went from 3.8% of a core to 4.7-4.8% with two such loops
# (Kafka 2.0% to 3.0%), for a campaign whose first message goes out ~0.4 s
# sooner. With the sender's contact-state loop prompt too (sender/worker.py),
# 5.2% (Kafka 3.2%).
PROMPT_FETCH_WAIT_MS = 100


def client_id(service: str) -> str:
    return f"sandesh-{service}-{socket.gethostname()}-{os.getpid()}"


def event_producer(config: Config, service: str, **overrides) -> EventProducer:
    return EventProducer(KafkaSink(config.kafka_bootstrap, client_id(service), **overrides))


def hot_event_producer(config: Config, service: str, **overrides) -> EventProducer:
    """For a process that publishes an event per recipient or per row: on
    librdkafka (see rdkafka_impl.py). Create it after any fork."""
    from shared.kafka.rdkafka_impl import RdKafkaSink
    return EventProducer(RdKafkaSink(config.kafka_bootstrap, client_id(service), **overrides))


def consumer_loop(config: Config, service: str, group: str, topics: list[str],
                  handlers: dict[str, Handler], producer: EventProducer | None = None,
                  prompt: bool = False, **loop_options) -> ConsumerLoop:
    """A loop whose commits wait for `producer` (what the handlers publish).
    It reads with librdkafka (see rdkafka_impl.RdKafkaSource for why).

    `prompt`: for a loop that reads events someone waits on (a campaign's
    launch starts its fan-out and its sending): the broker answers a fetch
    after PROMPT_FETCH_WAIT_MS when it has gathered less than 32 kB, not
    after 500 ms (CONSUMER). A busy topic fills 32 kB sooner either way."""
    from shared.kafka.rdkafka_impl import RdKafkaSource  # like RdKafkaSink: loaded where used
    source = RdKafkaSource(topics, group, config.kafka_bootstrap, client_id(service),
                           **({"fetch.wait.max.ms": PROMPT_FETCH_WAIT_MS} if prompt else {}))
    dead_letters = producer.sink if producer else KafkaSink(config.kafka_bootstrap,
                                                            client_id(service) + "-dlq")
    return ConsumerLoop(source, handlers, service=service, group=group,
                        dead_letters=dead_letters,
                        before_commit=producer.flush if producer else None,
                        stall_seconds=config.get("kafka_stall_seconds", STALL_SECONDS),
                        **loop_options)

