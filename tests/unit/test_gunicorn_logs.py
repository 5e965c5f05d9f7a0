"""gunicorn's own error log (shared/gunicorn_conf.py) keeps recipients'
addresses and request lines out: its lines bypass the app's formatter."""
import logging

from gunicorn.config import Config

from shared import gunicorn_conf


def _logger(caplog):
    config = Config()
    config.set("loglevel", "warning")
    logger = gunicorn_conf._Logger(config)
    logger.error_log.propagate = True
    caplog.set_level(logging.WARNING, logger="gunicorn.error")
    return logger


def test_an_invalid_request_is_logged_without_the_client_or_the_request_line(caplog):
    logger = _logger(caplog)
    logger.warning("Invalid request from ip=203.0.113.7: Invalid HTTP request line: "
                   "'GET /t/c/abc?u=priya@example.com HTTP/1.1 junk'")
    [record] = caplog.records
    assert record.getMessage() == "Invalid request: Invalid HTTP request line"


def test_an_error_handling_a_request_is_logged_without_its_query_string(caplog):
    logger = _logger(caplog)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("Error handling request %s %s", "GET", "/api/v1/contacts?email=a@b.c")
    [record] = caplog.records
    assert record.getMessage() == "Error handling request GET /api/v1/contacts"


def test_the_services_use_that_logger():
    assert gunicorn_conf.logger_class is gunicorn_conf._Logger
