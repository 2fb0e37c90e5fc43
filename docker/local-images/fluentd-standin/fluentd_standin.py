#!/usr/bin/env python3
"""A stand-in for Fluentd (no Debian release ships Fluentd): the parts the cluster uses.

It is NOT Fluentd and reads no fluent.conf. It does, with fixed settings, what
docker/fluentd/fluent.conf asks of the real one:

- receives Fluentd's forward protocol on TCP (--port, 24224): Message, Forward,
  PackedForward and CompressedPackedForward (gzip) modes, EventTime or integer times,
  and answers {"ack": <chunk>} when a message carries the `chunk` option;
- writes every record as one JSON line (its fields, then `tag` and `logged_at`, the
  event time in RFC 3339 UTC with nanoseconds) to stdout and, for a tag btc.<name>[...],
  appends it to <log dir>/<name>.<YYYYMMDD of the event time, UTC>.log, written before the
  ack and before the next message is read (no buffering: a reader sees it at once);
- answers GET /api/plugins.json on --monitor-port (24220, 127.0.0.1) with 200, as
  monitor_agent does, for the healthcheck (fluentd-standin-healthcheck, next to this file);
- stops cleanly on SIGTERM or SIGINT (closes its sockets, exits 0).

Not reproduced: buffering and retries, the shared-key handshake, TLS, the UDP heartbeat,
other plugins and formats. Runs with msgpack and the standard library only (Python 3.11+).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack

PLUGINS = {
    "plugins": [
        {"plugin_id": "in_forward", "plugin_category": "input", "type": "forward", "output_plugin": False},
        {"plugin_id": "in_monitor_agent", "plugin_category": "input", "type": "monitor_agent", "output_plugin": False},
        {"plugin_id": "out_stdout", "plugin_category": "output", "type": "stdout", "output_plugin": True},
        {"plugin_id": "out_file", "plugin_category": "output", "type": "file", "output_plugin": True},
    ]
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class EventTime:
    """Fluentd's EventTime (msgpack extension type 0): seconds and nanoseconds."""

    seconds: int
    nanoseconds: int


class ProtocolError(ValueError):
    """A message that is not one of the forward protocol's modes."""


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:
        return EventTime(int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big"))
    return msgpack.ExtType(code, data)


def unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, ext_hook=_ext_hook, strict_map_key=False)


def _split_time(value: Any) -> tuple[int, int]:
    if isinstance(value, EventTime):
        return value.seconds, value.nanoseconds
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"an event time must be an integer or an EventTime, not {value!r}")
    seconds = int(value)
    return seconds, round((value - seconds) * 1_000_000_000)


def _packed_entries(data: bytes | str, option: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    raw = data.encode() if isinstance(data, str) else data
    if option.get("compressed") == "gzip":
        raw = gzip.decompress(raw)  # concatenated gzip members too
    stream = unpacker()
    stream.feed(raw)
    for entry in stream:
        if not isinstance(entry, list) or len(entry) != 2:
            raise ProtocolError(f"a packed entry must be [time, record], not {entry!r}")
        yield entry[0], entry[1]


def decode(message: Any) -> tuple[str, list[tuple[Any, Any]], dict[str, Any]]:
    """(tag, [(time, record)], option) of one forward-protocol message, whatever its mode."""
    if not isinstance(message, list) or len(message) < 2 or not isinstance(message[0], str):
        raise ProtocolError(f"a message must be [tag, ...], not {message!r}")
    tag, body = message[0], message[1]
    if isinstance(body, list):  # Forward mode: [tag, [[time, record], ...], option?]
        option = message[2] if len(message) > 2 else {}
        entries = [(e[0], e[1]) for e in body if isinstance(e, list) and len(e) == 2]
        if len(entries) != len(body):
            raise ProtocolError("every entry of a Forward message must be [time, record]")
    elif isinstance(body, bytes | str):  # (Compressed)PackedForward: [tag, bin, option?]
        option = message[2] if len(message) > 2 else {}
        if not isinstance(option, dict):
            raise ProtocolError(f"the option must be a map, not {option!r}")
        entries = list(_packed_entries(body, option))
    else:  # Message mode: [tag, time, record, option?]
        if len(message) < 3:
            raise ProtocolError(f"a Message must be [tag, time, record], not {message!r}")
        option = message[3] if len(message) > 3 else {}
        entries = [(body, message[2])]
    if not isinstance(option, dict):
        raise ProtocolError(f"the option must be a map, not {option!r}")
    return tag, entries, option


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, EventTime):
        return value.seconds + value.nanoseconds / 1_000_000_000
    return str(value)


