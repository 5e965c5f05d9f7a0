"""make_app(): one call that turns a service's blueprints into its app."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

from flask import Flask, current_app

from shared.config import Setting, load_common
from shared.http.app import create_service_app
from shared.logs import configure_logging
from shared.runtime import Runtime


def make_app(service: str, title: str, blueprints: Iterable, *,
             settings: Iterable[Setting] = (), environ: Mapping[str, str] | None = None,
             kafka: bool = True, public_prefixes: Iterable[str] = (),
             on_start: Callable[[Runtime], None] | None = None) -> Flask:
    config = load_common(list(settings), environ)
    configure_logging(service, config.log_level)
    runtime = Runtime(service, config)
    app, api = create_service_app(service, config, title=title,
                                  readiness=runtime.readiness(kafka=kafka),
                                  public_prefixes=public_prefixes)
    app.extensions["runtime"] = runtime
    for blueprint in blueprints:
        api.register_blueprint(blueprint)
    if on_start:
        on_start(runtime)
    return app


def runtime() -> Runtime:
    """The current app's Runtime (inside a request)."""
    return current_app.extensions["runtime"]
