"""make run's Kafka storage format."""
import uuid

from devstack import run


def test_a_kafka_cluster_id_never_starts_with_a_dash(monkeypatch):
    """The storage tool takes an id starting with "-" for an option and
    refuses to format (a fresh checkout's CI failed so, once in 64)."""
    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64 "-A..."
    plain = uuid.UUID(bytes=bytes(range(16)))
    made = iter([dash_first, plain])
    monkeypatch.setattr(run.uuid, "uuid4", lambda: next(made))

    cluster_id = run._kafka_cluster_id()

    assert cluster_id == "AAECAwQFBgcICQoLDA0ODw"
    assert len(cluster_id) == 22
