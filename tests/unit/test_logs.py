import json
import logging

from shared.logs import JsonFormatter
from shared.tracing import trace


def test_json_line_with_trace_id_and_masked_email():
    record = logging.LogRecord("x", logging.INFO, __file__, 1,
                               "sent to %s", ("Jane.Doe+news@example.co.uk",), None)
    record.campaign_id = "c1"
    with trace("t-1"):
        line = JsonFormatter("svc").format(record)
    entry = json.loads(line)
    assert entry["msg"] == "sent to <email>"
    assert entry["trace_id"] == "t-1" and entry["service"] == "svc"
    assert entry["campaign_id"] == "c1"
    assert "example.co.uk" not in line