def render(tag: str, time: Any, record: Any) -> tuple[str, str]:
    """The JSON line of one record (its fields, tag, logged_at) and its day, YYYYMMDD in UTC."""
    if not isinstance(record, dict):
        raise ProtocolError(f"a record must be a map, not {record!r}")
    seconds, nanoseconds = _split_time(time)
    moment = datetime.fromtimestamp(seconds, UTC)
    document = {str(k) if not isinstance(k, str) else k: v for k, v in record.items()}
    document["tag"] = tag
    document["logged_at"] = f"{moment:%Y-%m-%dT%H:%M:%S}.{nanoseconds:09d}Z"
    line = json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=_jsonable)
    return line, f"{moment:%Y%m%d}"


def file_name(tag: str, day: str) -> str | None:
    """<tag's second part>.<day>.log for btc.<name>[...] tags (fluent.conf's <match btc.**>)."""
    parts = tag.split(".")
    if len(parts) < 2 or parts[0] != "btc" or not _SAFE_NAME.fullmatch(parts[1]):
        return None
    return f"{parts[1]}.{day}.log"


class Standin:
    def __init__(self, log_dir: Path, out: Any = None) -> None:
        self.log_dir = log_dir
        self.out = out if out is not None else sys.stdout
        self._writers: set[asyncio.StreamWriter] = set()

    def write(self, tag: str, entries: list[tuple[Any, Any]]) -> None:
        rendered = [render(tag, time, record) for time, record in entries]  # all or none of a message
        by_file: dict[str, list[str]] = {}
        for line, day in rendered:
            name = file_name(tag, day)
            if name is not None:
                by_file.setdefault(name, []).append(line + "\n")
        for name, lines in by_file.items():  # the files first: a line on stdout means it is on disk
            with open(self.log_dir / name, "a", encoding="utf-8") as file:
                file.write("".join(lines))
        self.out.write("".join(line + "\n" for line, _ in rendered))
        self.out.flush()

    async def forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        stream = unpacker()
        try:
            while data := await reader.read(65536):
                stream.feed(data)
                for message in stream:
                    tag, entries, option = decode(message)
                    self.write(tag, entries)
                    if "chunk" in option:
                        writer.write(msgpack.packb({"ack": option["chunk"]}))
                        await writer.drain()
        except (ProtocolError, ValueError, msgpack.UnpackException) as error:
            print(f"fluentd-standin: dropped a connection sending a bad message: {error}", file=sys.stderr)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def monitor(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, path, *_ = [*request.split(b" ", 2), b"", b""]
            if method == b"GET" and path.split(b"?")[0] == b"/api/plugins.json":
                status, body = b"200 OK", json.dumps(PLUGINS).encode()
            else:
                status, body = b"404 Not Found", b'{"error":"not found"}'
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def close_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()


async def serve(args: argparse.Namespace) -> None:
    standin = Standin(Path(args.log_dir))
    forward = await asyncio.start_server(standin.forward, args.bind, args.port)
    monitor = await asyncio.start_server(standin.monitor, args.monitor_bind, args.monitor_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    port = forward.sockets[0].getsockname()[1]
    monitor_port = monitor.sockets[0].getsockname()[1]
    print(
        f"fluentd-standin: forward protocol on {args.bind}:{port}, monitor on {args.monitor_bind}:{monitor_port}, "
        f"files in {args.log_dir} (a stand-in for Fluentd: no fluent.conf is read)",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    for server in (forward, monitor):
        server.close()
    standin.close_connections()
    for server in (forward, monitor):
        await server.wait_closed()
    print("fluentd-standin: stopped", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A stand-in for Fluentd: forward protocol in, JSON lines out.")
    parser.add_argument("--bind", default="0.0.0.0")  # every interface: it serves the cluster's network
    parser.add_argument("--port", type=int, default=24224)
    parser.add_argument("--monitor-bind", default="127.0.0.1")
    parser.add_argument("--monitor-port", type=int, default=24220)
    parser.add_argument("--log-dir", default="/fluentd/log")
    args = parser.parse_args(argv)
    if not os.access(args.log_dir, os.W_OK):
        print(f"fluentd-standin: cannot write to {args.log_dir}", file=sys.stderr)
        return 1
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
