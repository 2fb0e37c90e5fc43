"""The Fluentd stand-in of docker/local-images (the cluster's `log` service when no registry is
reachable): what the services send with fluent-logger arrives, one JSON line a record, in the file
the cluster suite reads and on stdout, in every mode of the forward protocol."""

import gzip
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest
from fluent import sender

from btc_orders import logs

FOLDER = Path(__file__).resolve().parents[3] / "docker" / "local-images" / "fluentd-standin"
STANDIN = FOLDER / "fluentd_standin.py"
HEALTHCHECK = FOLDER / "fluentd-standin-healthcheck"  # what FLUENTD_HEALTHCHECK runs in the image
WAIT_SECONDS = 10.0

# 2026-05-28T21:46:40Z and a nanosecond part that a float would not keep.
SECONDS = 1_780_004_800
DAY = datetime.fromtimestamp(SECONDS, UTC).strftime("%Y%m%d")


@dataclass
class Standin:
    process: subprocess.Popen[str]
    port: int
    monitor_port: int
    log_dir: Path
    stdout: "queue.Queue[str]" = field(default_factory=queue.Queue)

    def lines(self, name: str, count: int) -> list[dict[str, Any]]:
        """The first `count` records of <log dir>/<name>, waiting (bounded) for them to arrive."""
        path = self.log_dir / name
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if path.exists():
                lines = path.read_text().splitlines()
                if len(lines) >= count:
                    return [json.loads(line) for line in lines]
            time.sleep(0.05)
        raise AssertionError(f"{path} did not get {count} records: {path.read_text() if path.exists() else 'no file'}")

    def stdout_records(self, count: int) -> list[dict[str, Any]]:
        return [json.loads(self.stdout.get(timeout=WAIT_SECONDS)) for _ in range(count)]

    def send(self, *messages: Any) -> list[Any]:
        """Send raw forward-protocol messages on one connection; the answers (acks) read back."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT_SECONDS) as conn:
            for message in messages:
                conn.sendall(msgpack.packb(message))
            expected = sum(1 for m in messages if isinstance(m[-1], dict) and "chunk" in m[-1])
            answers = msgpack.Unpacker(raw=False)
            got: list[Any] = []
            while len(got) < expected:
                data = conn.recv(65536)
                if not data:
                    break
                answers.feed(data)
                got.extend(answers)
            return got


def start(log_dir: Path) -> Standin:
    process = subprocess.Popen(
        [
            sys.executable,
            str(STANDIN),
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--monitor-port",
            "0",
            "--log-dir",
            str(log_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None and process.stdout is not None
    banner = process.stderr.readline()  # "... forward protocol on 127.0.0.1:P, monitor on 127.0.0.1:M, ..."
    assert "forward protocol on" in banner, banner
    port = int(banner.split("forward protocol on ")[1].split(",")[0].rsplit(":", 1)[1])
    monitor_port = int(banner.split("monitor on ")[1].split(",")[0].rsplit(":", 1)[1])
    standin = Standin(process, port, monitor_port, log_dir)
    stdout = process.stdout

    def pump() -> None:
        for line in stdout:
            standin.stdout.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return standin


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[Standin]:
    running = start(tmp_path)
    yield running
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(timeout=WAIT_SECONDS)


def event_time(seconds: int, nanoseconds: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, seconds.to_bytes(4, "big") + nanoseconds.to_bytes(4, "big"))


def test_a_fluent_logger_record_is_one_json_line_in_the_services_file_and_on_stdout(standin: Standin) -> None:
    client = sender.FluentSender("btc.create_buy_order", host="127.0.0.1", port=standin.port, nanosecond_precision=True)
    try:
        assert client.emit_with_time("order_created", SECONDS, {"order_id": "o-1", "amount": "12.50"})
    finally:
        client.close()

    [record] = standin.lines(f"create_buy_order.{DAY}.log", 1)
    assert record == {
        "order_id": "o-1",
        "amount": "12.50",
        "tag": "btc.create_buy_order.order_created",
        "logged_at": "2026-05-28T21:46:40.000000000Z",
    }
    assert standin.stdout_records(1) == [record]


def test_the_services_own_handler_delivers_its_events_with_the_request_id(standin: Standin) -> None:
    handler = logs.FluentdHandler("read_model_sync", "127.0.0.1", standin.port)
    logger = logging.getLogger("test_fluentd_standin")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    token = logs.request_id_var.set("req-42")
    try:
        logs.event(logger, "order_projected", order_id="o-7")
    finally:
        logs.request_id_var.reset(token)
        logger.removeHandler(handler)
        handler.close()  # the asynchronous sender sends what it holds, then stops

    day = datetime.now(UTC).strftime("%Y%m%d")
    [record] = standin.lines(f"read_model_sync.{day}.log", 1)
    assert record["tag"] == "btc.read_model_sync.order_projected"
    assert record["event"] == "order_projected"
    assert record["request_id"] == "req-42"
    assert record["order_id"] == "o-7"
    assert record["logged_at"].endswith("Z")


def test_every_mode_of_the_forward_protocol_is_written_in_order_and_acked_when_asked(standin: Standin) -> None:
    def packed(*entries: tuple[Any, dict[str, Any]]) -> bytes:
        return b"".join(msgpack.packb([t, r]) for t, r in entries)

    acks = standin.send(
        ["btc.outbox_relay.a", SECONDS, {"n": 1}],  # Message
        ["btc.outbox_relay.b", event_time(SECONDS, 5), {"n": 2}, {"chunk": "c-message"}],  # Message + option
        ["btc.outbox_relay.c", [[SECONDS, {"n": 3}], [event_time(SECONDS, 123_456_789), {"n": 4}]], {"chunk": "c-fwd"}],
        ["btc.outbox_relay.d", packed((SECONDS, {"n": 5}), (SECONDS, {"n": 6})), {"chunk": "c-packed", "size": 2}],
        # CompressedPackedForward: concatenated gzip members, as Fluentd's out_forward sends them.
        [
            "btc.outbox_relay.e",
            gzip.compress(packed((SECONDS, {"n": 7}))) + gzip.compress(packed((SECONDS, {"n": 8}))),
            {"chunk": "c-gzip", "compressed": "gzip", "size": 2},
        ],
    )

    assert acks == [{"ack": "c-message"}, {"ack": "c-fwd"}, {"ack": "c-packed"}, {"ack": "c-gzip"}]
    records = standin.lines(f"outbox_relay.{DAY}.log", 8)
    assert [r["n"] for r in records] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r["tag"][-1] for r in records] == ["a", "b", "c", "c", "d", "d", "e", "e"]
    assert records[1]["logged_at"] == "2026-05-28T21:46:40.000000005Z"
    assert records[3]["logged_at"] == "2026-05-28T21:46:40.123456789Z"


def test_a_tag_outside_btc_is_shown_on_stdout_and_gets_no_file(standin: Standin) -> None:
    standin.send(["other.thing", SECONDS, {"x": 1}], ["btc.fetch_buy_orders.seen", SECONDS, {"x": 2}])

    assert [r["tag"] for r in standin.stdout_records(2)] == ["other.thing", "btc.fetch_buy_orders.seen"]
    assert sorted(os.listdir(standin.log_dir)) == [f"fetch_buy_orders.{DAY}.log"]


def test_a_bad_message_closes_only_its_connection(standin: Standin) -> None:
    with socket.create_connection(("127.0.0.1", standin.port), timeout=WAIT_SECONDS) as conn:
        conn.sendall(msgpack.packb(["btc.x", {"not": "a time"}, {"n": 1}]))
        assert conn.recv(1) == b""  # closed by the stand-in

    standin.send(["btc.btc_price.ok", SECONDS, {"n": 2}])
    assert [r["n"] for r in standin.lines(f"btc_price.{DAY}.log", 1)] == [2]


def test_the_monitor_port_and_the_healthcheck_answer_like_monitor_agent(standin: Standin) -> None:
    url = f"http://127.0.0.1:{standin.monitor_port}/api/plugins.json"
    with urllib.request.urlopen(url, timeout=WAIT_SECONDS) as response:
        assert response.status == 200
        assert {p["type"] for p in json.load(response)["plugins"]} >= {"forward", "file", "stdout"}

    def probe(port: int) -> int:
        command = ["bash", str(HEALTHCHECK), str(port)]
        return subprocess.run(command, capture_output=True, timeout=WAIT_SECONDS).returncode

    assert probe(standin.monitor_port) == 0
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        free_port = unused.getsockname()[1]
    assert probe(free_port) == 1
    assert probe(standin.port) == 1  # something listens there, but it is not the monitor


def test_sigterm_stops_it_cleanly_with_a_client_still_connected(standin: Standin) -> None:
    client = sender.FluentSender("btc.migration", host="127.0.0.1", port=standin.port)
    try:
        assert client.emit_with_time("applied", SECONDS, {"n": 1})
        standin.lines(f"migration.{DAY}.log", 1)

        standin.process.send_signal(signal.SIGTERM)
        assert standin.process.wait(timeout=WAIT_SECONDS) == 0
    finally:
        client.close()


def test_an_unwritable_log_dir_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = subprocess.run(
        [sys.executable, str(STANDIN), "--port", "0", "--monitor-port", "0", "--log-dir", str(missing)],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"fluentd-standin: cannot write to {missing}"
