"""What one service process holds: its config, its own MongoDB database and
its Kafka producer, each created on first use (never at import, and after
gunicorn has forked)."""
from __future__ import annotations

import threading
from functools import cached_property
from typing import Callable

from pymongo.database import Database

from shared import mongo
from shared.config import Config
from shared.kafka.factory import event_producer
from shared.kafka.probe import check_broker
from shared.kafka.producer import EventProducer


class Runtime:
    def __init__(self, service: str, config: Config,
                 make_producer: Callable[[Config, str], EventProducer] = event_producer):
        self.service = service
        self.config = config
        self._make_producer = make_producer
        self._lock = threading.Lock()
        self._producer: EventProducer | None = None

    @cached_property
    def db(self) -> Database:
        return mongo.database(self.config.mongo_uri, self.config.mongo_db_prefix + self.service)

    def producer(self) -> EventProducer:
        with self._lock:
            if self._producer is None:
                self._producer = self._make_producer(self.config, self.service)
            return self._producer

    def check_mongo(self) -> None:
        mongo.ping(self.config.mongo_uri)

    def check_kafka(self) -> None:
        check_broker(self.config.kafka_bootstrap)

    def readiness(self, kafka: bool = True) -> dict:
        checks = {"mongodb": self.check_mongo}
        if kafka:
            checks["kafka"] = self.check_kafka
        return checks
