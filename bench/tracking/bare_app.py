"""The ceiling: a bare WSGI app that only answers the tracking pixel's GIF."""
from services.tracking.public import GIF, GIF_HEADERS


def app(environ, start_response):
    start_response("200 OK", list(GIF_HEADERS))
    return [GIF]
