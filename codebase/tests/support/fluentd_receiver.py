"""A loopback receiver of Fluentd's forward protocol: msgpack `[tag, time, record]` entries."""

import socket
import threading
from typing import Any

import msgpack


class ForwardReceiver:
    def __init__(self) -> None:
        self.entries: list[tuple[str, Any, dict[str, Any]]] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(client,), daemon=True).start()

    def _read(self, client: socket.socket) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        with client:
            while data := client.recv(65536):
                unpacker.feed(data)
                for message in unpacker:
                    self._store(message)

    def _store(self, message: list[Any]) -> None:
        tag, second = message[0], message[1]
        with self._lock:
            if isinstance(second, list):  # forward mode: [tag, [[time, record], ...]]
                self.entries.extend((tag, time, record) for time, record in second)
            else:  # message mode: [tag, time, record]
                self.entries.append((tag, second, message[2]))

    def tags(self) -> list[str]:
        with self._lock:
            return [tag for tag, _, _ in self.entries]

    def close(self) -> None:
        self._server.close()
