"""A real consumer process for the integration tests: runs the shared loop
over one topic and appends each probe's number to a file, until SIGTERM."""
import sys

from shared.kafka.consumer import ConsumerLoop, run_until_signalled
from shared.kafka.kafka_impl import KafkaSink
from shared.kafka.rdkafka_impl import RdKafkaSource  # what every loop reads with


def main(bootstrap: str, topic: str, group: str, out_path: str) -> None:
    out = open(out_path, "a", buffering=1)

    def handle(event):
        out.write(f"{event.data['n']}\n")

    source = RdKafkaSource([topic], group, bootstrap, "probe-consumer")
    loop = ConsumerLoop(source, {"platform.probe": handle}, service="probe", group=group,
                        dead_letters=KafkaSink(bootstrap, "probe-dlq"),
                        commit_interval=3600)  # only shutdown commits: proves the drain
    run_until_signalled(loop)


if __name__ == "__main__":
    main(*sys.argv[1:])
