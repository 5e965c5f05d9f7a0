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


def test_a_shared_rdkafka_sink_reports_each_failure_to_the_thread_that_sent_it(
        kafka_bootstrap, make_topic, unique):
    """The contacts worker's import thread and consumer loop share one
    librdkafka sink: a flush in one thread must not take (and hide) the
    failure of a message the other thread sent."""
    from shared.kafka.rdkafka_impl import DeliveryFailed, RdKafkaSink

    good_topic = make_topic("rdkafka-threads")
    sink = RdKafkaSink(kafka_bootstrap, "test-rdkafka-threads",
                       **{"message.timeout.ms": 3000, "topic.metadata.propagation.max.ms": 1000})
    outcomes: dict[str, str] = {}
    bad_sent, good_done = threading.Event(), threading.Event()

    def thread(name, work):
        def run():
            try:
                work()
                outcomes[name] = "ok"
            except DeliveryFailed as exc:
                outcomes[name] = f"failed: {exc}"
        started = threading.Thread(target=run)
        started.start()
        return started

    def bad():  # a message that cannot be delivered; flushed after the other thread's flush
        sink.send(f"no-such-topic-{unique}", b"k", b"{}")
        bad_sent.set()
        good_done.wait(60)
        sink.flush()

    def good():  # its flush waits for every message, the failing one too
        bad_sent.wait(10)
        sink.send(good_topic, b"k", b"{}")
        sink.flush()

    bad_thread = thread("bad", bad)
    thread("good", good).join(60)
    good_done.set()
    bad_thread.join(60)
    sink.close()
    assert outcomes == {"good": "ok", "bad": outcomes["bad"]}
    assert outcomes["bad"].startswith("failed: 1 messages failed")
