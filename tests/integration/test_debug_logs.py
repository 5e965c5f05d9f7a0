"""SANDESH_LOG_LEVEL=DEBUG, as an operator would set it to chase a problem,
must not put a contact's personal data into the logs through the libraries
the services use (the formatter masks email addresses, not names)."""
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import requests

from shared.logs import configure_logging

NAME = "Zanele Mbeki-Okonkwo"


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_debug_level_keeps_names_out_of_the_logs(mongo_db, capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level
                                           for n in ("kafka", "pymongo", "urllib3")}
    server = HTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configure_logging("probe", "DEBUG")
        mongo_db["contacts"].insert_one({"name": NAME, "email": "zanele@example.com"})
        assert mongo_db["contacts"].find_one({"name": NAME})["name"] == NAME
        requests.get(f"http://127.0.0.1:{server.server_port}/contacts",
                     params={"q": NAME}, timeout=5)
        logging.getLogger("services.probe").debug("probe done")
    finally:
        server.shutdown()
        server.server_close()
        handlers, level, levels = saved
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(entry["msg"] == "probe done" for entry in lines)  # DEBUG was on
    assert not [entry for entry in lines if "Zanele" in json.dumps(entry, ensure_ascii=False)]
