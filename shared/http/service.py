"""make_app(): one call that turns a service's blueprints into its app."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

from flask import Flask, current_app

from shared.config import Setting, load_common
from shared.http.app import create_service_app
from shared.http.startup import StartupWork
from shared.logs import configure_logging
from shared.runtime import Runtime

STARTUP_WAIT_SECONDS = 5.0


def make_app(service: str, title: str, blueprints: Iterable, *,
             settings: Iterable[Setting] = (), environ: Mapping[str, str] | None = None,
             kafka: bool = True, public_prefixes: Iterable[str] = (),
             on_start: Callable[[Runtime], None] | None = None) -> Flask:
    config = load_common(list(settings), environ)
    configure_logging(service, config.log_level)
    runtime = Runtime(service, config)
    readiness = runtime.readiness(kafka=kafka)
    startup = StartupWork(lambda: on_start(runtime)) if on_start else None
    if startup is not None:
        readiness["startup"] = startup.check
        # Normally done in well under a second: wait, so the first requests
        # find the unique indexes. A database that is down does not hold the
        # process up: it starts and stays not ready until the work is done.
        startup.wait(STARTUP_WAIT_SECONDS)
    app, api = create_service_app(service, config, title=title, readiness=readiness,
                                  public_prefixes=public_prefixes)
    app.extensions["runtime"] = runtime
    app.extensions["startup"] = startup
    for blueprint in blueprints:
        api.register_blueprint(blueprint)
    return app


def runtime() -> Runtime:
    """The current app's Runtime (inside a request)."""
    return current_app.extensions["runtime"]
