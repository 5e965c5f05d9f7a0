"""One KafkaSink shared by request threads (as in a gunicorn worker): each
thread's flush answers for its own sends, never fails on another thread's
send still in flight."""
import threading

from shared.kafka.kafka_impl import KafkaSink


def test_concurrent_sends_and_flushes_on_one_sink(kafka_bootstrap, make_topic):
    topic = make_topic("sink-threads", partitions=3)
    sink = KafkaSink(kafka_bootstrap, "test-sink-threads")
    errors = []

    def request(n):
        try:
            for i in range(40):  # one event and one flush per "request"
                sink.send(topic, f"k{n}-{i}".encode(), b"{}")
                sink.flush()
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=request, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()
    assert errors == []
