"""The privacy worker: consumes its topics (see handlers.py) until SIGTERM."""
from services.privacy.handlers import GROUP, TOPICS, build_handlers
from shared.config import load_common
from shared.kafka.factory import consumer_loop
from shared.runtime import Runtime
from shared.worker import run_worker

SERVICE = "privacy"


def main() -> None:
    config = load_common()
    runtime = Runtime(SERVICE, config)
    run_worker(SERVICE, config,
               lambda: consumer_loop(config, SERVICE, GROUP, TOPICS, build_handlers(runtime),
                                     producer=runtime.producer()),
               runtime.readiness())


if __name__ == "__main__":
    main()
