"""The sender process: health/readiness/metrics on SANDESH_SENDER_PORT, and
the send loop until SIGTERM."""
from services.sender.handlers import GROUP, TOPICS, build_handlers
from shared.config import load_common
from shared.kafka.factory import consumer_loop
from shared.runtime import Runtime
from shared.worker import run_worker

SERVICE = "sender"


def main() -> None:
    config = load_common()
    runtime = Runtime(SERVICE, config)
    run_worker(SERVICE, config,
               lambda: consumer_loop(config, SERVICE, GROUP, TOPICS, build_handlers(runtime),
                                     producer=runtime.producer()),
               runtime.readiness(), health_port_env="SANDESH_SENDER_PORT")


if __name__ == "__main__":
    main()
