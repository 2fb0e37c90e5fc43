"""A real HTTP server on loopback that answers like Coinbase's spot price API.

Tests point `COINBASE_API_URL` at it and switch it between healthy answers and
every kind of fault. Also runnable by hand for an offline demo:
`python codebase/tests/support/fake_coinbase.py --port 8780`.

In-process tests call `set()` and `reset()`; a test that runs it as a separate process
(the cluster suite runs it in a container) uses the same controls over HTTP, under a
path Coinbase does not have:

    GET    /_fake/state    {"mode", "rates", "delay_seconds", "calls"}
    PUT    /_fake/state    any of {"mode": "healthy"|FAULT, "rates": {"USD": "97012.34"}, "delay_seconds": 0.5}
    DELETE /_fake/state    back to the default rates, healthy, no delay, no calls counted
"""

import argparse
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTHY = "healthy"
# Answers that are not the spot document: each must be a clean 503 `rate_unavailable`, never a 500.
# `parser_bomb`: a 200 whose JSON nests 100,000 levels deep (a recursive parser raises RecursionError);
# `huge_body`: a 200 of 8 MiB of valid JSON; `not_utf8`: a 200 whose bytes are not UTF-8;
# `wrong_types`: the amount as a JSON number (a float to a naive parser), not a string.
BODY_FAULTS = ("parser_bomb", "huge_body", "not_utf8", "wrong_types")
FAULTS = (
    "timeout",
    "error500",
    "rate_limited",
    "html",
    "missing_field",
    "wrong_currency",
    "zero",
    "negative",
    *BODY_FAULTS,
)
PARSER_BOMB_DEPTH = 100_000
HUGE_BODY_BYTES = 8 * 1024 * 1024

DEFAULT_RATES = {"EUR": "91234.56", "GBP": "78901.23", "USD": "97012.34"}
CONTROL_PATH = "/_fake/state"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client killed mid-request (the chaos runs kill btc_price) resets its connection:
        # expected, not worth a traceback.
        pass


class FakeCoinbase:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.rates = dict(DEFAULT_RATES)
        self.mode = HEALTHY
        self.delay_seconds = 0.0
        self.delays: dict[str, float] = {}  # by currency, instead of `delay_seconds`
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = _Server((host, port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> "FakeCoinbase":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set(self, mode: str = HEALTHY, **rates: str) -> None:
        self.mode = mode
        self.rates.update(rates)

    def reset(self) -> None:
        self.rates = dict(DEFAULT_RATES)
        self.mode = HEALTHY
        self.delay_seconds = 0.0
        self.delays = {}
        with self._lock:
            self.calls.clear()

    def state(self) -> dict[str, object]:
        with self._lock:
            calls = dict(self.calls)
        return {"mode": self.mode, "rates": dict(self.rates), "delay_seconds": self.delay_seconds, "calls": calls}

    def control(self, changes: object) -> str | None:
        """Apply a `PUT /_fake/state` body; the reason it is refused, or None once applied."""
        if not isinstance(changes, dict) or not set(changes) <= {"mode", "rates", "delay_seconds"}:
            return "the body must be an object with any of: mode, rates, delay_seconds"
        mode = changes.get("mode", self.mode)
        rates = changes.get("rates", {})
        delay = changes.get("delay_seconds", self.delay_seconds)
        if mode != HEALTHY and mode not in FAULTS:
            return f"mode must be {HEALTHY!r} or one of {', '.join(FAULTS)}"
        if not isinstance(rates, dict) or not all(isinstance(v, str) for v in rates.values()):
            return 'rates must map a currency to the decimal string Coinbase would answer, e.g. {"USD": "97012.34"}'
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            return "delay_seconds must be a number >= 0"
        self.set(mode, **rates)
        self.delay_seconds = float(delay)
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.path == CONTROL_PATH:
                    return self._json(200, fake.state())
                parts = self.path.strip("/").split("/")
                if len(parts) != 4 or parts[:2] != ["v2", "prices"] or parts[3] != "spot":
                    return self._json(404, {"errors": [{"id": "not_found", "message": "Not found"}]})
                base, _, currency = parts[2].partition("-")
                with fake._lock:
                    fake.calls[currency] += 1
                mode = fake.mode
                delay = fake.delays.get(currency, fake.delay_seconds)
                if delay:
                    time.sleep(delay)
                if mode == "timeout":
                    time.sleep(10)
                    return self._json(200, {"data": {"amount": "1.00", "base": base, "currency": currency}})
                if mode == "error500":
                    return self._json(500, {"errors": [{"id": "internal_server_error", "message": "boom"}]})
                if mode == "rate_limited":
                    return self._json(429, {"errors": [{"id": "rate_limit_exceeded", "message": "Too many requests"}]})
                if mode == "html":
                    return self._send(200, b"<html><body>Maintenance</body></html>", "text/html")
                if mode == "missing_field":
                    return self._json(200, {"data": {"base": base, "currency": currency}})
                if mode == "wrong_currency":
                    return self._json(200, {"data": {"amount": "1.00", "base": base, "currency": "JPY"}})
                if mode == "zero":
                    return self._json(200, {"data": {"amount": "0.00", "base": base, "currency": currency}})
                if mode == "negative":
                    return self._json(200, {"data": {"amount": "-5.00", "base": base, "currency": currency}})
                if mode == "parser_bomb":
                    bomb = b'{"data": ' + b"[" * PARSER_BOMB_DEPTH + b"]" * PARSER_BOMB_DEPTH + b"}"
                    return self._send(200, bomb, "application/json")
                if mode == "huge_body":
                    padding = "x" * HUGE_BODY_BYTES
                    document = {"data": {"amount": "1.00", "base": base, "currency": currency}, "padding": padding}
                    return self._json(200, document)
                if mode == "not_utf8":
                    return self._send(
                        200,
                        b'{"data": {"amount": "1.00", "base": "BTC\xff\xfe", "currency": "\xc3("}}',
                        "application/json",
                    )
                if mode == "wrong_types":
                    return self._json(200, {"data": {"amount": 97012.34, "base": base, "currency": currency}})
                if currency not in fake.rates:
                    return self._json(400, {"errors": [{"id": "invalid_request", "message": "Invalid currency"}]})
                return self._json(200, {"data": {"amount": fake.rates[currency], "base": base, "currency": currency}})

            def do_PUT(self) -> None:
                if self.path != CONTROL_PATH:
                    return self._json(404, {"errors": [{"id": "not_found", "message": "Not found"}]})
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    changes = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    changes = None
                refused = fake.control(changes)
                if refused:
                    return self._json(400, {"errors": [{"id": "invalid_request", "message": refused}]})
                return self._json(200, fake.state())

            def do_DELETE(self) -> None:
                if self.path != CONTROL_PATH:
                    return self._json(404, {"errors": [{"id": "not_found", "message": "Not found"}]})
                fake.reset()
                return self._json(200, fake.state())

            def _json(self, status: int, body: object) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8780)
    args = parser.parse_args()
    server = FakeCoinbase(args.host, args.port).start()
    print(f"fake Coinbase listening on {server.url}", flush=True)
    threading.Event().wait()
