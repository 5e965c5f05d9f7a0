"""Helpers for the tracking end-to-end tests: the real stack, a fresh account."""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import requests


def new_account(gateway: str, operator_token: str, name: str) -> tuple[str, str]:
    response = requests.post(f"{gateway}/api/v1/accounts", json={"name": name},
                             headers={"Authorization": f"Bearer {operator_token}"}, timeout=20)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["account"]["id"], body["api_key"]["key"]


def poll(fetch, done, timeout: float = 60.0, every: float = 0.5):
    """fetch() until done(value) or the deadline; returns the last value."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(every)
        value = fetch()
    return value


def operator_token(stack_env) -> str:
    path = Path(stack_env.get("SANDESH_RUN_DIR", "run")) / "operator-token"
    if not path.exists():
        path = Path(__file__).resolve().parents[2] / "run" / "operator-token"
    return stack_env.get("SANDESH_OPERATOR_TOKEN") or path.read_text().strip()


# -- a real campaign, as the sink received it ---------------------------------
def sent_campaign(gw, stack_env, count: int, **campaign) -> tuple[str, str, dict]:
    """A new list of `count` fresh addresses, a campaign to it sent and done:
    (list id, campaign id, {address: the message the sink received})."""
    from tests.e2e.test_send_path import addresses, import_contacts, make_list
    marker = uuid.uuid4().hex[:10]
    people = addresses(marker, count)
    list_id = make_list(gw, f"tracking {marker}")
    import_contacts(gw, list_id, [(address, "Reader") for address in people])
    campaign_id = send_and_wait(gw, stack_env, list_id, **campaign)
    inbox = campaign_messages(stack_env, marker, campaign_id)
    assert set(inbox) == set(people) and all(len(c) == 1 for c in inbox.values()), inbox.keys()
    return list_id, campaign_id, {address: copies[0] for address, copies in inbox.items()}


def send_and_wait(gw, stack_env, list_id: str, **campaign) -> str:
    from tests.e2e.test_send_path import make_campaign, wait_for
    campaign_id = make_campaign(gw, stack_env, [list_id], **campaign)
    gw.call("POST", f"/campaigns/{campaign_id}/send")
    wait_for(gw, campaign_id, timeout=300)
    return campaign_id


def campaign_messages(stack_env, marker: str, campaign_id: str) -> dict[str, list]:
    """The sink's messages of one campaign (its Feedback-ID), by recipient."""
    from tests.e2e.test_send_path import received
    found: dict[str, list] = {}
    for message in received(stack_env, marker):
        if (message["Feedback-ID"] or "").startswith(campaign_id + ":"):
            found.setdefault(message["X-Sink-Rcpt-To"].strip(), []).append(message)
    return found


def one_click_url(message) -> str:
    """The http(s) URL of List-Unsubscribe (the other one is mailto:)."""
    [url] = re.findall(r"<(https?://[^>]+)>", message["List-Unsubscribe"])
    return url


def tracking_urls(message, path: str) -> list[str]:
    """The message's tracking URLs under `path` ("/t/o/", "/t/c/"), in order."""
    html = message.get_body(("html",)).get_content()
    return re.findall(r'(https?://[^"\s<>]+' + re.escape(path) + r'[A-Za-z0-9_-]+)', html)


# -- redelivery ---------------------------------------------------------------
class Replay:
    """Every record put on some topics from now on, read back raw, and
    published again byte for byte (key, value and headers): a redelivery as
    a consumer would see it after a crash or a rebalance."""

    def __init__(self, bootstrap: str, topic_names: list[str]):
        from tests.kafka_reader import TopicReader
        self.bootstrap = bootstrap
        self.reader = TopicReader(bootstrap, *topic_names, since="now")

    def records(self, keep) -> list:
        """The records since construction whose decoded JSON passes keep()."""
        self.reader.read()
        return [r for r in self.reader.records if keep(json.loads(r.value))]

    def publish_again(self, records) -> dict:
        """Publish the records again; returns {(topic, partition): last offset}."""
        from kafka import KafkaProducer
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            futures = [producer.send(r.topic, key=r.key, value=r.value, headers=r.headers,
                                     partition=r.partition) for r in records]
            producer.flush(timeout=60)
            last: dict = {}
            for future in futures:
                meta = future.get(timeout=0)
                key = (meta.topic, meta.partition)
                last[key] = max(last.get(key, -1), meta.offset)
            return last
        finally:
            producer.close(timeout=10)

    def wait_consumed(self, group: str, offsets: dict, timeout: float = 300) -> None:
        """Until `group` has committed past every offset (it commits only
        after the work is done)."""
        from kafka import KafkaAdminClient, TopicPartition
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            def behind():
                committed = admin.list_group_offsets({group: None})[group]
                return {key: at for key, at in offsets.items()
                        if (c := committed.get(TopicPartition(*key))) is None or c.offset <= at}
            left = poll(behind, lambda rest: not rest, timeout=timeout, every=1.0)
            assert not left, f"group {group} did not consume {left} in {timeout}s"
        finally:
            admin.close()

    def close(self) -> None:
        self.reader.close()
