"""A real HTTP server on loopback that answers like Coinbase's spot price API.

Tests point `COINBASE_API_URL` at it and switch it between healthy answers and
every kind of fault. Also runnable by hand for an offline demo:
`python codebase/tests/support/fake_coinbase.py --port 8780`.
"""

import argparse
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTHY = "healthy"
FAULTS = ("timeout", "error500", "rate_limited", "html", "missing_field", "wrong_currency", "zero", "negative")

DEFAULT_RATES = {"EUR": "91234.56", "GBP": "78901.23", "USD": "97012.34"}


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
        return f"http://{host}:{port}"

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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
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
                if mode == "parser_bomb":  # a 200 whose JSON nests deeper than any parser's recursion
                    return self._send(200, b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json")
                if mode == "missing_field":
                    return self._json(200, {"data": {"base": base, "currency": currency}})
                if mode == "wrong_currency":
                    return self._json(200, {"data": {"amount": "1.00", "base": base, "currency": "JPY"}})
                if mode == "zero":
                    return self._json(200, {"data": {"amount": "0.00", "base": base, "currency": currency}})
                if mode == "negative":
                    return self._json(200, {"data": {"amount": "-5.00", "base": base, "currency": currency}})
                if currency not in fake.rates:
                    return self._json(400, {"errors": [{"id": "invalid_request", "message": "Invalid currency"}]})
                return self._json(200, {"data": {"amount": fake.rates[currency], "base": base, "currency": currency}})

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
    parser.add_argument("--port", type=int, default=8780)
    args = parser.parse_args()
    server = FakeCoinbase(port=args.port).start()
    print(f"fake Coinbase listening on {server.url}", flush=True)
    threading.Event().wait()
