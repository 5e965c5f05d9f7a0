"""The sender process: health/readiness/metrics on SANDESH_SENDER_PORT, the
send loop in the main thread, and two small consumers that keep the
sender's own copy of campaigns and contact states (from contacts.events and
tracking.events) up to date.

    python -m services.sender.worker
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from services.sender import dkim, handlers, retention
from services.sender.compose import Composer, ComposeSettings
from services.sender.contact_view import ContactView, KafkaGroupProgress
from services.sender.domain_slots import DomainSlots
from services.sender.engine import Engine, EngineSettings, Routes
from services.sender.loop import SendLoop
from services.sender.settings import SETTINGS, check_smtp_relays, check_tracking_url
from services.sender.smtp import SmtpMessenger, parse_relays
from services.sender.store import (CampaignStore, ContactStateStore, DeliveryStore,
                                   HeldJobs, MongoWindowCounter, ParkedJobs, ensure_indexes)
from services.sender.throttle import RateLimiter
from shared import mongo, topics
from shared.config import Config, load_common
from shared.heartbeat import Heartbeat, check_commits_answered
from shared.ids import worker_owner
from shared.kafka.factory import client_id, consumer_loop, event_producer, hot_event_producer
from shared.kafka.rdkafka_impl import DeliveryFailed, RdKafkaSource
from shared.kafka.probe import check_broker
from shared.logs import configure_logging
from shared.tracking_tokens import Keyring
from shared.worker import HelperLoops, dump_stacks_on_sigusr1, serve_health

SERVICE = "sender"
# After a SIGTERM, flushes wait this long past the transactions' cut
# (SANDESH_SENDER_SHUTDOWN_CUT_SECONDS, 20): exited within the 30 s promised.
FLUSH_GRACE_SECONDS = 5.0
log = logging.getLogger(__name__)


def load_config() -> Config:
    config = load_common(SETTINGS)
    check_tracking_url(config)
    check_smtp_relays(config)
    return config


def make_signer(config: Config) -> dkim.Signer:
    key_dir = Path(config.dkim_key_dir)
    try:
        created = dkim.ensure_key(key_dir, config.default_sending_domain, config.dkim_selector)
    except OSError as exc:
        raise ValueError(
            f"no DKIM key for {config.default_sending_domain} in {key_dir}, and none can be "
            f"made there ({exc.strerror}). In Kubernetes the keys come from the sandesh-dkim "
            "Secret (deploy/k8s/README.md).") from None
    if created:
        log.info("generated a DKIM key; publish the TXT record in its .txt file",
                 extra={"key_dir": str(key_dir), "domain": config.default_sending_domain})
    keys, owners = dkim.load_keys(key_dir), dkim.load_owners(key_dir)
    for domain in dkim.unowned_domains(key_dir, keys, owners, config.default_sending_domain):
        log.warning("a DKIM key with no owner in owners.txt signs for no account",
                    extra={"domain": domain})
    return dkim.Signer(keys, owners=owners)


class ComposerCache:
    """One Composer per campaign state (templates compiled once)."""

    def __init__(self, settings: ComposeSettings, signer: dkim.Signer, size: int = 64):
        self.settings, self.signer, self.size = settings, signer, size
        self._lock = threading.Lock()
        self._composers: dict = {}

    def __call__(self, campaign) -> Composer:
        # A test send (kept from tracking) shared the key of a tracking-off
        # launch, which then went out with the test's From name, or as
        # system mail: the key is everything a Composer reads.
        key = campaign.composer_key
        with self._lock:
            composer = self._composers.get(key)
            if composer is None:
                if len(self._composers) >= self.size:
                    self._composers.pop(next(iter(self._composers)))
                composer = self._composers[key] = Composer(campaign, self.settings, self.signer)
            return composer


def build(config: Config, heartbeat: Heartbeat | None = None):
    """Everything the send loop needs, wired from configuration."""
    db = mongo.database(config.mongo_uri, config.sender_db or config.mongo_db_prefix + SERVICE)
    ensure_indexes(db)
    owner = worker_owner()
    routes = Routes.with_prefix(config.sender_topic_prefix)
    relays = parse_relays(config.smtp_relays, config.smtp_host, config.smtp_port)
    messenger = SmtpMessenger(relays, config.smtp_connections, starttls=config.smtp_starttls,
                              username=config.smtp_username, password=config.smtp_password,
                              timeout=config.smtp_timeout,
                              max_unrecorded=config.send_record_every)
    compose_settings = ComposeSettings(Keyring.from_env(config.tracking_keys),
                                       config.public_tracking_url,
                                       config.default_sending_domain, config.bounce_domain)
    # librdkafka: one delivery event per message, and kafka-python spent
    # ~85 us of the sender's GIL on each (librdkafka ~5 us, off the GIL).
    # The loop flushes at the end of every batch, so a longer linger only
    # packs the events into fewer produce requests (~6 a batch, not ~120):
    # a small saving for Kafka (docs/sender-performance-log.md, sixteenth session).
    producer = hot_event_producer(config, SERVICE, **{"linger.ms": 100})
    lease = config.send_claim_lease_seconds
    engine = Engine(
        campaigns=CampaignStore(db), contacts=ContactStateStore(db, config.pii_salt),
        deliveries=DeliveryStore(db, owner, lease), parked=ParkedJobs(db), held=HeldJobs(db),
        limiter=RateLimiter(MongoWindowCounter(db)),
        # A batch gives its slots back when its transactions are over, well
        # within the claims' lease; a sender killed keeps them as long.
        slots=DomainSlots(db, owner, lease, salt=config.pii_salt), messenger=messenger,
        composer_for=ComposerCache(compose_settings, make_signer(config)),
        publisher=producer, contact_view=contact_view(config),
        settings=EngineSettings(max_attempts=config.send_max_attempts,
                                retry_base_seconds=config.send_retry_base_seconds,
                                default_domain_concurrency=config.send_domain_concurrency,
                                batch_deadline_seconds=min(20.0, lease / 2),
                                record_every=config.send_record_every, routes=routes))
    # send.jobs on librdkafka, like the delivery events: one record per message
    source = RdKafkaSource([routes.jobs, routes.retry], config.sender_group,
                           config.kafka_bootstrap, client_id(SERVICE),
                           **{"max.partition.fetch.bytes": 4 * 1024 * 1024})
    loop = SendLoop(source, engine, producer, service=SERVICE, group=config.sender_group,
                    dead_letters=producer.sink, max_records=config.send_batch,
                    on_stop=messenger.release, jobs_topic=routes.jobs, heartbeat=heartbeat)
    loops = state_loops(config, db) if config.sender_state_consumers else []
    return loop, loops, producer, messenger


CONTACT_STATE_GROUP = "{}-contacts"


def state_loops(config: Config, db) -> list:
    """The two loops that keep the sender's copy of campaigns and contact
    states; off (SANDESH_SENDER_STATE_CONSUMERS) where they run elsewhere."""
    prefix = config.sender_topic_prefix
    return [
        consumer_loop(config, SERVICE, f"{config.sender_group}-campaigns",
                      [prefix + t for t in handlers.CAMPAIGNS_TOPICS],
                      handlers.campaign_handlers(CampaignStore(db)),
                      producer=event_producer(config, SERVICE + "-campaigns"),
                      prompt=True),  # a campaign's jobs wait for its launch
        consumer_loop(config, SERVICE, CONTACT_STATE_GROUP.format(config.sender_group),
                      [prefix + t for t in handlers.CONTACTS_TOPICS],
                      handlers.contact_handlers(ContactStateStore(db, config.pii_salt)),
                      producer=event_producer(config, SERVICE + "-contacts"),
                      # A job blocked by a state waits for these commits
                      # (contact_view.py): soon after the work, not a second on.
                      prompt=True, commit_interval=0.25),
    ]


def contact_view(config: Config) -> ContactView:
    """Tells whether the contact-state loops (wherever they run) have applied
    what was published before a blocked job."""
    prefix = config.sender_topic_prefix
    progress = KafkaGroupProgress(config.kafka_bootstrap,
                                  CONTACT_STATE_GROUP.format(config.sender_group),
                                  [prefix + topics.CONTACTS_EVENTS],  # all that lifts a block
                                  client_id(SERVICE + "-contact-view"))
    return ContactView(progress, config.sender_contact_view_patience_seconds)


def main() -> None:
    config = load_config()
    # The connection threads wait on the network and the composer thread
    # holds the GIL: hand it over sooner than every 5 ms, so that a reply
    # that arrived is read promptly (measured: fewer stalls per transaction).
    sys.setswitchinterval(float(os.environ.get("SANDESH_SENDER_SWITCH_INTERVAL", "0.001")))
    configure_logging(SERVICE, config.log_level)
    dump_stacks_on_sigusr1()
    helpers = HelperLoops()
    heartbeat = Heartbeat("the send loop", config.sender_stall_seconds)
    built: list[SendLoop] = []
    serve_health(SERVICE, config, {"mongodb": lambda: mongo.ping(config.mongo_uri),
                                   "kafka": lambda: check_broker(config.kafka_bootstrap),
                                   "helper_loops": helpers.check},
                 port_env="SANDESH_SENDER_PORT",
                 liveness={"send_loop": heartbeat.check, "helper_loops": helpers.check_calls,
                           "commits": lambda: built and check_commits_answered(
                               built[0].source.oldest_unanswered_commit(),
                               config.sender_stall_seconds)})
    loop, loops, producer, messenger = build(config, heartbeat)
    built.append(loop)
    retention.start_in_background(config)

    # A SIGTERM lets the transactions in flight finish, but a relay slow to
    # answer could hold one for ever (each reply within SMTP_TIMEOUT): past
    # this, they are cut, so the sender records, commits and exits within the
    # 30 s it is promised (Kubernetes kills it at 40).
    cut = threading.Timer(config.sender_shutdown_cut_seconds, messenger.cut_transactions)
    cut.daemon = True
    shutdown: dict[str, float] = {}

    def stop(*_args):
        loop.stop()
        helpers.stop()
        if not cut.is_alive() and not cut.finished.is_set():
            cut.start()
        if "deadline" not in shutdown:
            # While Kafka has no leader for a partition, a flush would wait
            # two minutes (message.timeout.ms). Past this, the unflushed
            # batch is not committed: the next owner reads it again and
            # announces the jobs recorded as sent (Engine._announce_again).
            shutdown["deadline"] = (time.monotonic() + config.sender_shutdown_cut_seconds
                                    + FLUSH_GRACE_SECONDS)
            producer.sink.give_up_flushing_at(shutdown["deadline"])

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for state_loop in loops:
        helpers.start(state_loop)
    log.info("sender started", extra={"group": loop.group})
    try:
        loop.run()
    finally:
        stop()
        messenger.close()
        helpers.join(timeout=max(0.5, shutdown["deadline"] - time.monotonic()))
        try:
            producer.flush()  # until the deadline
        except DeliveryFailed:
            log.warning("events left unflushed at shutdown; their jobs are announced again")
        log.info("sender stopped")


if __name__ == "__main__":
    main()
